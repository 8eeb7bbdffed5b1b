//! Parsing announce and scrape requests. `info_hash` and `peer_id` are raw bytes,
//! percent-encoded, so the query is split by hand instead of through a UTF-8 form decoder.

use super::{InfoHash, PeerId};

/// Peers handed out when the client does not say.
pub(crate) const DEFAULT_NUMWANT: usize = 50;
/// A `numwant` above this is a malformed request, not a wish to clamp.
pub(crate) const ABSURD_NUMWANT: u64 = 100_000;
/// Longest query string accepted.
pub(crate) const MAX_QUERY_BYTES: usize = 4096;
/// Most info-hashes one scrape may name.
pub(crate) const MAX_SCRAPE_HASHES: usize = 64;

/// What the peer says happened (BEP 3; `paused` is BEP 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Started,
    Stopped,
    Completed,
    Paused,
    /// A regular re-announce.
    None,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AnnounceRequest {
    pub(crate) info_hash: InfoHash,
    pub(crate) peer_id: PeerId,
    pub(crate) port: u16,
    pub(crate) left: u64,
    pub(crate) compact: bool,
    pub(crate) event: Event,
    /// As asked for; the tracker clamps it to its own cap.
    pub(crate) numwant: usize,
}

/// The decoded `key=value` pairs of a query, in order, repeats kept (scrape repeats
/// `info_hash`).
fn pairs(query: &str) -> Result<Vec<(&str, Vec<u8>)>, String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!("request too large (over {MAX_QUERY_BYTES} bytes)"));
    }
    Ok(query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k, percent_encoding::percent_decode_str(v).collect())
        })
        .collect())
}

fn fixed20(name: &str, v: &[u8]) -> Result<[u8; 20], String> {
    v.try_into()
        .map_err(|_| format!("{name} must be 20 bytes, got {}", v.len()))
}

/// Parse an announce query. The error is the tracker's `failure reason`.
pub(crate) fn parse(query: &str) -> Result<AnnounceRequest, String> {
    let pairs = pairs(query)?;
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    };
    let text = |name: &str| get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    let number = |name: &str| -> Result<Option<u64>, String> {
        text(name)
            .map(|t| {
                t.parse::<u64>()
                    .map_err(|_| format!("{name} must be a whole number, got {t:?}"))
            })
            .transpose()
    };
    let info_hash = fixed20("info_hash", get("info_hash").ok_or("missing info_hash")?)?;
    let peer_id = fixed20("peer_id", get("peer_id").ok_or("missing peer_id")?)?;
    let port = number("port")?.ok_or("missing port")?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or("port must be between 1 and 65535")?;
    let numwant = match number("numwant")? {
        None => DEFAULT_NUMWANT,
        Some(n) if n > ABSURD_NUMWANT => {
            return Err(format!("numwant {n} is absurd (at most {ABSURD_NUMWANT})"));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let event = match text("event").as_deref() {
        None | Some("") => Event::None,
        Some("started") => Event::Started,
        Some("stopped") => Event::Stopped,
        Some("completed") => Event::Completed,
        Some("paused") => Event::Paused,
        Some(other) => {
            return Err(format!(
                "event must be started, stopped, completed, paused or empty, got {other:?}"
            ));
        }
    };
    // Counters the tracker does not use are still checked: a malformed request is refused.
    for name in ["uploaded", "downloaded", "corrupt", "redundant"] {
        number(name)?;
    }
    let compact = match text("compact").as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(other) => return Err(format!("compact must be 0 or 1, got {other:?}")),
    };
    Ok(AnnounceRequest {
        info_hash: InfoHash(info_hash),
        peer_id: PeerId(peer_id),
        port,
        left: number("left")?.unwrap_or(0),
        compact,
        event,
        numwant,
    })
}

/// Parse a scrape query (BEP 48): one or more `info_hash`.
pub(crate) fn parse_scrape(query: &str) -> Result<Vec<InfoHash>, String> {
    let hashes = pairs(query)?
        .into_iter()
        .filter(|(k, _)| *k == "info_hash")
        .map(|(_, v)| fixed20("info_hash", &v).map(InfoHash))
        .collect::<Result<Vec<_>, _>>()?;
    match hashes.len() {
        0 => Err("scrape needs at least one info_hash; this tracker does not list its swarms".into()),
        n if n > MAX_SCRAPE_HASHES => Err(format!(
            "scrape names {n} info_hashes; at most {MAX_SCRAPE_HASHES}"
        )),
        _ => Ok(hashes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%FF";
    const PEER: &str = "-qB4650-abcdefghijkl";

    #[test]
    fn parses_a_typical_announce() {
        let q = format!(
            "info_hash={HASH}&peer_id={PEER}&port=6881&uploaded=0&downloaded=0&left=5&compact=1&event=started&numwant=9999"
        );
        let r = parse(&q).unwrap();
        assert_eq!(r.info_hash.0[19], 0xff);
        assert_eq!((r.port, r.left, r.compact, r.numwant), (6881, 5, true, 9999));
        assert_eq!(r.event, Event::Started);
        let r = parse(&format!(
            "info_hash={HASH}&peer_id={PEER}&port=1&compact=0&event="
        ))
        .unwrap();
        assert_eq!(
            (r.compact, r.event, r.numwant),
            (false, Event::None, DEFAULT_NUMWANT)
        );
    }

    #[test]
    fn clear_failures() {
        let base = format!("info_hash={HASH}&peer_id={PEER}");
        assert_eq!(parse("peer_id=x").unwrap_err(), "missing info_hash");
        assert_eq!(
            parse(&format!("info_hash={HASH}&port=1")).unwrap_err(),
            "missing peer_id"
        );
        assert_eq!(parse(&base).unwrap_err(), "missing port");
        let q = format!("info_hash={HASH}&peer_id=short&port=1");
        assert_eq!(parse(&q).unwrap_err(), "peer_id must be 20 bytes, got 5");
        let q = format!("info_hash=%01%02&peer_id={PEER}&port=1");
        assert_eq!(parse(&q).unwrap_err(), "info_hash must be 20 bytes, got 2");
        assert_eq!(
            parse(&format!("{base}&port=70000")).unwrap_err(),
            "port must be between 1 and 65535"
        );
        assert_eq!(
            parse(&format!("{base}&port=0")).unwrap_err(),
            "port must be between 1 and 65535"
        );
        assert_eq!(
            parse(&format!("{base}&port=1&numwant=-1")).unwrap_err(),
            "numwant must be a whole number, got \"-1\""
        );
        assert_eq!(
            parse(&format!("{base}&port=1&numwant=1000000")).unwrap_err(),
            "numwant 1000000 is absurd (at most 100000)"
        );
        assert!(
            parse(&format!("{base}&port=1&event=exploded"))
                .unwrap_err()
                .starts_with("event must be")
        );
        assert!(
            parse(&"a".repeat(5000))
                .unwrap_err()
                .starts_with("request too large")
        );
    }

    /// Counters it does not use, and `compact`, must still be well-formed.
    #[test]
    fn malformed_numeric_parameters_get_a_failure_reason() {
        let base = format!("info_hash={HASH}&peer_id={PEER}&port=1");
        assert_eq!(
            parse(&format!("{base}&uploaded=abc")).unwrap_err(),
            "uploaded must be a whole number, got \"abc\""
        );
        assert_eq!(
            parse(&format!("{base}&downloaded=-5")).unwrap_err(),
            "downloaded must be a whole number, got \"-5\""
        );
        assert_eq!(
            parse(&format!("{base}&compact=abc")).unwrap_err(),
            "compact must be 0 or 1, got \"abc\""
        );
        assert!(parse(&format!("{base}&uploaded=0&downloaded=10&compact=1")).is_ok());
    }

    #[test]
    fn scrape_takes_repeated_hashes() {
        let two = parse_scrape(&format!("info_hash={HASH}&info_hash={HASH}")).unwrap();
        assert_eq!(two.len(), 2);
        assert!(parse_scrape("").unwrap_err().starts_with("scrape needs"));
        assert_eq!(
            parse_scrape("info_hash=%01").unwrap_err(),
            "info_hash must be 20 bytes, got 1"
        );
    }
}
