//! The push's acknowledgement window, against the real push listener on loopback: a receiver
//! that acknowledges nothing gets [`WINDOW`] frames and then only keep-alives, and gets the
//! rest once it acknowledges; one that does not ask for the window gets everything.

use super::*;
use convey_shared::{
    layout::Layout,
    protocol::push::{ITEM_HEADER_LEN, ack, hello},
};
use std::io::Write;

const FRAMES: u64 = WINDOW + 8;

/// A push listener serving `FRAMES` frames of one file, its pass already over.
async fn server(file: &std::path::Path) -> (PushServer, [u8; HELLO_LEN]) {
    let size = FRAMES * FRAME_PLAIN;
    let mut f = std::fs::File::create(file).expect("create");
    let block: Vec<u8> = (0..FRAME_PLAIN).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..FRAMES {
        f.write_all(&block).expect("write");
    }
    let layout = Layout::new([size]).expect("layout");
    let tap = Arc::new(Tap::default());
    tap.close();
    let source = Arc::new(PushSource {
        files: Arc::new(FileSet::new(vec![file.to_owned()], layout, false)),
        key: ContentKey::from_bytes([3; 32]),
        tap,
        map: watch::channel(Some(Some(ChunkMap::identity(size)))).1,
        pushed: AtomicU64::new(0),
        upload_limit: None,
    });
    let session = convey_shared::crypto::SessionKey::from_slice(&[8; 32]).expect("a key");
    let push_hello = hello(&session);
    let route: RouteHandler = Arc::new(|_| {});
    let server = PushServer::bind(push_hello, ([0; HELLO_LEN], route), source)
        .await
        .expect("bind");
    (server, push_hello)
}

/// A push listener serving `file` and a connection to it that takes frames in order,
/// acknowledging if `acked`.
async fn pushing(file: &std::path::Path, acked: bool) -> (PushServer, TcpStream) {
    let (server, push_hello) = server(file).await;
    let conn = open(server.port(), &push_hello, acked).await;
    (server, conn)
}

/// Open a push connection that takes frames in order, acknowledging if `acked`.
async fn open(port: u16, push_hello: &[u8; HELLO_LEN], acked: bool) -> TcpStream {
    let mut conn = TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port))
        .await
        .expect("connect");
    let bits = have_len(FRAMES);
    let field = HaveField {
        len: u32::try_from(bits).expect("small"),
        in_order: true,
        acked,
    };
    let mut opening = push_hello.to_vec();
    opening.extend_from_slice(&field.to_le_bytes());
    opening.resize(opening.len() + bits, 0);
    conn.write_all(&opening).await.expect("opening");
    conn
}

/// Read items until `frames` frames have come, the end, or `quiet` without a frame; returns
/// the frames and whether the end came.
async fn frames_until(conn: &mut TcpStream, frames: u64, quiet: Duration) -> (u64, bool) {
    let (mut got, plain_len) = (0, FRAMES * FRAME_PLAIN);
    let mut last_frame = tokio::time::Instant::now();
    while got < frames {
        let mut head = [0u8; ITEM_HEADER_LEN];
        let left = quiet.saturating_sub(last_frame.elapsed());
        match tokio::time::timeout(left, conn.read_exact(&mut head)).await {
            Err(_) => break,
            Ok(r) => r.expect("read an item"),
        };
        match Item::parse(head, plain_len).expect("a valid item") {
            Item::Frame { sealed, .. } => {
                let mut body = vec![0u8; sealed];
                conn.read_exact(&mut body).await.expect("frame body");
                got += 1;
                last_frame = tokio::time::Instant::now();
            }
            Item::KeepAlive => {}
            Item::End => return (got, true),
        }
    }
    (got, false)
}

#[tokio::test]
async fn an_acknowledging_receiver_gets_a_window_of_frames_beyond_its_acknowledgements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut conn) = pushing(&dir.path().join("f"), true).await;
    let (first, ended) = frames_until(&mut conn, FRAMES, Duration::from_secs(3)).await;
    assert_eq!(
        (first, ended),
        (WINDOW, false),
        "without acknowledgements the sender stops at the window"
    );
    conn.write_all(&ack(5)).await.expect("ack");
    let (more, ended) = frames_until(&mut conn, FRAMES, Duration::from_secs(3)).await;
    assert_eq!((more, ended), (5, false), "five acknowledged, five more");
    conn.write_all(&ack(FRAMES)).await.expect("ack");
    let (rest, ended) = frames_until(&mut conn, FRAMES, Duration::from_secs(10)).await;
    assert_eq!(
        (first + more + rest, ended),
        (FRAMES, true),
        "the rest, then the end"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_does_not_acknowledge_gets_every_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut conn) = pushing(&dir.path().join("f"), false).await;
    let (got, _) = frames_until(&mut conn, FRAMES, Duration::from_secs(10)).await;
    assert_eq!(got, FRAMES);
    let (_, ended) = frames_until(&mut conn, 1, Duration::from_secs(10)).await;
    assert!(ended, "then the end");
    server.shutdown().await;
}
