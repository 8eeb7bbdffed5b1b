//! The WebRTC path: one peer connection per transfer, one data channel per BitTorrent (or
//! stream) connection. The sender creates a small pool of channels before its offer, so they
//! open with the connection; the receiver takes one per connection it needs, and the sender
//! connects a channel to its local listener when the first bytes arrive on it. Signalling is
//! not trickled: each side gathers its candidates (host
//! addresses, plus the relay's STUN answer) and sends one SDP inside the PAKE-sealed offer or
//! answer, so the relay can neither read candidates nor swap DTLS fingerprints. Sends block
//! while a channel has more than [`SEND_BUFFER`] bytes unacknowledged (the data channel's
//! buffered-amount back-pressure), so nothing is ever buffered beyond that.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent},
    peer_connection::{
        PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
        RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
        RTCSessionDescription, SettingEngineBuilder,
    },
};

use super::task::OwnedTask;
use crate::{Error, error::Result};

/// Unacknowledged bytes a data channel may hold before a send waits.
const SEND_BUFFER: usize = 1 << 20;
/// Largest message we send: the SDP default `max-message-size` (RFC 8841), which every peer
/// accepts. Per-message costs weigh heavily in webrtc-rs's data channel: on loopback 16 KiB
/// messages moved 256 MiB at 38–42 MB/s and 64 KiB ones at 56–60 MB/s; 128 and 256 KiB (with a
/// larger `max-message-size`) gained nothing more.
const MESSAGE: usize = 64 * 1024;
/// Data channels the sender prepares: at most this many connections over WebRTC per transfer.
const CHANNELS: usize = 8;
/// How long a closing channel may take to deliver what is queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a splice logs its progress (at debug level).
const PROGRESS_LOG: Duration = Duration::from_secs(5);
/// How long gathering candidates may take before the SDP goes out with what it has.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    /// Set once ICE found a working pair of addresses (so a later failure is DTLS's).
    ice_up: Arc<AtomicBool>,
    incoming: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        ) {
            self.ice_up.store(true, Ordering::Relaxed);
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.incoming.send(channel);
    }
}

/// One side of the transfer's WebRTC connection.
pub struct RtcPeer {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    ice_up: Arc<AtomicBool>,
    incoming: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Arc<dyn DataChannel>>>>,
    cancel: CancellationToken,
    serving: tokio::sync::Mutex<Option<OwnedTask>>,
    /// Data channels the receiver started using so far (sender side).
    channels: Arc<AtomicU64>,
    /// The sender's pre-created channels, until [`RtcPeer::serve`] takes them.
    pool: tokio::sync::Mutex<Vec<Arc<dyn DataChannel>>>,
}

impl std::fmt::Debug for RtcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcPeer").finish_non_exhaustive()
    }
}

fn rtc_error(what: &str) -> impl FnOnce(webrtc::error::Error) -> Error + '_ {
    move |e| Error::Transfer(format!("WebRTC: {what}: {e}"))
}

impl RtcPeer {
    async fn build(stun: Option<String>) -> Result<Self> {
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let ice_up = Arc::new(AtomicBool::new(false));
        let ice_servers = stun
            .into_iter()
            .map(|url| RTCIceServer {
                urls: vec![url],
                ..Default::default()
            })
            .collect();
        // No multicast DNS: candidates are plain addresses, and nothing is sent to the LAN.
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc_mdns_disabled())
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .build(),
            )
            .with_setting_engine(settings)
            .with_runtime(super::rtc_runtime::runtime())
            .with_handler(Arc::new(Handler {
                gathered: gathered_tx,
                state: state_tx,
                ice_up: ice_up.clone(),
                incoming: incoming_tx,
            }))
            // Every interface, and loopback for two peers on one machine, on each IP
            // version this host has.
            .with_udp_addrs(udp_addrs())
            .with_data_channel_send_buffer_limit(SEND_BUFFER)
            .build()
            .await
            .map_err(rtc_error("cannot create a peer connection"))?;
        Ok(Self {
            pc: Arc::new(pc),
            gathered,
            state,
            ice_up,
            incoming: tokio::sync::Mutex::new(Some(incoming)),
            cancel: CancellationToken::new(),
            serving: tokio::sync::Mutex::default(),
            channels: Arc::default(),
            pool: tokio::sync::Mutex::default(),
        })
    }

    /// Set `desc` as local description and return it (JSON) once candidates are gathered.
    async fn local_sdp(&self, desc: RTCSessionDescription) -> Result<String> {
        self.pc
            .set_local_description(desc)
            .await
            .map_err(rtc_error("local description"))?;
        let mut gathered = self.gathered.clone();
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|g| *g)).await;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| Error::Transfer("WebRTC: no local description".into()))?;
        serde_json::to_string(&local).map_err(|e| Error::Transfer(format!("WebRTC: {e}")))
    }

    /// The sender: create the connection and its offer (SDP as JSON).
    pub async fn offer(stun: Option<String>) -> Result<(Self, String)> {
        let peer = Self::build(stun).await?;
        let mut pool = Vec::with_capacity(CHANNELS);
        for i in 0..CHANNELS {
            let dc = peer
                .pc
                .create_data_channel(&format!("convey-{i}"), None)
                .await
                .map_err(rtc_error("data channel"))?;
            pool.push(dc);
        }
        *peer.pool.lock().await = pool;
        let offer = peer.pc.create_offer(None).await.map_err(rtc_error("offer"))?;
        let sdp = peer.local_sdp(offer).await?;
        Ok((peer, sdp))
    }

    /// The receiver: answer the sender's offer.
    pub async fn answer(stun: Option<String>, offer: &str) -> Result<(Self, String)> {
        let offer: RTCSessionDescription =
            serde_json::from_str(offer).map_err(|e| Error::Protocol(format!("bad WebRTC offer: {e}")))?;
        let peer = Self::build(stun).await?;
        peer.pc
            .set_remote_description(offer)
            .await
            .map_err(rtc_error("remote description"))?;
        let answer = peer.pc.create_answer(None).await.map_err(rtc_error("answer"))?;
        let sdp = peer.local_sdp(answer).await?;
        Ok((peer, sdp))
    }

    /// The sender: take the receiver's answer; ICE and DTLS then run in the background.
    pub async fn accept(&self, answer: &str) -> Result<()> {
        let answer: RTCSessionDescription =
            serde_json::from_str(answer).map_err(|e| Error::Protocol(format!("bad WebRTC answer: {e}")))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(rtc_error("remote description"))
    }

    /// Wait until the connection is up (or failed, or `within` passed). Never after
    /// [`RtcPeer::close`].
    async fn connected(&self, within: Duration) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        let mut state = self.state.clone();
        let up = tokio::time::timeout(
            within,
            state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
        matches!(up, Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected)
    }

    /// The receiver: the next unused data channel, once the peers are connected; else
    /// which step of WebRTC failed.
    pub async fn open(&self, within: Duration) -> std::result::Result<Arc<dyn DataChannel>, &'static str> {
        if !self.connected(within).await {
            return Err(if self.cancel.is_cancelled() {
                "closed, since another path works"
            } else if self.ice_up.load(Ordering::Relaxed) {
                "DTLS did not complete over the connected ICE pair"
            } else {
                "ICE found no working pair of addresses (is UDP between the two machines blocked?)"
            });
        }
        let mut incoming = self.incoming.lock().await;
        let incoming = incoming.as_mut().ok_or("no data channel")?;
        tokio::time::timeout(within, incoming.recv())
            .await
            .ok()
            .flatten()
            .ok_or("the sender opened no data channel (all in use?)")
    }

    /// The sender: connect each channel to `target` when the receiver starts using it.
    pub async fn serve(&self, target: std::net::SocketAddr) {
        let pool = std::mem::take(&mut *self.pool.lock().await);
        let cancel = self.cancel.clone();
        let channels = self.channels.clone();
        let task = OwnedTask::spawn(move |stop| async move {
            let mut splices = JoinSet::new();
            for dc in pool {
                let channels = channels.clone();
                splices.spawn(async move {
                    // Wait for the receiver's first bytes: only then is this channel in use.
                    let first = loop {
                        match dc.poll().await {
                            Some(DataChannelEvent::OnMessage(msg)) => break msg.data,
                            Some(DataChannelEvent::OnClose | DataChannelEvent::OnError) | None => return,
                            Some(_) => {}
                        }
                    };
                    channels.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut local) = TcpStream::connect(target).await
                        && local.write_all(&first).await.is_ok()
                    {
                        splice(dc, local).await;
                    }
                });
            }
            tokio::select! {
                () = async { while splices.join_next().await.is_some() {} } => {},
                () = cancel.cancelled() => {},
                () = stop.cancelled() => {},
            }
            splices.shutdown().await;
        });
        *self.serving.lock().await = Some(task);
    }

    /// Has the receiver opened a data channel yet?
    pub fn in_use(&self) -> bool {
        self.channels.load(Ordering::Relaxed) > 0
    }

    /// Close the connection and stop every task.
    pub async fn close(&self) {
        self.cancel.cancel();
        if let Some(task) = self.serving.lock().await.take() {
            task.shutdown().await;
        }
        let _ = self.pc.close().await;
    }
}

fn rtc_mdns_disabled() -> rtc::ice::mdns::MulticastDnsMode {
    rtc::ice::mdns::MulticastDnsMode::Disabled
}

/// Copy bytes both ways between a data channel and a TCP socket until either ends.
pub async fn splice(dc: Arc<dyn DataChannel>, mut tcp: TcpStream) {
    let (mut rd, mut wr) = tcp.split();
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let to_dc = async {
        let mut buf = vec![0u8; MESSAGE];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // Blocks while the channel holds SEND_BUFFER unacknowledged bytes.
                Ok(n) => {
                    if dc.send(BytesMut::from(&buf[..n])).await.is_err() {
                        break;
                    }
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    };
    let from_dc = async {
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnMessage(msg) => {
                    if wr.write_all(&msg.data).await.is_err() {
                        break;
                    }
                    received.fetch_add(msg.data.len() as u64, Ordering::Relaxed);
                }
                DataChannelEvent::OnClose | DataChannelEvent::OnError => break,
                _ => {}
            }
        }
    };
    // What a stalled channel looks like, for `RUST_LOG=convey::transport::rtc=debug`.
    let progress = async {
        let mut every = tokio::time::interval(PROGRESS_LOG);
        every.tick().await;
        loop {
            every.tick().await;
            let outstanding = dc.outstanding_bytes().await.unwrap_or(0);
            tracing::debug!(
                sent = sent.load(Ordering::Relaxed),
                received = received.load(Ordering::Relaxed),
                outstanding,
                "data channel splice"
            );
        }
    };
    tokio::select! {
        () = to_dc => {
            // The local side is done: let what is queued reach the peer before closing.
            let drained = async {
                while dc.outstanding_bytes().await.unwrap_or(0) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
        },
        () = from_dc => {},
        () = progress => {},
    }
    tracing::debug!(
        sent = sent.load(Ordering::Relaxed),
        received = received.load(Ordering::Relaxed),
        "data channel splice ended"
    );
    let _ = dc.close().await;
}

/// The UDP addresses the peer connection listens on: every interface and loopback, for
/// IPv4 and IPv6 alike, keeping only those this host can bind (an IPv6-only host has no
/// 127.0.0.1; a host without IPv6 has no ::1).
fn udp_addrs() -> Vec<&'static str> {
    let all = ["0.0.0.0:0", "127.0.0.1:0", "[::]:0", "[::1]:0"];
    let usable: Vec<_> = all
        .into_iter()
        .filter(|a| std::net::UdpSocket::bind(a).is_ok())
        .collect();
    if usable.is_empty() {
        all[..2].to_vec()
    } else {
        usable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_data_channel_carries_a_tcp_stream_between_two_peers() {
        // The "sender" side: a local TCP echo-less sink that records what arrives.
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let (sender, offer) = RtcPeer::offer(None).await.unwrap();
        let (receiver, answer) = RtcPeer::answer(None, &offer).await.unwrap();
        sender.accept(&answer).await.unwrap();
        sender.serve(target_addr).await;
        let dc = receiver
            .open(Duration::from_secs(10))
            .await
            .expect("channel opens");
        // Bridge a local socket pair through the channel.
        let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local_addr = local.local_addr().unwrap();
        let mut client = TcpStream::connect(local_addr).await.unwrap();
        let (accepted, _) = local.accept().await.unwrap();
        let bridge = tokio::spawn(splice(dc, accepted));
        let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        let started = std::time::Instant::now();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client
            })
        };
        // The sender connects to its target when the first bytes arrive.
        let (mut far, _) = target.accept().await.unwrap();
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(60), far.read_exact(&mut got))
            .await
            .expect("arrives in time")
            .unwrap();
        eprintln!("8 MB through the channel in {:?}", started.elapsed());
        assert_eq!(got, data);
        drop(writer.await.unwrap());
        drop(far);
        let _ = tokio::time::timeout(Duration::from_secs(5), bridge).await;
        sender.close().await;
        receiver.close().await;
    }
}
