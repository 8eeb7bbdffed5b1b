//! convey in a browser: the relay's page loads this module (WebAssembly, built by
//! `scripts/build-web`) and drives the same session machines, offer checks and content
//! cipher as the CLI, from `convey-shared`. The page does the I/O (WebSockets, the
//! download); everything that decides or decrypts is here.

mod archive;
pub mod push;
pub mod qr;
pub mod receiver;
pub mod sender;

use wasm_bindgen::prelude::*;

/// The page's handle on one receive (see [`receiver::PageReceiver`]). Methods that answer
/// with actions return them as JSON: `{"relay": [texts to send], "event": {...} | null}`.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Receiver(receiver::PageReceiver);

fn json(actions: &receiver::Actions) -> String {
    serde_json::to_string(actions).unwrap_or_else(|_| r#"{"relay":[],"event":null}"#.into())
}

#[wasm_bindgen]
impl Receiver {
    /// Start a receive on `code`; archives are stamped with `now` (seconds since 1970).
    #[wasm_bindgen(constructor)]
    pub fn new(code: &str, now: f64) -> Result<Receiver, JsError> {
        let mtime = if now.is_finite() && now > 0.0 {
            now as u64
        } else {
            0
        };
        receiver::PageReceiver::new(code, mtime)
            .map(Self)
            .map_err(|e| JsError::new(&e))
    }

    /// A text from the rendezvous WebSocket.
    pub fn relay_text(&mut self, text: &str) -> String {
        json(&self.0.relay_text(text))
    }

    /// Accept the offer, with the page's WebRTC answer (SDP) if it made one.
    pub fn accept(&mut self, rtc: Option<String>) -> String {
        json(&self.0.accept(rtc))
    }

    pub fn refuse(&mut self) -> String {
        json(&self.0.refuse())
    }

    /// The first message to write on a push path (WebRTC or the tunnel, and again on the
    /// tunnel when WebRTC failed part way).
    pub fn push_opening(&mut self) -> Vec<u8> {
        self.0.push_opening()
    }

    /// A binary message from the tunnel: the download's next bytes. On failure the error is
    /// the actions JSON (a failed event, texts to send).
    pub fn tunnel_message(&mut self, mut msg: Vec<u8>) -> Result<Vec<u8>, JsValue> {
        self.0
            .tunnel_message(&mut msg)
            .map_err(|a| JsValue::from_str(&json(&a)))
    }

    /// A message from the WebRTC data channel: as [`Self::tunnel_message`], unmasked.
    pub fn channel_message(&mut self, msg: Vec<u8>) -> Result<Vec<u8>, JsValue> {
        self.0.push_bytes(&msg).map_err(|a| JsValue::from_str(&json(&a)))
    }

    pub fn received(&self) -> f64 {
        self.0.received() as f64
    }

    /// Frames the push has handed on to the download so far.
    pub fn frames_done(&self) -> f64 {
        self.0.frames_done() as f64
    }

    /// Does the sender take acknowledgements of the frames the download used?
    pub fn acks(&self) -> bool {
        self.0.acks()
    }

    /// The acknowledgement that the download used `frames` frames (written on the push's
    /// path); frame counts are integers far below 2^53.
    pub fn ack(frames: f64) -> Vec<u8> {
        receiver::PageReceiver::ack(frames as u64)
    }

    pub fn push_ended(&self) -> bool {
        self.0.push_ended()
    }

    /// After the push ended: compare the digests (when the sender's are in).
    pub fn check(&mut self) -> String {
        json(&self.0.check())
    }
}

/// The page's handle on one send (see [`sender::PageSender`]); actions as for [`Receiver`].
#[wasm_bindgen]
#[derive(Debug)]
pub struct Sender(sender::PageSender);

fn sent_json(actions: &sender::Actions) -> String {
    serde_json::to_string(actions).unwrap_or_else(|_| r#"{"relay":[],"event":null}"#.into())
}

#[wasm_bindgen]
impl Sender {
    /// Send files of these base names and sizes (JSON arrays).
    #[wasm_bindgen(constructor)]
    pub fn new(names: &str, sizes: &str) -> Result<Sender, JsError> {
        let names: Vec<String> = serde_json::from_str(names).map_err(|e| JsError::new(&e.to_string()))?;
        let sizes: Vec<u64> = serde_json::from_str(sizes).map_err(|e| JsError::new(&e.to_string()))?;
        sender::PageSender::new(&names, &sizes)
            .map(Self)
            .map_err(|e| JsError::new(&e))
    }

    pub fn relay_text(&mut self, text: &str) -> String {
        sent_json(&self.0.relay_text(text))
    }

    /// A binary message from the tunnel (the receiver's opening).
    pub fn tunnel_message(&mut self, mut msg: Vec<u8>) -> String {
        sent_json(&self.0.tunnel_message(&mut msg))
    }

    /// A binary message from one of the page's WebRTC data channels (the receiver's opening).
    pub fn channel_message(&mut self, msg: Vec<u8>) -> String {
        sent_json(&self.0.channel_message(&msg))
    }

    /// The receiver's next bytes come on a new connection (it opened the push again).
    pub fn new_connection(&mut self) {
        self.0.new_connection();
    }

    /// Can frame `k` be left out of this push (read before, and the receiver holds it)?
    pub fn skip(&self, k: f64) -> bool {
        self.0.skip(k as u64)
    }

    /// The page is making a WebRTC offer (call it on the `code` event, before the receiver
    /// can arrive): the offer to the receiver waits for [`Sender::rtc_offer`].
    pub fn rtc_coming(&mut self) {
        self.0.rtc_coming();
    }

    /// The page's WebRTC offer (JSON of a session description), or `undefined` if it failed.
    pub fn rtc_offer(&mut self, sdp: Option<String>) -> String {
        sent_json(&self.0.rtc_offer(sdp))
    }

    pub fn frame_plain() -> f64 {
        sender::PageSender::frame_plain() as f64
    }

    pub fn frame_len(&self, k: f64) -> f64 {
        self.0.frame_len(k as u64) as f64
    }

    /// Frame `k`'s plaintext in, what to write on the tunnel out (empty if the receiver has it).
    pub fn frame(&mut self, k: f64, plain: Vec<u8>) -> Result<Vec<u8>, JsError> {
        self.0.frame(k as u64, &plain).map_err(|e| JsError::new(&e))
    }

    pub fn end_item(&self) -> Vec<u8> {
        self.0.end_item()
    }

    pub fn prepared(&mut self) -> String {
        sent_json(&self.0.prepared())
    }
}

/// The QR code of `text` (the page's link with a code) as an SVG document.
#[wasm_bindgen]
pub fn qr_svg(text: &str) -> Result<String, JsError> {
    qr::svg(text).map_err(|e| JsError::new(&e))
}
