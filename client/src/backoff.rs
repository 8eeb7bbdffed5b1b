//! The one schedule every reconnecting loop waits by (a session's relay link, the sender's
//! tunnel server, a resumable tunnel's redial): doubling from a quarter second, with jitter,
//! so the clients one relay restart cut off do not all knock at the same instant.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first wait (before jitter).
const FIRST: Duration = Duration::from_millis(250);
/// The longest wait before jitter; with jitter a wait is up to twice this.
const LONGEST: Duration = Duration::from_secs(3);

/// Waits between attempts to reach something again.
#[derive(Debug)]
pub(crate) struct Backoff(ExponentialBackoff);

impl Default for Backoff {
    fn default() -> Self {
        Self(
            ExponentialBuilder::new()
                .with_min_delay(FIRST)
                .with_max_delay(LONGEST)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }
}

impl Backoff {
    /// How long to wait before the next attempt.
    pub(crate) fn next_wait(&mut self) -> Duration {
        self.0.next().unwrap_or(LONGEST * 2)
    }

    /// Sleep until the next attempt is due; `false` (at once) if that would be at or past
    /// `deadline`, when there is no time for another attempt.
    pub(crate) async fn wait_within(&mut self, deadline: tokio::time::Instant) -> bool {
        let wait = self.next_wait();
        if tokio::time::Instant::now() + wait >= deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// The next attempt follows a success: start again from the shortest wait.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_a_quarter_second_and_stay_under_six() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..12).map(|_| b.next_wait()).collect();
        assert!((FIRST..FIRST * 2).contains(&waits[0]), "{waits:?}");
        assert!(waits.iter().all(|w| *w < LONGEST * 2), "{waits:?}");
        assert!(waits[11] >= LONGEST, "{waits:?}");
        b.reset();
        assert!(b.next_wait() < FIRST * 2);
    }
}
