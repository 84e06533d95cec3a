//! Per-slave circuit breaker: after `failures` consecutive failed polls the slave is only
//! probed every `probe_interval`, so a dead monitor costs its bus one timeout per probe instead
//! of one per poll. Pure: time is passed in.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        consecutive_failures: u32,
    },
    /// Polls are skipped until `probe_at`; then one probe decides.
    Open {
        probe_at: Instant,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    failures: u32,
    probe_interval: Duration,
    state: State,
    trips: u64,
}

impl Breaker {
    pub fn new(failures: u32, probe_interval: Duration) -> Breaker {
        Breaker {
            failures: failures.max(1),
            probe_interval,
            state: State::Closed {
                consecutive_failures: 0,
            },
            trips: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// How many times the breaker has opened.
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// The earliest time the slave may be polled, given when it is next due.
    pub fn next_attempt(&self, due: Instant) -> Instant {
        match self.state {
            State::Closed { .. } => due,
            State::Open { probe_at } => probe_at.max(due),
        }
    }

    /// Records the outcome of a poll (or probe) finished at `now`. Returns `true` when this
    /// outcome opened the breaker.
    pub fn record(&mut self, ok: bool, now: Instant) -> bool {
        match (self.state, ok) {
            (_, true) => {
                self.state = State::Closed {
                    consecutive_failures: 0,
                };
                false
            }
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) => {
                let n = consecutive_failures + 1;
                if n >= self.failures {
                    self.state = State::Open {
                        probe_at: now + self.probe_interval,
                    };
                    self.trips += 1;
                    true
                } else {
                    self.state = State::Closed {
                        consecutive_failures: n,
                    };
                    false
                }
            }
            (State::Open { .. }, false) => {
                self.state = State::Open {
                    probe_at: now + self.probe_interval,
                };
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_and_probes_periodically() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        assert!(!b.record(false, t0));
        assert!(!b.record(false, t0));
        assert_eq!(b.next_attempt(t0), t0, "still closed after two failures");
        assert!(b.record(false, t0), "third failure opens");
        assert_eq!(b.next_attempt(t0), t0 + Duration::from_secs(10));
        // A failed probe pushes the next probe out by one interval, and does not count a new trip.
        let t1 = t0 + Duration::from_secs(10);
        assert!(!b.record(false, t1));
        assert_eq!(b.next_attempt(t1), t1 + Duration::from_secs(10));
        assert_eq!(b.trips(), 1);
        // A successful probe closes it.
        b.record(true, t1 + Duration::from_secs(10));
        assert_eq!(
            b.state(),
            State::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record(false, t0);
        b.record(true, t0);
        assert!(!b.record(false, t0), "count restarted after a success");
        assert!(!b.is_open());
    }
}
