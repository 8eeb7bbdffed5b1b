//! The fuzz targets' bodies, one function per parser that sees network bytes. The libFuzzer
//! binaries in `fuzz_targets/` call them (nightly, `fuzz/run.sh`), and `tests/replay.rs`
//! runs every committed corpus through them on stable, so CI checks the corpora without
//! nightly. A function panics only where an invariant of the parser is broken.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::str::FromStr;

use convey_shared::{
    Code,
    chunk_map::{ChunkMap, Place},
    content::{CIPHER_CHUNK, ContentCipher, ContentKey, StreamCipher},
    crypto::{Channel, SessionKey, Side},
    manifest::{MAX_ENTRIES, Manifest},
    protocol::{
        peer::{OfferBody, PeerMsg, dialable_hints},
        push::{ITEM_HEADER_LEN, Item, MAX_FRAME_SEALED, frame_sealed_len},
        rendezvous::{ClientMsg, ServerMsg},
        stream::{HEADER_LEN, MAX_RECORD, MAX_STORED, RECORD_HEADER_LEN, Record, parse_header},
    },
    torrent,
};

pub use convey_relay::fuzzing::{tracker_fast_path, tracker_query, tunnel_header};

/// A code typed by a user or given in `CONVEY_CODE`: what parses prints back the same.
pub fn code(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = Code::from_str(text) {
        let again = Code::from_str(&code.to_string()).expect("a parsed code reparses");
        assert_eq!(again.to_string(), code.to_string());
    }
}

/// Rendezvous messages, both directions: what parses serialises and parses back the same.
pub fn rendezvous(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<ClientMsg>(data) {
        let json = serde_json::to_vec(&m).expect("serialises");
        assert_eq!(serde_json::from_slice::<ClientMsg>(&json).ok(), Some(m));
    }
    if let Ok(m) = serde_json::from_slice::<ServerMsg>(data) {
        let json = serde_json::to_vec(&m).expect("serialises");
        assert_eq!(serde_json::from_slice::<ServerMsg>(&json).ok(), Some(m));
    }
}

/// A sealed peer message (which must fail to open unless sealed with the key), then the
/// same bytes as the opened JSON, through everything a receiver checks in an offer.
pub fn peer_msg(data: &[u8]) {
    let key = SessionKey::from_slice(&[7; 32]).expect("32 bytes");
    let mut channel = Channel::new(&key, Side::Receiver);
    let _ = channel.open(data);
    let Ok(msg) = serde_json::from_slice::<PeerMsg>(data) else {
        return;
    };
    let _ = msg.kind();
    let PeerMsg::Offer(offer) = msg else { return };
    match offer.body {
        OfferBody::Files {
            manifest,
            content_key,
            torrent,
            direct_hints,
            packing,
        } => {
            check_hints(direct_hints);
            if let Ok(checked) = manifest.check() {
                let total = checked.layout.total();
                let Ok(map) = ChunkMap::from_wire(total, packing.as_ref().map(|p| p.frames.as_str())) else {
                    return;
                };
                check_map(&map);
                let cipher = ContentCipher::new(&content_key, map);
                if let Ok(bytes) = base64_decode(&torrent)
                    && let Ok((info, _)) = torrent::parse(&bytes)
                {
                    let _ = info.check(cipher.cipher_len());
                }
            }
        }
        OfferBody::Pushed {
            manifest,
            direct_hints,
            ..
        } => {
            check_hints(direct_hints);
            let _ = manifest.check();
        }
        OfferBody::Stream { direct_hints, .. } => check_hints(direct_hints),
        OfferBody::Text { text } => {
            let _ = convey_shared::display::line(&text);
        }
    }
}

/// What a chunk map from the network promises: never a longer ciphertext than no map,
/// every chunk's place inside the content, and the plaintext covered once, in order.
fn check_map(map: &ChunkMap) {
    assert!(map.cipher_len() <= ChunkMap::identity(map.plain_len()).cipher_len());
    if map.chunk_count() > 4096 {
        return; // the walk below is linear; big maps are covered by small ones' shape
    }
    let mut at = 0;
    for i in 0..map.chunk_count() {
        let r = map.plain_range(i);
        assert_eq!(r.start, at);
        at = r.end;
        if let Place::Packed { frame, part, parts } = map.place(i) {
            assert!(part < parts && frame < map.frame_count());
        }
    }
    assert_eq!(at, map.plain_len());
}

fn check_hints(hints: Vec<std::net::SocketAddr>) {
    let kept = dialable_hints(hints, 16);
    assert!(kept.len() <= 16);
    assert!(kept.iter().all(|a| !a.ip().is_unspecified() && a.port() != 0));
}

/// Standard base64, as the offer carries its torrent; without a dependency of its own.
fn base64_decode(s: &str) -> Result<Vec<u8>, ()> {
    let val = |c: u8| -> Result<u32, ()> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(()),
        }
        .into())
    };
    let bytes = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return Err(()),
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..=n]);
    }
    Ok(out)
}

/// A manifest: what passes the check is safe to create (no traversal, no reserved or
/// over-long names, bounded count and total).
pub fn manifest(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let Ok(checked) = m.check() else { return };
    assert!(checked.manifest.files.len() + checked.manifest.dirs.len() <= MAX_ENTRIES);
    assert_eq!(checked.layout.total(), checked.manifest.total_size());
    for parts in checked.file_parts.iter().chain(&checked.dir_parts) {
        assert!(!parts.is_empty());
        for p in parts {
            assert!(!p.is_empty() && p != "." && p != ".." && !p.contains('/'));
        }
    }
}

/// A torrent from the network against a ciphertext length (the input's first 8 bytes).
pub fn torrent(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let cipher_len = u64::from_le_bytes(*len);
    if let Ok((info, hash)) = torrent::parse(rest) {
        assert_eq!(hash, info.info_hash());
        if info.check(cipher_len).is_ok() {
            assert_eq!(info.length, cipher_len);
            assert!(info.piece_length > 0 && info.piece_length.is_multiple_of(CIPHER_CHUNK));
        }
    }
}

/// A stream as the receiver reads it: frame headers, then sealed chunks that must fail
/// authentication (the fuzzer does not know the key) without panicking; and the same bytes
/// as the record headers inside the opened chunks, which never claim more than a record.
pub fn stream_frames(data: &[u8]) {
    for head in data.chunks_exact(RECORD_HEADER_LEN) {
        let head: [u8; RECORD_HEADER_LEN] = head.try_into().expect("exact chunk");
        if let Ok(r) = Record::parse(head) {
            assert!(r.plain_len <= MAX_RECORD && r.stored_len <= MAX_STORED);
            assert_eq!(Record::parse(r.to_bytes()), Ok(r));
        }
    }
    let cipher = StreamCipher::new(&ContentKey::from_bytes([3; 32]));
    let mut rest = data;
    let mut i = 0u64;
    while let Some((head, tail)) = rest.split_first_chunk::<HEADER_LEN>() {
        let Ok(h) = parse_header(*head, CIPHER_CHUNK as usize) else {
            return;
        };
        let Some(body) = tail.get(..h.len) else { return };
        let mut buf = body.to_vec();
        assert!(cipher.open(i, h.last, &mut buf).is_err(), "forged chunk opened");
        rest = &tail[h.len..];
        i += 1;
    }
}

/// A push as the receiver reads it: the first 8 bytes pick the content's length, then item
/// headers with their sealed frames. An item that parses names a frame inside the content
/// with exactly its sealed length (never more than a raw frame), and a forged frame never
/// opens.
pub fn push_items(data: &[u8]) {
    let Some((len, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let plain_len = u64::from_le_bytes(*len) % (1 << 40);
    let cipher = ContentCipher::uncompressed(&ContentKey::from_bytes([4; 32]), plain_len);
    while let Some((head, tail)) = rest.split_first_chunk::<ITEM_HEADER_LEN>() {
        let Ok(item) = Item::parse(*head, plain_len) else {
            return;
        };
        assert_eq!(Item::parse(item.to_bytes(), plain_len), Ok(item));
        let Item::Frame {
            frame,
            first_chunk,
            code,
            sealed,
        } = item
        else {
            rest = tail;
            continue;
        };
        assert!(sealed <= MAX_FRAME_SEALED);
        assert_eq!(frame_sealed_len(plain_len, frame, code), Some(sealed));
        let Some(body) = tail.get(..sealed) else { return };
        if let Some(chunk) = body.get(..body.len().min(CIPHER_CHUNK as usize)) {
            let mut buf = chunk.to_vec();
            assert!(
                cipher.open_chunk_as(first_chunk, false, &mut buf).is_err(),
                "forged chunk opened"
            );
        }
        rest = &tail[sealed..];
    }
}
