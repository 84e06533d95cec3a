//! "Log the first one, then at most once per interval with the number in between", per key: the
//! rate limit of the WARN lines for refused messages and connections (the metric counts every
//! one; the log only says it goes on). Pure: the caller passes `now` from its clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per-key log rate limit (see the module doc). At most `max_keys` keys are remembered; events
/// of a key beyond them are not logged (the caller's metric still counts them).
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: Duration,
    max_keys: usize,
    /// key → (last logged, events since then)
    keys: HashMap<K, (Instant, u64)>,
}

impl<K: Eq + Hash> LogLimiter<K> {
    pub fn new(interval: Duration, max_keys: usize) -> LogLimiter<K> {
        LogLimiter {
            interval,
            max_keys,
            keys: HashMap::new(),
        }
    }

    /// `Some(events suppressed since the last line)` when this event of `key` is to be logged.
    pub fn should_log(&mut self, key: K, now: Instant) -> Option<u64> {
        let full = self.keys.len() >= self.max_keys;
        match self.keys.get_mut(&key) {
            Some((last, n)) if now.duration_since(*last) >= self.interval => {
                let suppressed = *n;
                (*last, *n) = (now, 0);
                Some(suppressed)
            }
            Some((_, n)) => {
                *n += 1;
                None
            }
            None if full => None,
            None => {
                self.keys.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // Any origin will do: only the differences from it matter.
    #[allow(clippy::disallowed_methods)]
    fn logs_once_per_key_then_once_per_interval() {
        let every = Duration::from_secs(60);
        let mut log = LogLimiter::new(every, 3);
        let t0 = Instant::now();
        assert_eq!(log.should_log(("a", 1), t0), Some(0));
        assert_eq!(log.should_log(("a", 1), t0), None);
        assert_eq!(log.should_log(("a", 1), t0 + every / 2), None);
        assert_eq!(log.should_log(("a", 2), t0), Some(0));
        assert_eq!(log.should_log(("b", 1), t0), Some(0));
        assert_eq!(log.should_log(("a", 1), t0 + every), Some(2));
        assert_eq!(log.should_log(("a", 1), t0 + every), None);
        // A fourth key is not remembered, hence never logged.
        assert_eq!(log.should_log(("c", 1), t0), None);
        assert_eq!(log.should_log(("c", 1), t0 + 2 * every), None);
    }
}
