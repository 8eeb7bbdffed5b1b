//! A `listen` end waiting for its partner, kept alive: the relay pings it every
//! [`WAITING_PING`] and drops it once it has been silent for [`WAITING_SILENT`] (a NAT that
//! forgot it closes nothing), so a `dial` end is never paired with a dead one, and the
//! sender, whose pings stop, opens a new end. A `dial` end speaks first (its hello goes out
//! before the pairing), so its bytes are the partner's and are not read here.

use std::time::{Duration, Instant};

use convey_shared::protocol::tunnel::{WAITING_PING, WAITING_SILENT};
use tokio::sync::oneshot;

use super::{
    forward::{Conn, Ended, Inbound, Outbound},
    frames,
};

/// Longest a waiting end may take to finish a control frame it has started.
const FRAME_TIME: Duration = Duration::from_secs(5);

/// How waiting ended.
pub(super) enum Waited {
    /// A partner came.
    Paired(Conn),
    /// Nobody came in time, or the relay is stopping.
    Over,
    /// The waiting end itself went away (closed, silent, or spoke out of turn).
    Gone(Ended),
}

/// Wait on `end` for a partner from `partner`, at most `until`, keeping `end` alive.
/// `stop` ends the wait early (the relay drains).
pub(super) async fn keep_alive(
    end: &mut (Inbound, Outbound),
    partner: &mut oneshot::Receiver<Conn>,
    until: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Waited {
    let (inbound, outbound) = end;
    let deadline = tokio::time::sleep(until);
    tokio::pin!(deadline, stop);
    let mut ping = tokio::time::interval(WAITING_PING);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            got = &mut *partner => return got.map_or(Waited::Over, Waited::Paired),
            () = &mut deadline => return Waited::Over,
            () = &mut stop => return Waited::Over,
            _ = ping.tick() => {
                if heard.elapsed() >= WAITING_SILENT {
                    return Waited::Gone("silent while waiting");
                }
                if let Err(why) = outbound.control(&frames::PING_FRAME).await {
                    return Waited::Gone(why);
                }
            }
            open = inbound.readable() => {
                if !open {
                    return Waited::Gone(super::CLOSED);
                }
                match tokio::time::timeout(FRAME_TIME, control_frame(inbound)).await {
                    Ok(Ok(())) => heard = Instant::now(),
                    Ok(Err(why)) => return Waited::Gone(why),
                    Err(_) => return Waited::Gone("a frame started and never finished"),
                }
            }
        }
    }
}

/// Read one frame from a waiting end: a pong (or a ping) is all it may send.
async fn control_frame(inbound: &mut Inbound) -> Result<(), Ended> {
    let frame = inbound.header().await?;
    match frame.opcode {
        frames::OP_PING | frames::OP_PONG => inbound.skip(frame.len).await,
        frames::OP_CLOSE => Err(super::CLOSED),
        _ => Err("a waiting listen end sent data before its partner came"),
    }
}
