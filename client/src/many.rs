//! One code, many receivers. The content is prepared and seeded once ([`Seeding`]); each
//! receiver gets a rendezvous connection of its own (the sender's next host connection on
//! the code's nameplate), its own SPAKE2 run, key confirmation and paths, and the same offer.
//! Every run that does not end in the receiver's valid confirmation is a failed try; after
//! [`MAX_FAILED_TRIES`] the code is closed to new receivers while admitted ones carry on.
//! Each receiver's session is a task owned by one `JoinSet`, so every path out stops them.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use convey_shared::{
    Code, Nameplate,
    crypto::Side,
    protocol::{peer::PeerMsg, rendezvous::Mood},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::{
    Error, Event, EventSink,
    error::Result,
    rendezvous::Rendezvous,
    seed::{self, Holdings, Role, Seeding, Served},
    send::SendOptions,
    session,
};

/// Failed tries after which the code takes no new receivers.
pub(crate) const MAX_FAILED_TRIES: u32 = 3;
/// Longest a receiver's key exchange may take once it joined; a silent one is a failed try.
const PAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long finished sessions get to tell their receivers that everyone is done.
const FAREWELL: Duration = Duration::from_secs(5);

/// The content once prepared, and what the receivers report holding of it.
type Ready = Option<(Arc<Seeding>, Arc<Holdings>)>;

/// The sender's first host connection on the code's nameplate.
pub(crate) struct Host {
    pub(crate) rv: Rendezvous,
    pub(crate) code: Code,
    pub(crate) host: convey_shared::protocol::rendezvous::Host,
    pub(crate) peer_present: bool,
}

/// What one receiver's session reports to the loop that counts them.
#[derive(Debug)]
enum Update {
    Confirmed,
    /// The run did not end in a valid confirmation from the receiver.
    FailedTry,
    Accepted,
    /// The receiver's latest report: it holds this many of the content's bytes.
    Progress {
        bytes: u64,
        total: u64,
    },
    Declined,
    /// Done, and serving the others.
    Done,
    /// Done from a push (a browser page): it serves nobody.
    DonePushed,
    Failed(String),
    /// A receiver that was done and serving the others left.
    Left,
}

/// Where a receiver stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Joined; key exchange or offer still open.
    Pending,
    /// Accepted the offer, transferring.
    Active,
    /// Done, and still serving the others until the sender says all are done.
    Serving,
}

/// The counts the sender decides by.
#[derive(Debug, Default)]
struct Tally {
    next_index: u32,
    stages: HashMap<u32, Stage>,
    done: u32,
    failures: u32,
    closed: bool,
}

impl Tally {
    fn count(&self, stage: Stage) -> u32 {
        self.stages.values().filter(|s| **s == stage).count() as u32
    }

    /// Should a host connection wait for one more receiver?
    fn wants_more(&self, target: Option<u32>) -> bool {
        !self.closed
            && target.is_none_or(|t| self.done + self.count(Stage::Pending) + self.count(Stage::Active) < t)
    }

    /// Is a receiver still joining or transferring?
    fn busy(&self) -> bool {
        self.stages.values().any(|s| *s != Stage::Serving)
    }
}

/// Send `paths` to several receivers on one code. Returns the plaintext bytes offered.
pub(crate) async fn send_many(
    paths: &[PathBuf],
    first: Host,
    opts: &SendOptions,
    events: &EventSink,
) -> Result<u64> {
    let cancel = Arc::new(AtomicBool::new(false));
    let ready = seed::get_ready(paths.to_vec(), opts, cancel, events.clone());
    tokio::pin!(ready);
    let (seeding_tx, seeding_rx) = watch::channel::<Ready>(None);
    let mut all_held = false;
    let (all_done_tx, all_done_rx) = watch::channel(false);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<(u32, Update)>();
    let mut sessions = JoinSet::new();
    let Host {
        rv,
        code,
        host,
        peer_present,
    } = first;
    let nameplate = code.nameplate();
    let shared_opts = Arc::new(opts.clone());
    let target = opts.receivers.target();
    let mut waiting = Some((rv, peer_present));
    let mut seeding: Ready = None;
    let mut tally = Tally {
        next_index: 1,
        ..Tally::default()
    };
    let mut idle_since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut backoff = Backoff::default();
    events(Event::Waiting);
    let result: Result<()> = loop {
        if waiting.is_none() && tally.wants_more(target) {
            match open_host(opts, nameplate, &host).await {
                Ok(w) => waiting = Some(w),
                Err(e) => break Err(e),
            }
        }
        if waiting.as_ref().is_some_and(|(_, paired)| *paired)
            && let Some((rv, _)) = waiting.take()
        {
            let index = tally.next_index;
            tally.next_index += 1;
            tally.stages.insert(index, Stage::Pending);
            sessions.spawn(receiver_session(
                index,
                rv,
                code.clone(),
                shared_opts.clone(),
                (seeding_rx.clone(), all_done_rx.clone()),
                up_tx.clone(),
            ));
            continue;
        }
        let idle_deadline = opts
            .wait
            .filter(|_| !tally.busy())
            .map(|w| tokio::time::Instant::from_std(idle_since + w));
        tokio::select! {
            r = &mut ready, if seeding.is_none() => match r {
                Ok(s) => {
                    let holdings = Arc::new(Holdings::new(&s));
                    let s = (Arc::new(s), holdings);
                    seeding = Some(s.clone());
                    let _ = seeding_tx.send(Some(s));
                }
                Err(e) => break Err(e),
            },
            r = wait_joined(waiting.as_mut()), if waiting.is_some() => match r {
                Ok(()) => {
                    if let Some(w) = waiting.as_mut() {
                        w.1 = true;
                    }
                }
                Err(e) => break Err(e),
            },
            Some((index, update)) = up_rx.recv() => {
                if let Some(end) = count(&mut tally, (index, update), target, events, (&mut waiting, opts, nameplate, &host)).await {
                    break end;
                }
                if !tally.busy() {
                    idle_since = Instant::now();
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = tick.tick(), if seeding.is_some() => {
                if let Some((s, holdings)) = &seeding {
                    if !all_held && tally.done + tally.count(Stage::Active) > 0 && holdings.complete() {
                        all_held = true;
                        events(Event::AllHeld);
                    }
                    let up = s.handle.stats().uploaded_bytes;
                    if tally.count(Stage::Active) > 0 {
                        events(Event::Progress { bytes: s.cipher.plain_progress(up), total: None });
                    }
                    let active = tally.count(Stage::Active);
                    let holders = active + tally.count(Stage::Serving);
                    let swarming = active >= 1 && holders >= 2;
                    backoff.update(s, (up, holdings.reported()), (swarming, holdings.complete()), opts.upload_limit);
                }
            }
            () = sleep_until(idle_deadline), if idle_deadline.is_some() => {
                break idle_end(&tally, target, opts.wait.unwrap_or_default());
            }
        }
    };
    // Tell every receiver still connected that nobody needs its pieces now, then stop.
    let _ = all_done_tx.send(true);
    if let Some((rv, _)) = waiting.take() {
        rv.close(Mood::Happy).await;
    }
    let farewell = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(FAREWELL, farewell).await.is_err() {
        sessions.shutdown().await;
    }
    if let Some((s, _)) = seeding {
        crate::transfer::bt::shutdown(&s.engine).await;
        result.map(|()| s.prepared.size)
    } else {
        result.map(|()| 0)
    }
}

/// How the sender steps back while several receivers transfer. At full speed until the
/// receivers' reports say they hold every piece together; then it slows to
/// [`BACKOFF_FLOOR`], and librqbit on the receivers fetches from each other (it moves a
/// piece from a slow peer to a faster one). With no other receiver left to serve, full
/// speed again. (An earlier rule also slowed to a quarter once the sender had uploaded one
/// copy: that held back the pieces nobody had yet, and with 8 receivers on 100 Mbit/s
/// links it cost 7 to 20 s in two runs of two.)
///
/// The reports are the receivers' word: a co-receiver that serves forged pieces, or one the
/// others cannot reach, holds nothing useful. So while the sender holds back, the receivers
/// that transfer must gain more than the sender itself sends them; if over a
/// [`STARVED_WINDOW`] they gained no more than half as much again, holding back only slows
/// them, and the sender goes back to full speed until nobody transfers any more.
#[derive(Debug, Default)]
struct Backoff {
    holding_back: bool,
    /// While holding back: the pieces reported and the bytes uploaded when the current
    /// window began, and when.
    window: Option<(u64, u64, Instant)>,
    /// The receivers starved while the sender held back: no more backing off this round.
    starved: bool,
}

/// How long the sender watches what the receivers gain while it holds back (they report
/// every 2 s).
const STARVED_WINDOW: Duration = Duration::from_secs(6);

/// The slowest the sender goes when it backs off.
const BACKOFF_FLOOR: u32 = 256 << 10;

impl Backoff {
    /// `swarming`: a receiver transfers and at least one other receiver holds pieces.
    fn update(
        &mut self,
        s: &Seeding,
        (uploaded, reported): (u64, u64),
        (swarming, all_held): (bool, bool),
        limit: Option<std::num::NonZeroU32>,
    ) {
        if !swarming {
            self.starved = false;
        }
        if !self.holding_back || !swarming {
            self.window = None;
        } else {
            let now = Instant::now();
            let (r0, u0, t0) = *self.window.get_or_insert((reported, uploaded, now));
            if now.duration_since(t0) >= STARVED_WINDOW {
                let piece = s.prepared.info.piece_length;
                let gained = reported.saturating_sub(r0).saturating_mul(piece);
                let sent = uploaded.saturating_sub(u0);
                if gained <= sent.saturating_add(sent / 2).saturating_add(piece) {
                    tracing::debug!(
                        gained,
                        sent,
                        "the receivers gain only what the sender sends them: full speed"
                    );
                    self.starved = true;
                }
                self.window = Some((reported, uploaded, now));
            }
        }
        let want = swarming && !self.starved && (all_held || self.holding_back);
        if want == self.holding_back {
            return;
        }
        let limits = &s.engine.session().ratelimits;
        if want {
            let floor = limit.map_or(BACKOFF_FLOOR, |l| l.get().min(BACKOFF_FLOOR));
            limits.set_upload_bps(std::num::NonZeroU32::new(floor));
        } else {
            limits.set_upload_bps(limit);
        }
        tracing::debug!(holding_back = want, "the sender's upload pace");
        self.holding_back = want;
    }
}

/// Sleep until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Wait on the waiting host connection until a receiver is paired with it.
async fn wait_joined(waiting: Option<&mut (Rendezvous, bool)>) -> Result<()> {
    match waiting {
        Some((rv, _)) => rv.wait_for_peer().await,
        None => std::future::pending().await,
    }
}

/// Open the next host connection on `nameplate`, for the next receiver.
async fn open_host(
    opts: &SendOptions,
    nameplate: Nameplate,
    host: &convey_shared::protocol::rendezvous::Host,
) -> Result<(Rendezvous, bool)> {
    let mut rv = Rendezvous::connect(&opts.relay).await?;
    let present = rv.claim(nameplate, Some(host)).await?;
    Ok((rv, present))
}

/// `--wait` ran out with nobody transferring.
fn idle_end(tally: &Tally, target: Option<u32>, wait: Duration) -> Result<()> {
    match target {
        None if tally.done > 0 => Ok(()),
        _ => Err(Error::Timeout(format!(
            "{} of {} receivers finished, and nobody else came within {}; raise --wait to wait longer",
            tally.done,
            target.map_or_else(|| "any".into(), |t| t.to_string()),
            humantime::format_duration(wait)
        ))),
    }
}

/// Count one session's news; `Some` ends the send.
async fn count(
    tally: &mut Tally,
    (index, update): (u32, Update),
    target: Option<u32>,
    events: &EventSink,
    (waiting, opts, nameplate, host): (
        &mut Option<(Rendezvous, bool)>,
        &SendOptions,
        Nameplate,
        &convey_shared::protocol::rendezvous::Host,
    ),
) -> Option<Result<()>> {
    if let Update::Progress { bytes, total } = update {
        events(Event::ReceiverProgress { index, bytes, total });
        return None;
    }
    let state = match &update {
        Update::Progress { .. } => return None,
        Update::Confirmed => "connected",
        Update::FailedTry => "wrong-code",
        Update::Accepted => "accepted",
        Update::Declined => "declined",
        Update::Done | Update::DonePushed => "done",
        Update::Failed(_) => "failed",
        Update::Left => return None,
    };
    match &update {
        Update::Confirmed | Update::Progress { .. } => {}
        Update::Accepted => {
            tally.stages.insert(index, Stage::Active);
        }
        Update::Done => {
            tally.stages.insert(index, Stage::Serving);
            tally.done += 1;
        }
        Update::DonePushed => {
            tally.stages.remove(&index);
            tally.done += 1;
        }
        Update::FailedTry => {
            tally.stages.remove(&index);
            tally.failures += 1;
        }
        Update::Declined | Update::Failed(_) | Update::Left => {
            tally.stages.remove(&index);
        }
    }
    events(Event::Receiver {
        index,
        state: state.into(),
        message: match update {
            Update::Failed(m) => Some(m),
            _ => None,
        },
        done: tally.done,
        of: target,
        tries: tally.failures,
        allowed: MAX_FAILED_TRIES,
    });
    if tally.failures >= MAX_FAILED_TRIES && !tally.closed {
        tally.closed = true;
        // Through the waiting host connection, else a connection of its own: a guest
        // waiting for a host connection is refused at once, not left to time out.
        let rv = match waiting.take() {
            Some((rv, _)) => Ok(rv),
            None => Rendezvous::connect(&opts.relay).await,
        };
        match rv {
            Ok(mut rv) => {
                let _ = rv.lock(nameplate, &host.secret).await;
                rv.close(Mood::Scary).await;
            }
            Err(e) => tracing::warn!(%e, "cannot close the code on the relay"),
        }
        events(Event::Closed {
            reason: format!("{MAX_FAILED_TRIES} tries with a wrong code"),
        });
    }
    if target.is_some_and(|t| tally.done >= t) {
        return Some(Ok(()));
    }
    if tally.closed && !tally.busy() {
        return Some(Err(Error::CodeClosed(format!(
            "the code was closed after {} tries with a wrong code; {} of {} receivers finished. Send again with a new code",
            tally.failures,
            tally.done,
            target.map_or_else(|| "any".into(), |t| t.to_string()),
        ))));
    }
    None
}

/// One receiver, from key exchange to its verdict; then, if it finished, its link stays
/// open until every receiver is done, so it keeps serving the others.
async fn receiver_session(
    index: u32,
    rv: Rendezvous,
    code: Code,
    opts: Arc<SendOptions>,
    (mut seeding, mut all_done): (watch::Receiver<Ready>, watch::Receiver<bool>),
    up: mpsc::UnboundedSender<(u32, Update)>,
) {
    let say = |u| {
        let _ = up.send((index, u));
    };
    let mut link = match tokio::time::timeout(PAKE_TIMEOUT, session::establish(rv, &code, Side::Sender)).await
    {
        Ok(Ok(link)) => link,
        // A wrong confirmation, a receiver that left or went silent after the SPAKE2
        // messages, a broken message: every unfinished run is a failed try.
        Ok(Err(_)) | Err(_) => return say(Update::FailedTry),
    };
    say(Update::Confirmed);
    // A receiver whose relay connection was cut (a proxy, a load balancer) comes back on
    // the session's resume slot: wait for it a while rather than dropping its session.
    link.await_vanished_peer();
    let ready = async {
        seeding
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|s| s.clone())
    };
    let (seeding, holdings) = match link.heartbeat_while(ready).await {
        Ok(Some(s)) => s,
        Ok(None) => return say(Update::Failed("the content could not be prepared".into())),
        Err(e) => return say(Update::Failed(e.to_string())),
    };
    let role = Role {
        index: index - 1,
        of: opts.receivers.target(),
        holdings,
    };
    let total = seeding.prepared.size;
    let progress = |bytes| say(Update::Progress { bytes, total });
    let served = seed::serve_receiver(
        &mut link,
        &seeding,
        &opts,
        role,
        (|| say(Update::Accepted), progress),
    )
    .await;
    match served {
        Ok(Served::Swarm) => say(Update::Done),
        Ok(Served::Pushed) => {
            // A page that took a push holds nothing it could serve: it is done and gone.
            say(Update::DonePushed);
            return link.close(Mood::Happy).await;
        }
        Err(Error::Declined(_)) => {
            say(Update::Declined);
            return link.close(Mood::Happy).await;
        }
        Err(e) => {
            say(Update::Failed(e.to_string()));
            return link.close(Mood::Errory).await;
        }
    }
    // Done: this receiver serves the others until all are (or until it leaves).
    loop {
        tokio::select! {
            _ = all_done.wait_for(|d| *d) => break,
            msg = link.recv() => if msg.is_err() {
                return say(Update::Left);
            },
        }
    }
    let _ = link.send(&PeerMsg::SwarmDone).await;
    link.close(Mood::Happy).await;
}
