//! The relay's page in a real browser: Debian's chromium, driven by playwright-core
//! (`tests/browser/page.mjs`), opens the page the real relay serves and receives from the
//! real `convey send` (the library, in this process) on 127.0.0.1. `scripts/test` installs
//! chromium and playwright-core; without them these tests fail and say so.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use convey::{Error, SendReport};
use convey_tests::{Recorder, TestRelay, http_get, random_file, send_options, sha256_file};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);
/// Lets chromium's WebRTC reach a peer on loopback (the sender's candidates here).
const LOOPBACK_RTC: &str = "--allow-loopback-in-peer-connection";
/// Takes WebRTC away from the page (the driver removes `RTCPeerConnection`, as in a browser
/// without it). Chromium's `--force-webrtc-ip-handling-policy=disable_non_proxied_udp` did not
/// keep chromium 156 from connecting on loopback.
const NO_RTC: &str = "--no-webrtc";

fn driver() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need chromium and playwright-core: run scripts/test (it installs both)"
    );
    dir.join("page.mjs")
}

/// Run the page at `url` in chromium; `action` is `accept` or `look`. The page's report.
async fn run_page(url: &str, out: &Path, action: &str, flags: &[&str]) -> Value {
    let mut child = tokio::process::Command::new("node")
        .arg(driver())
        .args([url, &out.display().to_string(), action])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test installs it)");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut text = String::new();
    let read = tokio::time::timeout(BROWSER_TIMEOUT, stdout.read_to_string(&mut text)).await;
    if read.is_err() {
        let _ = child.kill().await;
        panic!("the browser driver did not finish within {BROWSER_TIMEOUT:?}");
    }
    let status = child.wait().await.expect("driver exit");
    assert!(status.success(), "the browser driver failed: {status}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("driver output {text:?}: {e}"))
}

fn page_url(relay: SocketAddr, code: &str) -> String {
    format!("http://{relay}/#{code}")
}

async fn sender_result(
    task: tokio::task::JoinHandle<Result<SendReport, Error>>,
) -> Result<SendReport, Error> {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the sender ends within a minute of the page")
        .expect("sender task")
}

/// `convey send` with `opts`, and a page at `url(code)` doing `action` with chromium's
/// `flags` (see [`run_page`]): the page's report and the sender's task.
async fn page_meets_sender(
    opts: convey::SendOptions,
    url: impl FnOnce(&convey::Code) -> String,
    (out, action, flags): (&Path, &str, &[&str]),
) -> (Value, tokio::task::JoinHandle<Result<SendReport, Error>>) {
    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    (run_page(&url(&code), out, action, flags).await, sender)
}

/// The page receives a 64 MiB random file as a download with chromium's `flags`, byte-identical;
/// the path it took.
async fn receive_64_mib(flags: &[&str]) -> Value {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.bin");
    let digest = random_file(&src, 64 << 20, 17);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let (report, sender) = page_meets_sender(
        send_options(&relay, src),
        |code| page_url(relay.server.local_addr(), &code.to_string()),
        (&out, "accept", flags),
    )
    .await;
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(report["failure"], Value::Null, "{report}");
    assert_eq!(report["download"], "big.bin", "{report}");
    assert_eq!(report["names"][0], "big.bin", "{report}");
    assert_eq!(sha256_file(&out.join("big.bin")), digest, "byte-identical");
    let sent = sender_result(sender).await.expect("the sender succeeds");
    assert_eq!(sent.bytes, 64 << 20);
    // A figure for the README (never asserted).
    eprintln!(
        "browser: 64 MiB over {} in {} s",
        report["path"], report["seconds"]
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_receives_a_64_mib_file_over_webrtc_as_a_download() {
    let report = receive_64_mib(&[LOOPBACK_RTC]).await;
    // webrtc-rs's SCTP has been seen to stop recovering from loss on a loaded loopback (about
    // one run in five of the browser tests): the page then finishes through the tunnel (see
    // the stall test below). WebRTC must still have carried the first megabytes.
    if report["fallback"] == Value::Null {
        assert_eq!(report["path"], "webrtc", "{report}");
    } else {
        assert_eq!(report["fallback"], "stalled", "{report}");
        assert_eq!(report["path"], "tunnel", "{report}");
        assert!(report["rtc_bytes"].as_u64().unwrap_or(0) >= 1 << 20, "{report}");
        eprintln!(
            "browser: WebRTC stalled after {} bytes; the rest came through the tunnel",
            report["rtc_bytes"]
        );
    }
}

/// On a private relay the sender needs the access token and the receiver does not (joining
/// a code a sender opened needs only the code): the page receives as on any relay, and a
/// page that comes first to a pre-agreed code is told the sender must start first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_receives_from_a_sender_on_a_private_relay() {
    const TOKEN: &str = "a-private-relay-token-0123";
    convey_tests::init_tracing();
    let relay = TestRelay::spawn_with(|c| c.access_token = Some(TOKEN.parse().expect("token"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let early = run_page(
        &page_url(relay.server.local_addr(), "7-pilot-planet"),
        &out,
        "accept",
        &[],
    )
    .await;
    assert_eq!(early["state"], "failed", "{early}");
    let error = early["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("private") && error.contains("start first"),
        "{early}"
    );

    let src = dir.path().join("private.bin");
    let digest = random_file(&src, (2 << 20) + 3, 37);
    let mut opts = send_options(&relay, src);
    opts.relay = relay.addr.clone().with_token(Some(TOKEN.into()));
    let (report, sender) = page_meets_sender(
        opts,
        |code| page_url(relay.server.local_addr(), &code.to_string()),
        (&out, "accept", &[LOOPBACK_RTC]),
    )
    .await;
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(sha256_file(&out.join("private.bin")), digest, "byte-identical");
    sender_result(sender).await.expect("the sender succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_webrtc_the_page_receives_through_the_relays_tunnel() {
    let report = receive_64_mib(&[NO_RTC]).await;
    assert_eq!(report["path"], "tunnel", "{report}");
}

/// WebRTC dies part way through a push (UDP is dropped in the test's own network namespace,
/// so the data channel goes silent without closing): the page notices the stall, takes the
/// relay's tunnel and finishes from the first frame it lacked, byte-identical.
#[test]
fn a_webrtc_push_that_stalls_part_way_goes_on_through_the_tunnel() {
    convey_tests::netns::run_in_namespace("browser::inner_webrtc_stall", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run inside its own network namespace by the test above"]
async fn inner_webrtc_stall() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("stalls.bin");
    let digest = random_file(&src, 24 << 20, 41);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let rec = Recorder::default();
    let mut opts = send_options(&relay, src);
    // Slow enough that the cut below comes part way through.
    opts.upload_limit = std::num::NonZeroU32::new(4 << 20);
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    let url = page_url(relay.server.local_addr(), &code.to_string());
    let page = run_page(&url, &out, "accept", &[LOOPBACK_RTC]);
    let cut = async {
        rec.wait_for_progress(2 << 20, Duration::from_secs(60)).await;
        let path = rec
            .events
            .lock()
            .expect("events")
            .iter()
            .rev()
            .find_map(|e| match e {
                convey::Event::Transport { path } => Some(path.clone()),
                _ => None,
            });
        assert_eq!(path.as_deref(), Some("webrtc"), "the push began over WebRTC");
        convey_tests::netns::must(
            "nft",
            &[
                "add table inet cut; add chain inet cut out { type filter hook output priority 0; }; \
               add rule inet cut out meta l4proto udp drop",
            ],
        );
    };
    let (report, ()) = tokio::join!(page, cut);
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(report["path"], "tunnel", "{report}");
    assert_eq!(report["fallback"], "stalled", "{report}");
    // The sender had put 2 MiB into the channel before the cut; how much of it the page had
    // taken by then depends on the load (CI once saw none of it arrive), so it is printed.
    eprintln!(
        "the page had {} bytes over WebRTC when it stalled",
        report["rtc_bytes"]
    );
    assert_eq!(sha256_file(&out.join("stalls.bin")), digest, "byte-identical");
    let sent = sender_result(sender).await.expect("the sender succeeds");
    assert_eq!(sent.bytes, 24 << 20);
}

/// One code for two receivers: the page and `convey receive`. The CLI receiver swarms over
/// BitTorrent; the page takes the same content as a push from the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_is_one_of_several_receivers_beside_the_convey_command() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("for two.bin");
    let digest = random_file(&src, (24 << 20) + 3, 31);
    let (page_out, cli_out) = (dir.path().join("page"), dir.path().join("cli"));
    std::fs::create_dir(&page_out).expect("mkdir");
    std::fs::create_dir(&cli_out).expect("mkdir");
    let rec = Recorder::default();
    let mut opts = send_options(&relay, src);
    opts.receivers = convey::Receivers::Count(std::num::NonZeroU32::new(2).expect("two"));
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    let cli_rec = Recorder::default();
    let cli = tokio::spawn(convey::receive(
        convey_tests::receive_options(&relay, code.clone(), cli_out.clone()),
        cli_rec.sink(),
    ));
    let report = run_page(
        &page_url(relay.server.local_addr(), &code.to_string()),
        &page_out,
        "accept",
        &[LOOPBACK_RTC],
    )
    .await;
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(report["names"][0], "for two.bin", "{report}");
    assert_eq!(report["path"], "webrtc", "{report}");
    assert_eq!(
        sha256_file(&page_out.join("for two.bin")),
        digest,
        "the page's copy"
    );
    tokio::time::timeout(Duration::from_secs(60), cli)
        .await
        .expect("the convey receiver ends within a minute")
        .expect("receiver task")
        .expect("the convey receiver succeeds");
    assert_eq!(
        sha256_file(&cli_out.join("for two.bin")),
        digest,
        "the command's copy"
    );
    let sent = sender_result(sender).await.expect("the sender succeeds");
    assert_eq!(sent.bytes, (24 << 20) + 3);
    let done: Vec<u32> = rec
        .events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            convey::Event::Receiver { state, done, .. } if state == "done" => Some(*done),
            _ => None,
        })
        .collect();
    assert_eq!(done, [1, 2], "both receivers counted as done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_folder_arrives_as_one_tar_archive_that_extracts_to_the_same_files() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("photos");
    let long = "n".repeat(150);
    std::fs::create_dir_all(src.join("trip/day 1")).expect("mkdir");
    std::fs::create_dir_all(src.join("empty")).expect("mkdir");
    let files = [
        ("trip/day 1/a.jpg", 3 << 20),
        ("trip/b.raw", 1_234_567),
        ("empty.txt", 0),
        (long.as_str(), 700),
    ];
    let digests: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, (name, size))| random_file(&src.join(name), *size, i as u64))
        .collect();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let (report, sender) = page_meets_sender(
        send_options(&relay, src),
        |code| page_url(relay.server.local_addr(), &code.to_string()),
        (&out, "accept", &[LOOPBACK_RTC]),
    )
    .await;
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(report["download"], "photos.tar", "{report}");
    assert_eq!(report["names"][0], "photos/", "{report}");
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).expect("mkdir");
    let tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(out.join("photos.tar"))
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar runs");
    assert!(tar.success(), "the archive extracts");
    for ((name, _), digest) in files.iter().zip(&digests) {
        assert_eq!(
            &sha256_file(&unpacked.join("photos").join(name)),
            digest,
            "{name}"
        );
    }
    assert!(unpacked.join("photos/empty").is_dir(), "empty folders arrive too");
    sender_result(sender).await.expect("the sender succeeds");
}

/// What [`tunnel_fault_proxy`] does to what the relay sends down a tunnel connection.
#[derive(Clone, Copy)]
enum TunnelFault {
    /// Flip one byte of it.
    Flip,
    /// Cut the first tunnel connection (both directions) there.
    Cut,
}

/// A forwarder in front of the relay that does `fault` to what the relay sends down a tunnel
/// connection, `at` bytes in; the flag says it happened.
async fn tunnel_fault_proxy(
    relay: SocketAddr,
    at: usize,
    fault: TunnelFault,
) -> (SocketAddr, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let flipped = Arc::new(AtomicBool::new(false));
    let done = flipped.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let done = done.clone();
            conns.spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(relay).await else {
                    return;
                };
                let mut first = [0u8; 16];
                let Ok(n) = client.peek(&mut first).await else {
                    return;
                };
                let tunnel = first[..n].starts_with(b"GET /v2/tunnel/");
                let (mut cr, mut sw) = (client, server);
                let (mut c_read, mut c_write) = cr.split();
                let (mut s_read, mut s_write) = sw.split();
                let up = tokio::io::copy(&mut c_read, &mut s_write);
                let down = async {
                    let mut buf = vec![0u8; 1 << 16];
                    let mut seen = 0usize;
                    loop {
                        let n = s_read.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        if tunnel && seen <= at && at < seen + n {
                            match fault {
                                TunnelFault::Flip => {
                                    buf[at - seen] ^= 0x5a;
                                    done.store(true, Ordering::SeqCst);
                                }
                                TunnelFault::Cut if !done.swap(true, Ordering::SeqCst) => return Ok(()),
                                TunnelFault::Cut => {}
                            }
                        }
                        seen += n;
                        c_write.write_all(&buf[..n]).await?;
                    }
                };
                match fault {
                    TunnelFault::Flip => drop(tokio::join!(up, down)),
                    // Dropping both halves closes the connection on both sides.
                    TunnelFault::Cut => tokio::select! {
                        _ = up => {},
                        _ = down => {},
                    },
                }
            });
        }
    });
    (addr, flipped, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_chunk_fails_the_download_visibly_and_nothing_looks_complete() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let (proxy, flipped, proxy_task) =
        tunnel_fault_proxy(relay.server.local_addr(), (2 << 20) + 4321, TunnelFault::Flip).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("data.bin");
    random_file(&src, 8 << 20, 5);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    // Through the tunnel, which passes the proxy (a data channel would not).
    let (report, sender) = page_meets_sender(
        send_options(&relay, src),
        |code| page_url(proxy, &code.to_string()),
        (&out, "accept", &[NO_RTC]),
    )
    .await;
    proxy_task.abort();
    assert!(flipped.load(Ordering::SeqCst), "the proxy corrupted the tunnel");
    assert_eq!(report["state"], "failed", "{report}");
    assert_ne!(
        report["failure"],
        Value::Null,
        "the browser marks the download failed: {report}"
    );
    assert_eq!(report["saved"], Value::Null, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("download was stopped"), "{report}");
    assert!(
        std::fs::read_dir(&out).expect("out").next().is_none(),
        "nothing saved"
    );
    let sent = sender_result(sender).await;
    assert!(sent.is_err(), "the sender is told the transfer failed: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_code_fails_cleanly_on_the_page_and_on_the_sender() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("secret.txt");
    random_file(&src, 10_000, 2);
    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(send_options(&relay, src), rec.sink()));
    let code = rec.code().await;
    let wrong = format!("{}-wrong-guess", code.nameplate());
    let report = run_page(
        &page_url(relay.server.local_addr(), &wrong),
        dir.path(),
        "look",
        &[],
    )
    .await;
    assert_eq!(report["state"], "failed", "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the code is wrong"),
        "{report}"
    );
    assert_eq!(
        report["names"],
        serde_json::json!([]),
        "no offer was shown: {report}"
    );
    let sent = sender_result(sender).await;
    assert!(matches!(sent, Err(Error::WrongCode)), "sender: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_name_is_shown_escaped_as_the_cli_shows_it() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Markup, a right-to-left override and a zero-width space (the sender refuses control
    // characters itself; a hostile sender is in client/tests/hostile.rs).
    let name = "<img src=x onerror=alert(1)>red\u{202e}txt\u{200b}.exe";
    let src = dir.path().join(name);
    random_file(&src, 1000, 3);
    let (report, sender) = page_meets_sender(
        send_options(&relay, src),
        |code| page_url(relay.server.local_addr(), &code.to_string()),
        (dir.path(), "look", &[]),
    )
    .await;
    assert_eq!(report["state"], "offer", "{report}");
    let shown = convey_shared::display::safe(name, false);
    assert_ne!(shown, name, "the name needs escaping");
    assert_eq!(report["names"][0], shown.as_str(), "{report}");
    assert_eq!(report["images"], 0, "the name is text, never markup: {report}");
    sender.abort();
}

#[tokio::test]
async fn the_page_comes_from_the_relay_with_a_policy_that_allows_only_its_origin() {
    let relay = TestRelay::spawn().await;
    let addr = relay.server.local_addr();
    for path in [
        "/",
        "/app.js",
        "/sw.js",
        "/style.css",
        "/pkg/convey_web.js",
        "/pkg/convey_web_bg.wasm",
    ] {
        let (status, body) = http_get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty(), "{path}");
    }
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("answer")
        .expect("read");
    let head = String::from_utf8_lossy(&raw).to_lowercase();
    let csp = head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a Content-Security-Policy header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains('*') && !csp.contains("http"),
        "{csp}"
    );
    // Nothing in the page refers to another site.
    let (_, html) = http_get(addr, "/").await;
    let html = String::from_utf8_lossy(&html);
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
        "{html}"
    );
}

/// A page (driven by node, with the driver's `flags`) that picks or drops the file at `src`
/// (`how` is `send` or `drop`) and shows a code: the sending page, and the driver's first
/// report (code, QR).
async fn page_showing_a_code(
    url: &str,
    dir: &Path,
    (how, flags): (&str, &[&str]),
    src: &Path,
) -> (SendingPage, Value) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("node")
        .arg(driver())
        .args([
            url,
            &dir.display().to_string(),
            &format!("{how}:{}", src.display()),
        ])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test installs it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(BROWSER_TIMEOUT, lines.next_line())
        .await
        .expect("the page shows a code")
        .expect("read")
        .expect("a line");
    let shown: Value = serde_json::from_str(&first).expect("json");
    (SendingPage { child, lines }, shown)
}

/// A page that sends, driven by the driver `child` whose report lines are `lines`.
struct SendingPage {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl SendingPage {
    /// The driver's last report, once the page is done; what went wrong if there is none.
    async fn try_report(mut self) -> Result<Value, String> {
        let last = tokio::time::timeout(BROWSER_TIMEOUT, self.lines.next_line()).await;
        let _ = self.child.wait().await;
        match last {
            Ok(Ok(Some(line))) => serde_json::from_str(&line).map_err(|e| format!("{line:?}: {e}")),
            other => Err(format!("the sending page's driver gave no report: {other:?}")),
        }
    }

    async fn report(self) -> Value {
        self.try_report().await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The page sends `size` random bytes named `name`, picked (`send`) or dropped (`drop`), and
/// `convey receive` gets them byte-identical; the QR code shown is the page's link with the
/// code. Returns the page's report (its `path` says which path the push took).
async fn the_page_sends(how: &str, name: &str, size: u64, flags: &[&str]) -> Value {
    the_page_sends_on(TestRelay::spawn().await, (how, name, size), flags).await
}

/// [`the_page_sends`] on `relay`.
async fn the_page_sends_on(relay: TestRelay, (how, name, size): (&str, &str, u64), flags: &[&str]) -> Value {
    convey_tests::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join(name);
    let digest = random_file(&src, size, 23);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let url = format!("http://{}/", relay.server.local_addr());
    let (page, shown) = page_showing_a_code(&url, dir.path(), (how, flags), &src).await;
    let code: convey::Code = shown["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {shown}"))
        .parse()
        .expect("the page's code parses");
    // The QR code is this page's link with the code (convey-web's unit tests decode it).
    let link = format!("{url}#{code}");
    assert_eq!(shown["qrShown"], true, "the QR image loaded: {shown}");
    assert_eq!(
        shown["qr"].as_str(),
        Some(convey_web::qr::svg(&link).expect("drawn").as_str()),
        "the QR code encodes {link}"
    );
    let started = std::time::Instant::now();
    let received = convey::receive(
        convey_tests::receive_options(&relay, code, out.clone()),
        convey::ignore_events(),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let received = match received {
        Ok(r) => r,
        Err(e) => panic!(
            "convey receive failed: {e}; the page: {:?}",
            page.try_report().await
        ),
    };
    assert_eq!(received.bytes, size);
    assert_eq!(sha256_file(&out.join(name)), digest, "byte-identical");
    let report = page.report().await;
    assert_eq!(report["state"], "sent", "{report}");
    eprintln!(
        "the page sent {:.1} MiB over {} in {seconds:.1} s (from the code to convey receive's end)",
        size as f64 / f64::from(1 << 20),
        report["path"]
    );
    report
}

/// The page offers WebRTC as a sender: `convey receive` answers, and the push goes over a
/// data channel straight from the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_sends_a_file_over_webrtc_that_convey_receive_gets_byte_identical() {
    let report = the_page_sends("send", "from the page.bin", (20 << 20) + 12_345, &[]).await;
    assert_eq!(report["path"], "webrtc", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_webrtc_the_page_sends_through_the_relays_tunnel() {
    let report = the_page_sends("send", "tunnelled.bin", (20 << 20) + 1, &["--no-webrtc"]).await;
    assert_eq!(report["path"], "tunnel", "{report}");
}

/// A proxy in front of the relay cuts `convey receive`'s tunnel connection 6 MiB into a
/// 24 MiB send from the page: the receiver opens the push again (a new tunnel connection),
/// the page keeps a listening end open for it and goes on from the frames the receiver
/// lacks, and the file arrives byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_from_the_page_goes_on_after_the_receivers_tunnel_is_cut() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let (proxy, cut, proxy_task) =
        tunnel_fault_proxy(relay.server.local_addr(), 6 << 20, TunnelFault::Cut).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("cut.bin");
    let size = (24 << 20) + 99;
    let digest = random_file(&src, size, 31);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let url = format!("http://{}/", relay.server.local_addr());
    let (page, shown) = page_showing_a_code(&url, dir.path(), ("send", &[NO_RTC]), &src).await;
    let code: convey::Code = shown["code"].as_str().expect("code").parse().expect("parses");
    let mut opts = convey_tests::receive_options(&relay, code, out.clone());
    opts.relay = convey::RelayAddr::from_socket(proxy);
    let received = convey::receive(opts, convey::ignore_events()).await;
    proxy_task.abort();
    let report = page.report().await;
    assert!(cut.load(Ordering::SeqCst), "the proxy cut the tunnel");
    let received = received.unwrap_or_else(|e| panic!("convey receive failed: {e}; the page: {report}"));
    assert_eq!(received.bytes, size);
    assert_eq!(sha256_file(&out.join("cut.bin")), digest, "byte-identical");
    assert_eq!(report["state"], "sent", "{report}");
    assert_eq!(report["path"], "tunnel", "{report}");
    assert!(
        report["pushes"].as_u64() >= Some(2),
        "the push was opened again: {report}"
    );
}

/// A private relay opens a code only with its access token: the page asks for it (a browser
/// cannot set `Authorization`, so the page presents it as a WebSocket sub-protocol), asks
/// again after a wrong one, and with the right one sends; the receiver needs only the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_private_relay_the_page_sends_with_the_access_token_it_is_given() {
    const TOKEN: &str = "the-relay-s-own-token-4567";
    let private = || TestRelay::spawn_with(|c| c.access_token = Some(TOKEN.parse().expect("token")));
    let relay = private().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("asked.bin");
    random_file(&src, 1000, 41);
    let url = format!("http://{}/", relay.server.local_addr());
    let wrong = ["--relay-token=not-the-relay-s-token"];
    let (page, shown) = page_showing_a_code(&url, dir.path(), ("send", &wrong), &src).await;
    assert_eq!(shown["token"], true, "a wrong token is asked for again: {shown}");
    let report = page.report().await;
    assert_eq!(report["state"], "token", "{report}");

    // Through the tunnel, whose listening end needs the token too.
    let right = format!("--relay-token={TOKEN}");
    let report = the_page_sends_on(
        private().await,
        ("send", "private send.bin", (3 << 20) + 9),
        &[&right, NO_RTC],
    )
    .await;
    assert_eq!(report["state"], "sent", "{report}");
    assert_eq!(report["path"], "tunnel", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_dropped_on_the_page_is_sent_as_if_picked() {
    the_page_sends("drop", "dropped.bin", (1 << 20) + 77, &[]).await;
}

/// A folder dragged onto the page (chromium's own drag, not a scripted event) is refused
/// with a message that says what to do, and no code is handed out for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_folder_dropped_on_the_page_is_refused_with_a_message() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("a folder");
    std::fs::create_dir(&folder).expect("mkdir");
    random_file(&folder.join("inside.bin"), 1000, 6);
    let port = relay.server.local_addr().port();
    let action = format!("dropdir:{}", folder.display());
    let report = run_page(&format!("http://127.0.0.1:{port}/"), dir.path(), &action, &[]).await;
    assert_eq!(report["state"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not folders") && error.contains("convey send"),
        "{report}"
    );
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_an_https_relay_the_page_receives_over_wss() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, ca, proxy) = convey_tests::tls_proxy(&relay, dir.path()).await;
    let https: convey::RelayAddr = format!("https://localhost:{port}").parse().expect("address");
    let src = dir.path().join("over tls.bin");
    let digest = random_file(&src, 8 << 20, 41);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let mut opts = send_options(&relay, src);
    opts.relay = https.with_ca(Some(ca.clone()));
    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    // Through the tunnel, so every byte crosses TLS (wss://).
    let trust = format!("--trust-cert={}", ca.display());
    let report = run_page(
        &format!("https://localhost:{port}/#{code}"),
        &out,
        "accept",
        &[NO_RTC, &trust],
    )
    .await;
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(report["path"], "tunnel", "{report}");
    assert_eq!(sha256_file(&out.join("over tls.bin")), digest, "byte-identical");
    sender_result(sender).await.expect("the sender succeeds");
    proxy.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_plain_http_lan_address_the_page_says_to_use_the_command_line() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("a.txt");
    random_file(&src, 1000, 4);
    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(send_options(&relay, src), rec.sink()));
    let code = rec.code().await;
    // A name that is not localhost: http:// there is no secure context, so no Service Worker.
    let port = relay.server.local_addr().port();
    let report = run_page(
        &format!("http://relay.lan:{port}/#{code}"),
        dir.path(),
        "look",
        &["--host-resolver-rules=MAP relay.lan 127.0.0.1"],
    )
    .await;
    assert_eq!(report["state"], "unsupported", "{report}");
    let note = report["note"].as_str().unwrap_or_default();
    assert!(note.contains("secure origin"), "{report}");
    assert!(
        note.contains(&format!("convey receive --relay relay.lan:{port} {code}")),
        "{report}"
    );
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_opening_the_link_another_page_shows_receives_its_file() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("page to page.bin");
    let digest = random_file(&src, (3 << 20) + 5, 29);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let url = format!("http://{}/", relay.server.local_addr());
    let (sending, shown) = page_showing_a_code(&url, dir.path(), ("send", &[]), &src).await;
    let code = shown["code"].as_str().expect("code");
    // What a phone scanning the QR code opens.
    let report = run_page(&format!("{url}#{code}"), &out, "accept", &[]).await;
    assert_eq!(report["state"], "verified", "{report}");
    assert_eq!(
        sha256_file(&out.join("page to page.bin")),
        digest,
        "byte-identical"
    );
    let sent = sending.report().await;
    assert_eq!(sent["state"], "sent", "{sent}");
    assert_eq!(sent["path"], report["path"], "both pages name the same path");
    eprintln!("page to page over {}", report["path"]);
}
