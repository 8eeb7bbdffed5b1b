//! Test harness for convey's end-to-end tests: a real relay on 127.0.0.1:0, real client
//! transfers in-process, random files, and digests.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

pub mod hostile;
pub mod netns;

use convey::{Code, Event, EventSink, Payload, ReceiveOptions, RelayAddr, SendOptions};
use convey_relay::{Config, Server};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Log to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A relay listening on a free loopback port.
#[derive(Debug)]
pub struct TestRelay {
    pub server: Server,
    pub addr: RelayAddr,
}

impl TestRelay {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A relay with some settings changed from the defaults.
    pub async fn spawn_with(change: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::with_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        // STUN on, so WebRTC peers also gather server-reflexive candidates from it.
        config.stun_listen = convey_relay::config::StunListen(Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        change(&mut config);
        let server = Server::spawn(config).await.expect("relay binds");
        let addr = RelayAddr::from_socket(server.local_addr());
        Self { server, addr }
    }
}

/// A plain HTTP/1.0 GET (bounded): the status code and the body bytes.
pub async fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("reply within 5s")
        .expect("read");
    let split = memchr::memmem::find(&out, b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, out[split + 4..].to_vec())
}

/// A rendezvous WebSocket, past the relay's welcome.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open the rendezvous WebSocket the way a client does (optionally with a bearer token).
pub async fn rendezvous_ws(relay: SocketAddr, token: Option<&str>) -> Ws {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut req = format!("ws://{relay}/v1/rendezvous")
        .into_client_request()
        .expect("url");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("convey-v1"));
    if let Some(t) = token {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("token"),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    ws
}

/// The next JSON message from the relay (bounded wait).
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    use futures::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("relay answers")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("json");
        }
    }
}

pub async fn send_json(ws: &mut Ws, v: serde_json::Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .expect("send");
}

/// Write `size` pseudo-random bytes (seeded) to `path`, streaming; returns the SHA-256 hex.
pub fn random_file(path: &Path, size: u64, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = BufWriter::new(File::create(path).expect("create test file"));
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).expect("fits");
        rng.fill_bytes(&mut buf[..n]);
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).expect("write test file");
        left -= n as u64;
    }
    out.flush().expect("flush test file");
    hex::encode(hash.finalize())
}

/// Write `size` bytes of deterministic text that compresses the way build logs do (some 5
/// to 10 times; `seed` varies it) to `path`; returns the SHA-256 hex.
pub fn text_file(path: &Path, size: u64, seed: u64) -> String {
    let mut out = BufWriter::new(File::create(path).expect("create text file"));
    let mut hash = Sha256::new();
    let words = [
        "build",
        "step",
        "ok",
        "warning",
        "compiling",
        "crate",
        "test",
        "passed",
        "src/lib.rs",
        "target",
    ];
    let (mut written, mut i) = (0u64, seed);
    while written < size {
        let line = format!(
            "{i:08} [{}] {} {} {} in {}.{:03}s\n",
            ["INFO", "WARN", "DEBUG"][(i % 3) as usize],
            words[(i * 7 % 10) as usize],
            words[(i * 3 % 10) as usize],
            i.wrapping_mul(2_654_435_761) % 100_000,
            i % 60,
            i * 13 % 1000
        );
        let n = usize::try_from((line.len() as u64).min(size - written)).expect("fits");
        hash.update(&line.as_bytes()[..n]);
        out.write_all(&line.as_bytes()[..n]).expect("write text file");
        written += n as u64;
        i += 1;
    }
    out.flush().expect("flush text file");
    hex::encode(hash.finalize())
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).expect("open for hashing");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read for hashing");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Every entry in `dir` (names only), sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An event sink that records everything, plus a watch channel for the sender's code.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Event>>>,
    code_tx: Arc<tokio::sync::watch::Sender<Option<String>>>,
    pub code_rx: tokio::sync::watch::Receiver<Option<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(None);
        Self {
            events: Arc::default(),
            code_tx: Arc::new(tx),
            code_rx: rx,
        }
    }
}

impl Recorder {
    pub fn sink(&self) -> EventSink {
        let me = self.clone();
        Arc::new(move |ev| {
            if let Event::Code { code } = &ev {
                let _ = me.code_tx.send(Some(code.clone()));
            }
            me.events.lock().expect("recorder lock").push(ev);
        })
    }

    /// Wait (bounded) for the sender's code.
    pub async fn code(&self) -> Code {
        let mut rx = self.code_rx.clone();
        let code = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
            .await
            .expect("sender printed a code within 10s")
            .expect("sender alive")
            .clone()
            .expect("code is set");
        code.parse().expect("sender's code parses")
    }

    /// Wait (at most 30 s) until a progress event reports some bytes.
    pub async fn wait_for_bytes(&self) {
        self.wait_for_progress(1, Duration::from_secs(30)).await;
    }

    /// Wait (at most `within`) until a progress event reports at least `min` bytes.
    pub async fn wait_for_progress(&self, min: u64, within: Duration) {
        let began = std::time::Instant::now();
        while !self
            .events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, Event::Progress { bytes, .. } if *bytes >= min))
        {
            assert!(began.elapsed() < within, "the transfer reached {min} bytes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn send_options(relay: &TestRelay, path: PathBuf) -> SendOptions {
    SendOptions {
        relay: relay.addr.clone(),
        code: None,
        payload: Payload::Paths(vec![path]),
        upload_limit: None,
        transport: convey::Transport::Auto,
        wait: Some(Duration::from_secs(60)),
        receivers: convey::Receivers::ONE,
        compress: true,
    }
}

pub fn receive_options(relay: &TestRelay, code: Code, out_dir: PathBuf) -> ReceiveOptions {
    ReceiveOptions {
        relay: relay.addr.clone(),
        code,
        out_dir,
        overwrite: false,
        wait: Duration::from_secs(10),
        accept: Arc::new(|_| true),
        transport: convey::Transport::Auto,
        guard_terminal: false,
        silence: convey::PEER_SILENCE,
        seed_for: convey::SEED_FOR,
    }
}

/// A TCP forwarder in front of the relay that records every byte the relay sends to
/// clients, to check what the relay could see of a tunnelled transfer.
#[derive(Debug)]
pub struct TapProxy {
    pub addr: RelayAddr,
    pub from_relay: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TapProxy {
    pub async fn spawn(relay: &TestRelay) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tap");
        let addr = RelayAddr::from_socket(listener.local_addr().expect("tap addr"));
        let target = relay.server.local_addr();
        let from_relay: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = from_relay.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let sink = sink.clone();
                conns.spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async { tokio::io::copy(&mut cr, &mut sw).await.map(drop) };
                    let down = async {
                        let mut buf = vec![0u8; 1 << 16];
                        loop {
                            let n = sr.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            sink.lock().expect("tap lock").extend_from_slice(&buf[..n]);
                            cw.write_all(&buf[..n]).await?;
                        }
                    };
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Self {
            addr,
            from_relay,
            task,
        }
    }
}

impl Drop for TapProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One side of a test transfer: the relay address it uses and the paths it allows.
#[derive(Debug, Clone)]
pub struct Side {
    pub relay: RelayAddr,
    pub transport: convey::Transport,
}

impl Side {
    pub fn new(relay: &RelayAddr, transport: convey::Transport) -> Self {
        Self {
            relay: relay.clone(),
            transport,
        }
    }
}

/// Send `size` random bytes from `sender` to `receiver` (bounded by 120 s), assert they
/// arrive byte-identical, and return the receiver's path events and the plaintext sent.
pub async fn transfer(relay: &TestRelay, sender: Side, receiver: Side, size: u64) -> (Vec<String>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("payload.bin");
    let digest = random_file(&src, size, 9);
    let out = dir.path().join("out");
    let rec = Recorder::default();
    let mut send = send_options(relay, src.clone());
    send.relay = sender.relay;
    send.transport = sender.transport;
    let sending = tokio::spawn(convey::send(send, rec.sink()));
    let got = Recorder::default();
    let mut recv = receive_options(relay, rec.code().await, out.clone());
    recv.relay = receiver.relay;
    recv.transport = receiver.transport;
    tokio::time::timeout(Duration::from_secs(120), convey::receive(recv, got.sink()))
        .await
        .expect("receive in time")
        .expect("receive succeeded");
    sending.await.expect("sender task").expect("send succeeded");
    assert_eq!(sha256_file(&out.join("payload.bin")), digest, "byte-identical");
    let paths = got
        .events
        .lock()
        .expect("events")
        .iter()
        .filter_map(|e| match e {
            Event::Transport { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    (paths, std::fs::read(&src).expect("source"))
}

/// A TLS-terminating TCP proxy on 127.0.0.1 in front of `relay`, with a self-signed
/// certificate for `localhost`; returns its port, the CA file, and the accept task.
pub async fn tls_proxy(relay: &TestRelay, dir: &Path) -> (u16, PathBuf, tokio::task::JoinHandle<()>) {
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let ca = dir.join("relay-ca.pem");
    std::fs::write(&ca, signed.cert.pem()).expect("write CA");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signed.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(signed.cert.der().to_vec())], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let target = relay.server.local_addr();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (port, ca, task)
}
