//! Commands from the aggregator on `fumegrid/v1/{gateway}/cmd` (docs/wire.md#command): the pure
//! decision whether to carry one out.
//!
//! A command is sealed with the gateway's key like an ack; the uplink opens it
//! ([`fumegrid_common::wire::open`]) and hands it here with its clock. It is refused when it
//! names another gateway, has expired, was issued further in the future than the allowed clock
//! skew, expires further ahead than [`MAX_LIFETIME_MS`] (so the memory of executed ids stays
//! bounded), or was carried out already (a replay). Executed ids are remembered with their
//! expiry until the expiry is [`SKEW_MS`] in the past — after that a replay is refused as
//! expired anyway — and kept durably in the outbox's state ([`STATE_KEY`]), so a restart does
//! not open a window for replays.

use std::collections::BTreeMap;

use fumegrid_common::wire::Command;
use serde::{Deserialize, Serialize};

/// Allowed difference between the aggregator's clock and the gateway's.
pub const SKEW_MS: i64 = 5 * 60_000;
/// Longest a command may stay valid from now: 1 hour.
pub const MAX_LIFETIME_MS: i64 = 3_600_000;
/// Most executed ids remembered at once; a command beyond that is refused as `busy`.
pub const MAX_REMEMBERED: usize = 10_000;
/// The outbox state key of [`Executed`].
pub const STATE_KEY: &str = "uplink/commands";

/// Ids of executed commands and their expiry (ms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    ids: BTreeMap<String, i64>,
}

impl Executed {
    /// From the outbox state; unreadable state is reported and starts empty (a replay of a
    /// command executed before is then possible only within its expiry).
    pub fn load(bytes: Option<&[u8]>) -> (Executed, Option<String>) {
        match bytes.map(serde_json::from_slice::<Executed>) {
            None => (Executed::default(), None),
            Some(Ok(e)) => (e, None),
            Some(Err(e)) => (Executed::default(), Some(e.to_string())),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Forgets an id that was judged executable but could not be carried out, so that the
    /// aggregator may send it again.
    pub fn forget(&mut self, id: &str) {
        self.ids.remove(id);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What to do with a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Carry it out; `executed` now remembers it (store it before acting).
    Execute(Command),
    /// Refuse it: `outcome` is the metric label, `message` goes into the `command_refused`
    /// event.
    Refuse {
        outcome: &'static str,
        message: String,
    },
}

/// Judges `cmd` at `now_ms` for gateway `gateway`, remembering it in `executed` if it is to be
/// carried out. Pure.
pub fn judge(gateway: &str, executed: &mut Executed, cmd: Command, now_ms: i64) -> Verdict {
    executed
        .ids
        .retain(|_, expires| expires.saturating_add(SKEW_MS) >= now_ms);
    let id = fumegrid_common::text::clip(&cmd.id, 64).to_string();
    let refuse = |outcome: &'static str, why: String| Verdict::Refuse {
        outcome,
        message: format!("command {id:?} refused: {why}"),
    };
    if cmd.gateway != gateway {
        let named = fumegrid_common::text::clip(&cmd.gateway, 64);
        return refuse(
            "wrong_gateway",
            format!("it is for gateway {named:?}, this is {gateway:?}"),
        );
    }
    if cmd.expires_ms <= now_ms {
        return refuse(
            "expired",
            format!(
                "expired at {} ms, {} ms before this gateway's clock",
                cmd.expires_ms,
                now_ms - cmd.expires_ms
            ),
        );
    }
    if cmd.issued_ms > now_ms.saturating_add(SKEW_MS) {
        return refuse(
            "future",
            format!(
                "issued at {} ms, {} ms ahead of this gateway's clock (allowed skew {SKEW_MS} ms)",
                cmd.issued_ms,
                cmd.issued_ms - now_ms
            ),
        );
    }
    if cmd.expires_ms > now_ms.saturating_add(MAX_LIFETIME_MS + SKEW_MS) {
        return refuse(
            "too_long",
            format!(
                "expires {} ms from now, more than the {MAX_LIFETIME_MS} ms allowed",
                cmd.expires_ms - now_ms
            ),
        );
    }
    if executed.ids.contains_key(&cmd.id) {
        return refuse("replayed", "it was carried out already".into());
    }
    if executed.ids.len() >= MAX_REMEMBERED {
        return refuse(
            "busy",
            format!("{MAX_REMEMBERED} commands are still valid; wait for some to expire"),
        );
    }
    executed.ids.insert(cmd.id.clone(), cmd.expires_ms);
    Verdict::Execute(cmd)
}

#[cfg(test)]
mod tests {
    use fumegrid_common::wire::Action;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn cmd(id: &str, issued: i64, expires: i64) -> Command {
        Command {
            id: id.into(),
            gateway: "gw-1".into(),
            issued_ms: issued,
            expires_ms: expires,
            action: Action::Snapshot {
                camera: Some("cam-1".into()),
                device: None,
                alarm: None,
            },
        }
    }

    fn outcome(v: &Verdict) -> &'static str {
        match v {
            Verdict::Execute(_) => "executed",
            Verdict::Refuse { outcome, .. } => outcome,
        }
    }

    #[test]
    fn a_valid_command_is_executed_once_and_its_replay_refused() {
        let mut ex = Executed::default();
        let c = cmd("c-1", NOW - 1000, NOW + 60_000);
        assert_eq!(
            judge("gw-1", &mut ex, c.clone(), NOW),
            Verdict::Execute(c.clone())
        );
        let v = judge("gw-1", &mut ex, c.clone(), NOW + 10);
        assert_eq!(outcome(&v), "replayed");
        // Across a restart: the remembered ids come back from the state.
        let (mut back, err) = Executed::load(Some(&ex.to_bytes()));
        assert_eq!(err, None);
        assert_eq!(outcome(&judge("gw-1", &mut back, c, NOW + 20)), "replayed");
    }

    #[test]
    fn expired_future_too_long_and_wrong_gateway_are_refused_with_a_message() {
        let mut ex = Executed::default();
        let cases = [
            (cmd("a", NOW - 60_000, NOW - 1), "expired", "expired at"),
            (cmd("b", NOW - 60_000, NOW), "expired", "0 ms before"),
            (
                cmd("c", NOW + SKEW_MS + 1, NOW + SKEW_MS + 60_000),
                "future",
                "ahead of this gateway's clock",
            ),
            (
                cmd("d", NOW, NOW + MAX_LIFETIME_MS + SKEW_MS + 1),
                "too_long",
                "more than",
            ),
            (
                Command {
                    gateway: "gw-2".into(),
                    ..cmd("e", NOW, NOW + 1000)
                },
                "wrong_gateway",
                "\"gw-2\"",
            ),
        ];
        for (c, want, text) in cases {
            let id = c.id.clone();
            match judge("gw-1", &mut ex, c, NOW) {
                Verdict::Refuse { outcome, message } => {
                    assert_eq!(outcome, want, "{message}");
                    assert!(message.contains(text), "{message}");
                    assert!(message.contains(&format!("{id:?}")), "{message}");
                }
                v => panic!("{id}: {v:?}"),
            }
        }
        assert!(ex.is_empty(), "nothing refused is remembered");
        // Within the skew is fine.
        let c = cmd("f", NOW + SKEW_MS, NOW + SKEW_MS + 1000);
        assert_eq!(outcome(&judge("gw-1", &mut ex, c, NOW)), "executed");
    }

    #[test]
    fn executed_ids_are_forgotten_only_when_a_replay_would_be_expired_anyway() {
        let mut ex = Executed::default();
        let c = cmd("c-1", NOW, NOW + 1000);
        assert_eq!(outcome(&judge("gw-1", &mut ex, c.clone(), NOW)), "executed");
        // Just expired: refused as expired; still remembered while a clock step back could
        // make it look valid again.
        assert_eq!(
            outcome(&judge("gw-1", &mut ex, c.clone(), NOW + 1000)),
            "expired"
        );
        assert_eq!(ex.len(), 1);
        assert_eq!(
            outcome(&judge(
                "gw-1",
                &mut ex,
                c.clone(),
                NOW + 1000 - SKEW_MS + 500
            )),
            "replayed",
            "the clock stepped back"
        );
        let later = cmd("c-2", NOW + 1000 + SKEW_MS + 1, NOW + 1000 + SKEW_MS + 5000);
        judge("gw-1", &mut ex, later, NOW + 1000 + SKEW_MS + 1);
        assert_eq!(ex.len(), 1, "c-1 forgotten, c-2 remembered");
    }

    #[test]
    fn unreadable_state_starts_empty_and_says_why() {
        let (ex, err) = Executed::load(Some(b"not json"));
        assert!(ex.is_empty());
        assert!(err.is_some());
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut ex = Executed::default();
        for i in 0..MAX_REMEMBERED {
            let c = cmd(&format!("c-{i}"), NOW, NOW + 60_000);
            assert_eq!(outcome(&judge("gw-1", &mut ex, c, NOW)), "executed");
        }
        let c = cmd("one-more", NOW, NOW + 60_000);
        assert_eq!(outcome(&judge("gw-1", &mut ex, c, NOW)), "busy");
    }
}
