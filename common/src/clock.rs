//! The one clock of both daemons (and of their tests).
//!
//! Every reading of the time goes through a [`Clock`] that the daemon's wiring makes once and
//! hands down: wall time as ms since the Unix epoch ([`Clock::now_ms`]) for what is stored and
//! sent, and a monotonic [`Clock::instant`] for deadlines, timeouts and rates. `clippy.toml`
//! bans `SystemTime::now` and `Instant::now` everywhere else, so no module can read a clock of
//! its own and escape a test's control.
//!
//! Three kinds:
//! - [`Clock::system`]: the machine's clocks (production).
//! - [`Clock::fixed`]: wall time that moves only when a test says ([`Clock::set_ms`],
//!   [`Clock::advance`]); the monotonic side is tokio's.
//! - [`Clock::following_tokio`]: wall time that starts at a given ms and then moves with tokio's
//!   clock, so a `#[tokio::test(start_paused = true)]` that sleeps or calls
//!   `tokio::time::advance` moves both sides together: a test of a two-day escalation runs in
//!   milliseconds.
//!
//! The monotonic side is always tokio's (`tokio::time::Instant::now`, converted to the std
//! type the pure cores take), which is the real monotonic clock unless a test paused it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// A clock to read wall and monotonic time from; cheap to clone, shared by clones.
#[derive(Debug, Clone)]
pub struct Clock(Kind);

#[derive(Debug, Clone)]
enum Kind {
    System,
    Fixed(Arc<AtomicI64>),
    FollowingTokio {
        base_ms: i64,
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// The machine's clocks.
    pub fn system() -> Clock {
        Clock(Kind::System)
    }

    /// Wall time fixed at `ms` until [`Clock::set_ms`] or [`Clock::advance`] moves it.
    pub fn fixed(ms: i64) -> Clock {
        Clock(Kind::Fixed(Arc::new(AtomicI64::new(ms))))
    }

    /// Wall time `base_ms` now, then moving with tokio's clock (paused or not).
    pub fn following_tokio(base_ms: i64) -> Clock {
        Clock(Kind::FollowingTokio {
            base_ms,
            origin: tokio_instant(),
        })
    }

    /// Wall time: ms since the Unix epoch (0 if the machine's clock is before 1970).
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Kind::System => system_ms(),
            Kind::Fixed(ms) => ms.load(Ordering::SeqCst),
            Kind::FollowingTokio { base_ms, origin } => {
                let since = tokio_instant().saturating_duration_since(*origin);
                base_ms.saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
            }
        }
    }

    /// Monotonic time, for deadlines and rates; tokio's, so paused tests control it.
    pub fn instant(&self) -> Instant {
        tokio_instant().into_std()
    }

    /// The same as [`Clock::instant`], as tokio's type (for `sleep_until`).
    pub fn tokio_instant(&self) -> tokio::time::Instant {
        tokio_instant()
    }

    /// Sets a [`Clock::fixed`] clock's wall time; ignored by the other kinds.
    pub fn set_ms(&self, ms: i64) {
        if let Kind::Fixed(at) = &self.0 {
            at.store(ms, Ordering::SeqCst);
        }
    }

    /// Moves a [`Clock::fixed`] clock's wall time forward; ignored by the other kinds.
    pub fn advance(&self, by: Duration) {
        if let Kind::Fixed(at) = &self.0 {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            at.fetch_add(by, Ordering::SeqCst);
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

// The only reads of the machine's clocks in fumegrid (see the module docs and clippy.toml).
#[allow(clippy::disallowed_methods)]
fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[allow(clippy::disallowed_methods)]
fn tokio_instant() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told() {
        let c = Clock::fixed(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_secs(2));
        assert_eq!(shared.now_ms(), 3_000, "clones share the time");
        c.set_ms(5);
        assert_eq!(shared.now_ms(), 5);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().now_ms() > 1_577_836_800_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_paused_tokio_moves_with_its_sleeps() {
        let c = Clock::following_tokio(1_000);
        let t0 = c.instant();
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        assert_eq!(c.now_ms(), 1_000 + 86_400_000);
        assert_eq!(c.instant() - t0, Duration::from_secs(86_400));
    }
}
