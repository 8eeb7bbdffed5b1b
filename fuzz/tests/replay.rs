//! Runs every committed corpus file through its fuzz target's body on the stable
//! toolchain, so `cargo test` checks the corpora (and every crash turned regression) without
//! nightly or libFuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    // The package folder as cargo gives it when it runs the test, not as it was when the
    // binary was built: cargo reuses test binaries across checkouts at other paths.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let dir = Path::new(&root).join("corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        run(&data);
        count += 1;
    }
    assert!(count > 0, "the {target} corpus is empty");
}

macro_rules! replays {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), convey_fuzz::$name);
            }
        )*
    };
}

replays!(
    code,
    rendezvous,
    peer_msg,
    manifest,
    torrent,
    stream_frames,
    push_items,
    tunnel_header,
    tracker_query,
    tracker_fast_path,
);
