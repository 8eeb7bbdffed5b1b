//! A test run inside a network namespace of its own (root needed): the outer test re-runs
//! one ignored inner test of the same binary there with `ip netns exec`, so whatever it does
//! to that namespace's network (addresses, firewall rules) touches nothing else.

/// Removes the test's network namespace however the test ends.
#[derive(Debug)]
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Run a command that must succeed: these tests need root (CI runs as root).
pub fn must(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run {program} ({e}): scripts/test installs it"));
    assert!(
        status.success(),
        "`{program} {}` failed: these tests need root (CI runs as root)",
        args.join(" ")
    );
}

/// Run the ignored inner test `name` of this binary inside a fresh namespace with `lo` up,
/// carrying `addr` too when given (`198.18.0.0/15` only). Fails with the inner test's log.
pub fn run_in_namespace(name: &str, addr: Option<&str>) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = Netns(format!("convey-test-{}-{n}", std::process::id()));
    must("ip", &["netns", "add", &ns.0]);
    must("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
    if let Some(addr) = addr {
        must("ip", &["-n", &ns.0, "addr", "add", addr, "dev", "lo"]);
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .expect("run the inner test");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test {name} failed:\n{log}");
    assert!(log.contains("1 passed"), "inner test {name} did not run:\n{log}");
}
