//! Two sessions wired together in memory: the handshake's order and failures, the
//! conversation of each offer kind, and the messages each side refuses.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde_bytes::ByteBuf;

use super::*;
use crate::{
    Code,
    content::{CIPHER_CHUNK, ContentKey},
    crypto::Side,
    manifest::{FileEntry, Manifest},
    protocol::peer::{ABILITY_PUSH, ABILITY_SWARM, Offer, OfferBody, PeerMsg, Prepared},
    torrent::{Info, TORRENT_NAME},
};

fn code(s: &str) -> Code {
    s.parse().unwrap()
}

/// Run both handshakes to the end, as a relay would carry their bodies. Returns each side's
/// result and the bodies the sender sent after the SPAKE2 message.
fn handshake(
    sender_code: &str,
    receiver_code: &str,
) -> (
    Result<Established, HandshakeError>,
    Result<Established, HandshakeError>,
    usize,
) {
    let (mut s, s_msg) = Handshake::start(&code(sender_code), Side::Sender);
    let (mut r, r_msg) = Handshake::start(&code(receiver_code), Side::Receiver);
    let s_step = s.handle(&r_msg).unwrap();
    assert!(
        s_step.send.is_empty(),
        "the sender must not confirm before the receiver did"
    );
    let r_step = r.handle(&s_msg).unwrap();
    assert_eq!(r_step.send.len(), 1, "the receiver confirms first");
    let sender = s
        .handle(&r_step.send[0])
        .map(|step| (step.send, step.established));
    let (sender_sent, sender) = match sender {
        Ok((send, est)) => (send, Ok(*est.unwrap())),
        Err(e) => (Vec::new(), Err(e)),
    };
    let receiver = match sender_sent.first() {
        Some(confirm) => r.handle(confirm).map(|step| *step.established.unwrap()),
        None => Err(HandshakeError::WrongCode),
    };
    (sender, receiver, sender_sent.len())
}

#[test]
fn the_same_code_establishes_both_sides_and_the_channel_works_both_ways() {
    let (s, r, sent) = handshake("7-purple-otter", "7-purple-otter");
    let (mut s, mut r) = (s.unwrap(), r.unwrap());
    assert_eq!(sent, 1);
    assert_eq!(s.tunnel_token, r.tunnel_token);
    assert_eq!(s.push_hello, r.push_hello);
    assert_eq!(s.slot, r.slot);
    let sealed = s.seal(&PeerMsg::Preparing).unwrap();
    assert!(matches!(r.open(&sealed), Ok(PeerMsg::Preparing)));
    let sealed = r.seal(&PeerMsg::Fetch).unwrap();
    assert!(matches!(s.open(&sealed), Ok(PeerMsg::Fetch)));
    // A replay fails: the channel's nonces are counters.
    assert_eq!(s.open(&sealed).unwrap_err(), SealError::Forged);
}

#[test]
fn a_wrong_code_fails_on_the_sender_which_never_confirms_to_the_guesser() {
    let (s, r, sent) = handshake("7-purple-otter", "7-purple-ottoman");
    assert_eq!(s.unwrap_err(), HandshakeError::WrongCode);
    assert!(r.is_err());
    assert_eq!(sent, 0, "a guesser learns nothing from the sender");
}

#[test]
fn a_receiver_checks_the_senders_confirmation_too() {
    let c = code("7-purple-otter");
    let (_, s_msg) = Handshake::start(&c, Side::Sender);
    let (mut r, _) = Handshake::start(&c, Side::Receiver);
    r.handle(&s_msg).unwrap();
    assert_eq!(
        r.handle(b"not a confirmation").unwrap_err(),
        HandshakeError::WrongCode
    );
    assert!(r.is_over());
    assert_eq!(r.handle(b"more").unwrap_err(), HandshakeError::Over);
}

#[test]
fn a_malformed_key_exchange_message_ends_the_handshake() {
    let (mut s, _) = Handshake::start(&code("7-purple-otter"), Side::Sender);
    assert_eq!(s.handle(b"nope").unwrap_err(), HandshakeError::Malformed);
    assert!(s.is_over());
}

#[test]
fn a_message_too_big_for_the_relay_is_refused_before_sealing() {
    let (s, _, _) = handshake("7-purple-otter", "7-purple-otter");
    let mut s = s.unwrap();
    let huge = PeerMsg::Done {
        ok: false,
        message: Some("x".repeat(crate::protocol::MAX_MESSAGE_BYTES)),
    };
    assert!(matches!(
        s.seal(&huge),
        Err(SealError::TooBig { kind: "done", .. })
    ));
}

fn offer(body: OfferBody, abilities: &[&str]) -> Offer {
    Offer {
        abilities: abilities.iter().map(|a| (*a).to_owned()).collect(),
        body,
        rtc: None,
        start: None,
    }
}

fn files_body() -> OfferBody {
    OfferBody::Files {
        manifest: Manifest::default(),
        content_key: ContentKey::from_bytes([7; 32]),
        torrent: String::new(),
        direct_hints: Vec::new(),
        packing: None,
    }
}

/// Send `msg` from one side to the other through the sealed channel: the sending machine
/// notes it, the receiving machine checks it.
fn to_receiver(
    s: &mut (Established, SenderSession),
    r: &mut (Established, ReceiverSession),
    msg: &PeerMsg,
) -> Result<PeerMsg, Unexpected> {
    s.1.sent(msg);
    let m = r.0.open(&s.0.seal(msg).unwrap()).unwrap();
    r.1.handle(&m).map(|()| m)
}

fn to_sender(
    r: &mut (Established, ReceiverSession),
    s: &mut (Established, SenderSession),
    msg: &PeerMsg,
) -> Result<PeerMsg, Unexpected> {
    r.1.sent(msg);
    let m = s.0.open(&r.0.seal(msg).unwrap()).unwrap();
    s.1.handle(&m).map(|()| m)
}

fn pair() -> ((Established, SenderSession), (Established, ReceiverSession)) {
    let (s, r, _) = handshake("7-purple-otter-canyon", "7-purple-otter-canyon");
    (
        (s.unwrap(), SenderSession::new()),
        (r.unwrap(), ReceiverSession::new()),
    )
}

fn accept() -> PeerMsg {
    PeerMsg::Answer {
        accept: true,
        reason: None,
        rtc: None,
    }
}

fn done(ok: bool) -> PeerMsg {
    PeerMsg::Done { ok, message: None }
}

fn prepared() -> PeerMsg {
    PeerMsg::Prepared(Box::new(Prepared {
        sha256: Vec::new(),
        torrent: None,
        packing: None,
    }))
}

fn pushed_body() -> OfferBody {
    OfferBody::Pushed {
        manifest: Manifest::default(),
        content_key: ContentKey::from_bytes([7; 32]),
        direct_hints: Vec::new(),
    }
}

#[test]
fn a_swarm_conversation_runs_from_offer_to_swarm_done() {
    let (mut s, mut r) = pair();
    assert!(r.1.awaits_sender());
    to_receiver(&mut s, &mut r, &PeerMsg::Preparing).unwrap();
    let m = to_receiver(
        &mut s,
        &mut r,
        &PeerMsg::Offer(Box::new(offer(files_body(), &[ABILITY_SWARM]))),
    )
    .unwrap();
    assert!(matches!(m, PeerMsg::Offer(_)));
    assert!(r.1.swarm());
    assert!(!r.1.awaits_sender(), "the user decides; the sender owes nothing");
    to_sender(&mut r, &mut s, &accept()).unwrap();
    to_sender(
        &mut r,
        &mut s,
        &PeerMsg::Have {
            pieces: "gA==".into(),
        },
    )
    .unwrap();
    to_sender(&mut r, &mut s, &done(true)).unwrap();
    assert!(s.1.is_over());
    to_receiver(&mut s, &mut r, &PeerMsg::SwarmDone).unwrap();
}

#[test]
fn a_pushed_conversation_allows_the_digests_and_one_more_prepared_after_fetch() {
    let (mut s, mut r) = pair();
    to_receiver(
        &mut s,
        &mut r,
        &PeerMsg::Offer(Box::new(offer(pushed_body(), &[ABILITY_PUSH]))),
    )
    .unwrap();
    to_sender(&mut r, &mut s, &accept()).unwrap();
    assert!(r.1.awaits_sender(), "the digests are owed");
    to_receiver(&mut s, &mut r, &PeerMsg::Preparing).unwrap();
    to_receiver(&mut s, &mut r, &prepared()).unwrap();
    assert!(!r.1.awaits_sender());
    assert!(
        to_receiver(&mut s, &mut r, &prepared()).is_err(),
        "a second one was not asked for"
    );
}

#[test]
fn a_fetch_allows_one_more_prepared_and_only_one_fetch() {
    let (mut s, mut r) = pair();
    to_receiver(
        &mut s,
        &mut r,
        &PeerMsg::Offer(Box::new(offer(pushed_body(), &[ABILITY_PUSH]))),
    )
    .unwrap();
    to_sender(&mut r, &mut s, &accept()).unwrap();
    to_receiver(&mut s, &mut r, &prepared()).unwrap();
    to_sender(&mut r, &mut s, &PeerMsg::Fetch).unwrap();
    to_receiver(&mut s, &mut r, &prepared()).unwrap();
    assert!(
        to_sender(&mut r, &mut s, &PeerMsg::Fetch).is_err(),
        "one fetch per push"
    );
}

#[test]
fn a_fetch_before_the_digests_allows_both_prepared() {
    let (mut s, mut r) = pair();
    to_receiver(
        &mut s,
        &mut r,
        &PeerMsg::Offer(Box::new(offer(pushed_body(), &[ABILITY_PUSH]))),
    )
    .unwrap();
    to_sender(&mut r, &mut s, &accept()).unwrap();
    to_sender(&mut r, &mut s, &PeerMsg::Fetch).unwrap();
    to_receiver(&mut s, &mut r, &prepared()).unwrap();
    to_receiver(&mut s, &mut r, &prepared()).unwrap();
    to_sender(&mut r, &mut s, &done(false)).unwrap();
}

#[test]
fn the_receiver_refuses_what_a_sender_never_sends_now() {
    let (mut s, mut r) = pair();
    let e = to_receiver(&mut s, &mut r, &accept()).unwrap_err();
    assert_eq!((e.got, e.expected), ("answer", "an offer"));
    let mut r = ReceiverSession::new();
    assert!(r.handle(&PeerMsg::SwarmDone).is_err());
    assert!(
        r.handle(&PeerMsg::Unknown).is_ok(),
        "later versions' messages are skipped"
    );
    r.handle(&PeerMsg::Offer(Box::new(offer(files_body(), &[]))))
        .unwrap();
    assert!(!r.swarm());
    assert!(
        r.handle(&PeerMsg::Offer(Box::new(offer(files_body(), &[]))))
            .is_err(),
        "a second offer"
    );
    r.sent(&accept());
    assert!(
        r.handle(&PeerMsg::SwarmDone).is_err(),
        "swarm-done outside a swarm"
    );
    assert!(r.handle(&prepared()).is_err(), "digests for a torrent offer");
    r.sent(&done(true));
    assert!(r.handle(&PeerMsg::Preparing).is_err(), "after the end");

    let mut r = ReceiverSession::new();
    assert!(
        r.handle(&PeerMsg::Offer(Box::new(offer(pushed_body(), &[]))))
            .is_err(),
        "a push without the ability"
    );
}

#[test]
fn the_sender_refuses_what_a_receiver_never_sends_now() {
    let mut s = SenderSession::new();
    assert!(s.handle(&done(true)).is_err(), "done before any offer");
    let mut s = SenderSession::new();
    let give_up = PeerMsg::Answer {
        accept: false,
        reason: Some("timed out".into()),
        rtc: None,
    };
    assert!(
        s.handle(&give_up).is_ok(),
        "a receiver may give up before the offer"
    );
    assert!(s.is_over());
    let mut s = SenderSession::new();
    s.sent(&PeerMsg::Offer(Box::new(offer(files_body(), &[]))));
    assert!(
        s.handle(&PeerMsg::Have {
            pieces: String::new()
        })
        .is_err(),
        "have before the answer"
    );
    s.handle(&accept()).unwrap();
    assert!(
        s.handle(&PeerMsg::Have {
            pieces: String::new()
        })
        .is_err(),
        "have outside a swarm"
    );
    assert!(s.handle(&PeerMsg::Fetch).is_err(), "fetch outside a push");
    assert!(s.handle(&accept()).is_err(), "a second answer");
    s.handle(&done(true)).unwrap();
    assert!(s.handle(&done(true)).is_err(), "after the end");
}

fn one_file(size: u64) -> Manifest {
    Manifest {
        files: vec![FileEntry {
            path: "dir/a.bin".into(),
            size,
            sha256: "ab".repeat(32),
            mode: 0o644,
        }],
        dirs: Vec::new(),
    }
}

fn torrent_for(cipher_len: u64, piece_length: u64) -> String {
    let info = Info {
        length: cipher_len,
        name: TORRENT_NAME.into(),
        piece_length,
        pieces: ByteBuf::from(vec![0u8; (cipher_len.div_ceil(piece_length) * 20) as usize]),
        private: 1,
    };
    B64.encode(info.torrent_bytes(None))
}

#[test]
fn a_files_offer_is_checked_against_its_own_claims() {
    let key = ContentKey::from_bytes([9; 32]);
    let size = 3 * crate::content::PLAIN_CHUNK + 5;
    let cipher_len = 4 * CIPHER_CHUNK - (crate::content::PLAIN_CHUNK - 5);
    let good = torrent_for(cipher_len, 2 * CIPHER_CHUNK);
    let checked = check_files(one_file(size), &key, None, &good, None).unwrap();
    assert_eq!(checked.cipher.cipher_len(), cipher_len);
    assert_eq!(checked.piece_len, 2 * CIPHER_CHUNK);
    assert!(checked.repacks);
    assert_eq!(top_names(&checked.content, 5), (vec!["dir/".to_owned()], 0));

    // A torrent for other content, garbage, an unknown codec, an unsafe name.
    let other = torrent_for(cipher_len + CIPHER_CHUNK, 2 * CIPHER_CHUNK);
    assert!(matches!(
        check_files(one_file(size), &key, None, &other, None),
        Err(OfferError::Malformed(_))
    ));
    assert!(matches!(
        check_files(one_file(size), &key, None, "%%%", None),
        Err(OfferError::Malformed(_))
    ));
    let packing = crate::protocol::peer::Packing {
        codec: "lz4-1".into(),
        frames: String::new(),
    };
    assert!(matches!(
        check_files(one_file(size), &key, Some(&packing), &good, None),
        Err(OfferError::Malformed(_))
    ));
    let mut hostile = one_file(size);
    hostile.files[0].path = "../escape".into();
    assert!(matches!(
        check_files(hostile, &key, None, &good, None),
        Err(OfferError::Refused(_))
    ));
}

#[test]
fn names_shown_from_an_offer_are_escaped() {
    let mut m = one_file(1);
    // A bidi override passes the path check (it is a legal name) but is never shown raw.
    m.files[0].path = "evil\u{202e}txt.exe".into();
    let content = m.check().unwrap();
    let (names, more) = top_names(&content, 5);
    assert_eq!(more, 0);
    assert_eq!(names, vec!["evil\\u{202e}txt.exe".to_owned()]);
}
