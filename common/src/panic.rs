//! Which panics a daemon survives.
//!
//! The release profile unwinds (`panic = "unwind"`), so that the aggregator can turn a bug in
//! one HTTP handler into a 500 for that request (tower-http's `CatchPanicLayer`) instead of
//! losing its broker and ingest with it. Everywhere else a panic still ends the process at once,
//! as `panic = "abort"` did: [`install_hook`] aborts after the default report unless the panic
//! happened inside [`contained`] code (an HTTP handler being polled, a store read it started).
//! A panicked ingest loop or outbox therefore never limps on half-dead; systemd restarts the
//! daemon.

use std::cell::Cell;

thread_local! {
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
}

struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Runs `f` with its panics allowed to unwind to a catcher (see the module doc).
pub fn contained<R>(f: impl FnOnce() -> R) -> R {
    CONTAINED.with(|c| c.set(c.get() + 1));
    let _leave = Leave;
    f()
}

/// Whether the current thread is inside [`contained`].
pub fn is_contained() -> bool {
    CONTAINED.with(Cell::get) > 0
}

/// Installs the process-wide panic hook (once per process; later calls add nothing): the
/// default report, then `abort` unless the panic is [`contained`].
pub fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            if !is_contained() {
                std::process::abort();
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_nests_and_unwinds() {
        assert!(!is_contained());
        contained(|| {
            assert!(is_contained());
            contained(|| assert!(is_contained()));
            assert!(is_contained());
        });
        assert!(!is_contained());
        let r = std::panic::catch_unwind(|| contained(|| panic!("boom")));
        assert!(r.is_err());
        assert!(!is_contained(), "the count is restored on unwind");
    }
}
