//! Parsing an announce request. `info_hash` and `peer_id` are raw bytes, percent-encoded,
//! so the query is split by hand instead of through a UTF-8 form decoder.

use std::collections::HashMap;

use super::{InfoHash, PeerId};

/// Most peers handed out in one reply.
pub(crate) const MAX_NUMWANT: usize = 200;
/// Peers handed out when the client does not say.
pub(crate) const DEFAULT_NUMWANT: usize = 50;
/// Longest query string accepted.
pub(crate) const MAX_QUERY_BYTES: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AnnounceRequest {
    pub(crate) info_hash: InfoHash,
    pub(crate) peer_id: PeerId,
    pub(crate) port: u16,
    pub(crate) left: u64,
    pub(crate) compact: bool,
    pub(crate) event: Option<String>,
    pub(crate) numwant: usize,
}

/// Parse the raw query string. The error is the tracker's `failure reason`.
pub(crate) fn parse(query: &str) -> Result<AnnounceRequest, String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err("request too large".into());
    }
    let mut params: HashMap<&str, Vec<u8>> = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k, percent_encoding::percent_decode_str(v).collect());
    }
    let fixed20 = |name: &str| -> Result<[u8; 20], String> {
        let v = params.get(name).ok_or_else(|| format!("missing {name}"))?;
        v.as_slice()
            .try_into()
            .map_err(|_| format!("{name} must be 20 bytes, got {}", v.len()))
    };
    let text = |name: &str| params.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    let number = |name: &str| -> Result<Option<u64>, String> {
        text(name)
            .map(|t| {
                t.parse::<u64>()
                    .map_err(|_| format!("{name} must be a whole number"))
            })
            .transpose()
    };
    let port = number("port")?.ok_or("missing port")?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or("port must be between 1 and 65535")?;
    let numwant = match number("numwant")? {
        None => DEFAULT_NUMWANT,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(MAX_NUMWANT),
    };
    Ok(AnnounceRequest {
        info_hash: InfoHash(fixed20("info_hash")?),
        peer_id: PeerId(fixed20("peer_id")?),
        port,
        left: number("left")?.unwrap_or(0),
        compact: text("compact").as_deref() != Some("0"),
        event: text("event").filter(|e| !e.is_empty()),
        numwant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%FF";

    #[test]
    fn parses_a_typical_announce() {
        let q = format!(
            "info_hash={HASH}&peer_id=-qB4650-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=5&compact=1&event=started&numwant=9999"
        );
        let r = parse(&q).unwrap();
        assert_eq!(r.info_hash.0[19], 0xff);
        assert_eq!(
            (r.port, r.left, r.compact, r.numwant),
            (6881, 5, true, MAX_NUMWANT)
        );
        assert_eq!(r.event.as_deref(), Some("started"));
    }

    #[test]
    fn clear_failures() {
        assert_eq!(parse("peer_id=x").unwrap_err(), "missing port");
        let q = format!("info_hash={HASH}&peer_id=short&port=1");
        assert_eq!(parse(&q).unwrap_err(), "peer_id must be 20 bytes, got 5");
        let q = format!("info_hash={HASH}&peer_id=-qB4650-abcdefghijkl&port=70000");
        assert_eq!(parse(&q).unwrap_err(), "port must be between 1 and 65535");
        assert_eq!(parse(&"a".repeat(5000)).unwrap_err(), "request too large");
    }
}
