//! The shared store's operations, each one Lua script so it is atomic across instances and
//! costs one round trip. Keys: `np:{n}` (hash: `host` waiting, `secret`, `many`, `locked`),
//! `np:{n}:g` (guests waiting for a host connection), `np:{n}:p` (paired member -> partner,
//! empty once the partner left), `nps` (open nameplates, scored by expiry),
//! `sw:{hash}:reg` (registering members, scored by expiry), `sw:{hash}:peers` (peer id ->
//! "seeding seen_ms ip port"), `sw:{hash}:done` (completed count), `sws` (served swarms).

use std::net::SocketAddr;

use convey_shared::protocol::rendezvous::{Host, Mood, ServerMsg};
use redis::{Script, Value};

use super::{PREFIX, STORE_TIMEOUT, Shared, StoreError};
use crate::rendezvous::{MAX_WAITING_GUESTS, locked_error};

const NOW: &str = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

/// The scripts, hashed once (Redis runs them by their SHA-1, loading them when needed).
pub(crate) struct Scripts {
    allocate: Script,
    claim: Script,
    send: Script,
    leave: Script,
    lock: Script,
    refresh: Script,
    open: Script,
    register: Script,
    announce: Script,
    scrape: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            allocate: script(ALLOCATE),
            claim: script(CLAIM),
            send: script(SEND),
            leave: script(LEAVE),
            lock: script(LOCK),
            refresh: script(REFRESH),
            open: script(OPEN),
            register: script(REGISTER),
            announce: script(ANNOUNCE),
            scrape: script(SCRAPE),
        }
    }
}

const ALLOCATE: &str = r"
local p, max, member, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', p .. 'nps', '-inf', now)
if redis.call('ZCARD', p .. 'nps') >= max then return -1 end
local i = 1
while redis.call('EXISTS', p .. 'np:' .. i) == 1 do i = i + 1 end
redis.call('HSET', p .. 'np:' .. i, 'host', member, 'secret', ARGV[5], 'many', ARGV[6], 'at', now)
redis.call('PEXPIRE', p .. 'np:' .. i, ttl)
redis.call('ZADD', p .. 'nps', now + ttl, i)
return i
";

const CLAIM: &str = r"
local p, n, max, member, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local k = p .. 'np:' .. n
if redis.call('EXISTS', k) == 0 then
  if ARGV[6] ~= '1' then return 'unauthorized' end
  redis.call('ZREMRANGEBYSCORE', p .. 'nps', '-inf', now)
  if redis.call('ZCARD', p .. 'nps') >= max then return 'exhausted' end
elseif ARGV[6] ~= '1' and not redis.call('HGET', k, 'host') and redis.call('HLEN', k .. ':p') == 0 then
  return 'unauthorized'
end
if redis.call('HGET', k, 'locked') then return 'in-use' end
local partner
if ARGV[7] == '1' then
  local secret = redis.call('HGET', k, 'secret')
  if secret then
    if secret ~= ARGV[8] or ARGV[8] == '' then return 'in-use' end
  else
    redis.call('HSET', k, 'secret', ARGV[8], 'many', ARGV[9])
  end
  if redis.call('HGET', k, 'host') then return 'in-use' end
  partner = redis.call('LPOP', k .. ':g')
  if not partner then redis.call('HSET', k, 'host', member) end
else
  partner = redis.call('HGET', k, 'host')
  if partner then
    redis.call('HDEL', k, 'host')
  else
    if redis.call('LLEN', k .. ':g') >= tonumber(ARGV[10]) then return 'in-use' end
    redis.call('RPUSH', k .. ':g', member)
  end
end
redis.call('HSET', k, 'at', now)
if partner then
  redis.call('HSET', k .. ':p', partner, member, member, partner)
  if redis.call('HGET', k, 'many') ~= '1' then redis.call('HSET', k, 'locked', '1') end
  redis.call('PUBLISH', p .. 'to:' .. partner, ARGV[11])
end
for _, key in ipairs({k, k .. ':g', k .. ':p'}) do redis.call('PEXPIRE', key, ttl) end
redis.call('ZADD', p .. 'nps', now + ttl, n)
if partner then return 'joined' end
return 'alone'
";

const SEND: &str = r"
local p, n, member = ARGV[1], ARGV[2], ARGV[3]
local other = redis.call('HGET', p .. 'np:' .. n .. ':p', member)
if other and other ~= '' then redis.call('PUBLISH', p .. 'to:' .. other, ARGV[4]) end
return 'sent'
";

const LOCK: &str = r"
local p, n = ARGV[1], ARGV[2]
local k = p .. 'np:' .. n
local secret = redis.call('HGET', k, 'secret')
if not secret or secret == '' or secret ~= ARGV[4] then return 0 end
redis.call('HSET', k, 'locked', '1')
for _, g in ipairs(redis.call('LRANGE', k .. ':g', 0, -1)) do
  redis.call('PUBLISH', p .. 'to:' .. g, ARGV[3])
end
redis.call('DEL', k .. ':g')
return 0
";

const LEAVE: &str = r"
local p, n, member = ARGV[1], ARGV[2], ARGV[3]
local k = p .. 'np:' .. n
if redis.call('HGET', k, 'host') == member then redis.call('HDEL', k, 'host') end
redis.call('LREM', k .. ':g', 0, member)
local other = redis.call('HGET', k .. ':p', member)
redis.call('HDEL', k .. ':p', member)
if other and other ~= '' then
  if redis.call('HEXISTS', k .. ':p', other) == 1 then redis.call('HSET', k .. ':p', other, '') end
  if ARGV[4] ~= '' then redis.call('PUBLISH', p .. 'to:' .. other, ARGV[4]) end
end
if not redis.call('HGET', k, 'host') and redis.call('LLEN', k .. ':g') == 0 and redis.call('HLEN', k .. ':p') == 0 then
  redis.call('DEL', k, k .. ':g', k .. ':p')
  redis.call('ZREM', p .. 'nps', n)
end
return 0
";

const REFRESH: &str = r"
local p, n, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local k = p .. 'np:' .. n
if redis.call('PEXPIRE', k, ttl) == 1 then
  redis.call('PEXPIRE', k .. ':g', ttl)
  redis.call('PEXPIRE', k .. ':p', ttl)
  redis.call('ZADD', p .. 'nps', now + ttl, n)
  return 1
end
return 0
";

const OPEN: &str = r"
redis.call('ZREMRANGEBYSCORE', ARGV[1] .. 'nps', '-inf', now)
redis.call('ZREMRANGEBYSCORE', ARGV[1] .. 'sws', '-inf', now)
return {redis.call('ZCARD', ARGV[1] .. 'nps'), redis.call('ZCARD', ARGV[1] .. 'sws')}
";

const REGISTER: &str = r"
local p, h, member, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if ARGV[5] == '1' then
  redis.call('ZADD', p .. 'sw:' .. h .. ':reg', now + ttl, member)
  redis.call('PEXPIRE', p .. 'sw:' .. h .. ':reg', ttl)
  redis.call('ZADD', p .. 'sws', now + ttl, h)
else
  redis.call('ZREM', p .. 'sw:' .. h .. ':reg', member)
end
return 0
";

const ANNOUNCE: &str = r"
local p, h, id = ARGV[1], ARGV[2], ARGV[3]
local reg, peers, done = p .. 'sw:' .. h .. ':reg', p .. 'sw:' .. h .. ':peers', p .. 'sw:' .. h .. ':done'
local stale = tonumber(ARGV[9])
redis.call('ZREMRANGEBYSCORE', reg, '-inf', now)
-- A swarm stays served while registered or while its peers announce (the peers hash
-- expires `stale` after the last one): a latecomer still finds the receivers.
if redis.call('ZCARD', reg) == 0 and redis.call('EXISTS', peers) == 0 then
  if ARGV[10] ~= '1' then return {'unregistered'} end
  if ARGV[6] == '1' then return {'ok', 0, 0} end
  redis.call('ZREMRANGEBYSCORE', p .. 'sws', '-inf', now)
  if redis.call('ZCARD', p .. 'sws') >= tonumber(ARGV[11]) then return {'full'} end
end
if ARGV[7] == '1' then redis.call('INCR', done); redis.call('PEXPIRE', done, stale) end
if ARGV[6] == '1' then
  redis.call('HDEL', peers, id)
else
  redis.call('HSET', peers, id, ARGV[5] .. ' ' .. now .. ' ' .. ARGV[4])
  redis.call('PEXPIRE', peers, stale)
  redis.call('ZADD', p .. 'sws', now + stale, h)
end
local all = redis.call('HGETALL', peers)
local out = {'ok', 0, 0}
local complete, incomplete, taken, want = 0, 0, 0, tonumber(ARGV[8])
for i = 1, #all, 2 do
  local pid, v = all[i], all[i + 1]
  local seeding, seen, addr = string.match(v, '^(%d) (%d+) (.+)$')
  if not seen or now - tonumber(seen) >= stale then
    redis.call('HDEL', peers, pid)
  else
    if seeding == '1' then complete = complete + 1 else incomplete = incomplete + 1 end
    if pid ~= id and taken < want then
      out[#out + 1] = pid
      out[#out + 1] = addr
      taken = taken + 1
    end
  end
end
out[2] = complete
out[3] = incomplete
return out
";

const SCRAPE: &str = r"
local p, h, stale = ARGV[1], ARGV[2], tonumber(ARGV[3])
local reg, peers = p .. 'sw:' .. h .. ':reg', p .. 'sw:' .. h .. ':peers'
redis.call('ZREMRANGEBYSCORE', reg, '-inf', now)
if redis.call('ZCARD', reg) == 0 and redis.call('EXISTS', peers) == 0 then return {} end
local complete, incomplete = 0, 0
local all = redis.call('HGETALL', peers)
for i = 2, #all, 2 do
  local seeding, seen = string.match(all[i], '^(%d) (%d+) ')
  if seen and now - tonumber(seen) < stale then
    if seeding == '1' then complete = complete + 1 else incomplete = incomplete + 1 end
  end
end
local done = tonumber(redis.call('GET', p .. 'sw:' .. h .. ':done') or '0')
return {complete, done, incomplete}
";

/// How a claim went.
#[derive(Debug)]
pub(crate) enum ClaimOutcome {
    /// Nobody was there yet.
    Alone,
    /// Paired at once (the partner was told).
    Joined,
    InUse,
    Unauthorized,
    Exhausted,
}

/// An announce, as the shared store takes it.
#[derive(Debug)]
pub(crate) struct RedisAnnounce<'a> {
    pub(crate) info_hash: &'a [u8; 20],
    pub(crate) peer_id: &'a [u8; 20],
    pub(crate) addr: SocketAddr,
    pub(crate) seeding: bool,
    pub(crate) stopped: bool,
    pub(crate) completed: bool,
    pub(crate) numwant: usize,
    pub(crate) stale_ms: u64,
    pub(crate) open: bool,
    pub(crate) max_swarms: usize,
}

/// Peers, complete and incomplete counts of a served swarm, or why it is not served.
pub(crate) type AnnounceReply = Result<(Vec<([u8; 20], SocketAddr)>, usize, usize), &'static str>;

fn json(msg: &ServerMsg) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn bad(what: &str) -> StoreError {
    StoreError(format!("unexpected reply to {what}"))
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

impl Shared {
    /// Run a prepared script, once more if the connection had dropped (the connection
    /// manager reconnects after the first failure, e.g. when Redis restarted); both tries
    /// within [`STORE_TIMEOUT`].
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let run = async {
            match inv.invoke_async(&mut self.conn()).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                    Ok(inv.invoke_async(&mut self.conn()).await?)
                }
                r => Ok(r?),
            }
        };
        tokio::time::timeout(STORE_TIMEOUT, run)
            .await
            .map_err(|_| StoreError(format!("no answer within {} s", STORE_TIMEOUT.as_secs())))?
    }

    pub(crate) async fn allocate(
        &self,
        conn: u64,
        max: usize,
        host: &Host,
    ) -> Result<Option<u32>, StoreError> {
        let n: i64 = self
            .invoke(
                self.scripts
                    .allocate
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(max)
                    .arg(self.member(conn))
                    .arg(self.ttl_ms())
                    .arg(&host.secret)
                    .arg(flag(host.many)),
            )
            .await?;
        Ok(u32::try_from(n).ok())
    }

    pub(crate) async fn claim(
        &self,
        n: u32,
        conn: u64,
        max: usize,
        may_open: bool,
        host: Option<&Host>,
    ) -> Result<ClaimOutcome, StoreError> {
        let status: String = self
            .invoke(
                self.scripts
                    .claim
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(n)
                    .arg(max)
                    .arg(self.member(conn))
                    .arg(self.ttl_ms())
                    .arg(flag(may_open))
                    .arg(flag(host.is_some()))
                    .arg(host.map_or("", |h| h.secret.as_str()))
                    .arg(flag(host.is_some_and(|h| h.many)))
                    .arg(MAX_WAITING_GUESTS)
                    .arg(json(&ServerMsg::PeerJoined)),
            )
            .await?;
        Ok(match status.as_str() {
            "alone" => ClaimOutcome::Alone,
            "joined" => ClaimOutcome::Joined,
            "in-use" => ClaimOutcome::InUse,
            "unauthorized" => ClaimOutcome::Unauthorized,
            "exhausted" => ClaimOutcome::Exhausted,
            _ => return Err(bad("claim")),
        })
    }

    /// Deliver `body` to the partner of `conn`, if it has one.
    pub(crate) async fn send(&self, n: u32, conn: u64, body: String) -> Result<(), StoreError> {
        let message = json(&ServerMsg::Message { body });
        let _: String = self
            .invoke(
                self.scripts
                    .send
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(n)
                    .arg(self.member(conn))
                    .arg(message),
            )
            .await?;
        Ok(())
    }

    /// No new guests on `n`; those waiting are told.
    pub(crate) async fn lock(&self, n: u32, secret: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .invoke(
                self.scripts
                    .lock
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(n)
                    .arg(json(&locked_error()))
                    .arg(secret),
            )
            .await?;
        Ok(())
    }

    /// `conn` leaves `n`; its partner is told, with `mood`, unless `quiet`.
    pub(crate) async fn leave(
        &self,
        n: u32,
        conn: u64,
        mood: Option<Mood>,
        quiet: bool,
    ) -> Result<(), StoreError> {
        let told = if quiet {
            String::new()
        } else {
            json(&ServerMsg::PeerLeft { mood })
        };
        let _: i64 = self
            .invoke(
                self.scripts
                    .leave
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(n)
                    .arg(self.member(conn))
                    .arg(told),
            )
            .await?;
        Ok(())
    }

    /// Keep nameplate `n` alive (its connection is); whether its record was still there.
    pub(crate) async fn refresh(&self, n: u32) -> Result<bool, StoreError> {
        let kept: i64 = self
            .invoke(
                self.scripts
                    .refresh
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(n)
                    .arg(self.ttl_ms()),
            )
            .await?;
        Ok(kept == 1)
    }

    /// Open nameplates and served swarms, across all instances.
    pub(crate) async fn counts(&self) -> Result<(usize, usize), StoreError> {
        let v: Vec<i64> = self
            .invoke(self.scripts.open.prepare_invoke().arg(PREFIX))
            .await?;
        let get = |i: usize| v.get(i).and_then(|n| usize::try_from(*n).ok()).unwrap_or(0);
        Ok((get(0), get(1)))
    }

    /// Register (or, with `on` false, unregister) `conn` as serving `info_hash`; registering
    /// again refreshes it.
    pub(crate) async fn register(&self, info_hash: &[u8; 20], conn: u64, on: bool) -> Result<(), StoreError> {
        let _: i64 = self
            .invoke(
                self.scripts
                    .register
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(hex::encode(info_hash))
                    .arg(self.member(conn))
                    .arg(self.ttl_ms())
                    .arg(flag(on)),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn announce(&self, a: &RedisAnnounce<'_>) -> Result<AnnounceReply, StoreError> {
        let reply: Vec<Value> = self
            .invoke(
                self.scripts
                    .announce
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(hex::encode(a.info_hash))
                    .arg(hex::encode(a.peer_id))
                    .arg(format!("{} {}", a.addr.ip(), a.addr.port()))
                    .arg(flag(a.seeding))
                    .arg(flag(a.stopped))
                    .arg(flag(a.completed))
                    .arg(a.numwant)
                    .arg(a.stale_ms)
                    .arg(flag(a.open))
                    .arg(a.max_swarms),
            )
            .await?;
        match reply.first().and_then(text).as_deref() {
            Some("unregistered") => return Ok(Err("unregistered")),
            Some("full") => return Ok(Err("full")),
            Some("ok") => {}
            _ => return Err(bad("announce")),
        }
        let count = |i: usize| {
            reply
                .get(i)
                .and_then(number)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
        };
        let peers = reply[3..]
            .chunks_exact(2)
            .filter_map(|pair| {
                let id: [u8; 20] = hex::decode(text(&pair[0])?).ok()?.try_into().ok()?;
                let addr = text(&pair[1])?;
                let (ip, port) = addr.split_once(' ')?;
                Some((id, SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)))
            })
            .collect();
        Ok(Ok((peers, count(1), count(2))))
    }

    /// (complete, downloaded, incomplete) of a served swarm.
    pub(crate) async fn scrape(
        &self,
        info_hash: &[u8; 20],
        stale_ms: u64,
    ) -> Result<Option<(usize, u64, usize)>, StoreError> {
        let v: Vec<i64> = self
            .invoke(
                self.scripts
                    .scrape
                    .prepare_invoke()
                    .arg(PREFIX)
                    .arg(hex::encode(info_hash))
                    .arg(stale_ms),
            )
            .await?;
        Ok(match v.as_slice() {
            [c, d, i] => Some((
                usize::try_from(*c).unwrap_or(0),
                u64::try_from(*d).unwrap_or(0),
                usize::try_from(*i).unwrap_or(0),
            )),
            _ => None,
        })
    }
}
