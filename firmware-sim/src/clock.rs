//! Wall time → scenario time. `--start-at S` is the scenario time at `origin`, `--speed X` the
//! scenario seconds per wall second (0 freezes the scenario at `start_at`).

use std::time::Instant;

/// Maps an [`Instant`] to scenario seconds. Copyable so every server task holds its own.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    pub origin: Instant,
    pub start_at: f64,
    pub speed: f64,
}

impl SimClock {
    pub fn new(start_at: f64, speed: f64) -> SimClock {
        SimClock {
            origin: instant(),
            start_at,
            speed,
        }
    }

    /// Scenario seconds at `now` (never before `start_at`).
    pub fn at(&self, now: Instant) -> f64 {
        let wall = now.saturating_duration_since(self.origin).as_secs_f64();
        self.start_at + wall * self.speed
    }

    pub fn now(&self) -> f64 {
        self.at(instant())
    }
}

/// The simulator's one read of the machine's monotonic clock (`clippy.toml` bans `Instant::now`
/// elsewhere). The simulator is a device, not a daemon: it keeps real RS-485 timing, so this is
/// the real clock, never a test's.
#[allow(clippy::disallowed_methods)]
pub fn instant() -> Instant {
    Instant::now()
}

/// The simulator's one read of wall time: a simulated drone's GPS clock (`time_utc` of its
/// photos), microseconds since the Unix epoch. A device's clock, not a daemon's.
#[allow(clippy::disallowed_methods)]
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn speed_and_start_at() {
        let c = SimClock::new(100.0, 10.0);
        let t = c.at(c.origin + Duration::from_millis(1500));
        assert!((t - 115.0).abs() < 1e-9);
        let frozen = SimClock { speed: 0.0, ..c };
        assert_eq!(frozen.at(c.origin + Duration::from_secs(99)), 100.0);
    }
}
