//! The pure decision on one MQTT message: `(topic, payload, keys) → Batch | Reject`.
//!
//! Order matters for security and cost: size first (cheap), then the topic names a known gateway,
//! then the MAC with *that* gateway's key over the exact bytes (so gateway A cannot publish as
//! B, and nothing unauthenticated is parsed further), then the strict JSON schema, then the
//! contents (body gateway = topic gateway, stream, seqs, then each item: [`check_alarm`] for
//! alarm transitions).

use std::collections::HashSet;

use fumegrid_common::wire::{self, Alarm, AlarmPhase, Batch, Body, Channel, SealError, Status};

use crate::config::Keys;

/// Why a message was refused. The `name` is the counter key in `/api/v1/stats` and the `reason`
/// field of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Payload larger than `broker.max_payload_bytes`.
    Oversized,
    /// Topic is not `fumegrid/v1/{gateway}/up|status`.
    BadTopic,
    /// No key for the topic's gateway.
    UnknownGateway,
    /// Not a sealed payload (no trailing `"mac"` member).
    NoMac,
    /// MAC does not verify with the topic gateway's key.
    BadMac,
    /// Signed, but not valid JSON of the expected shape.
    Malformed,
    /// Signed, but with a field the contract does not know.
    UnknownField,
    /// `batch.gateway` differs from the topic's gateway.
    GatewayMismatch,
    /// `stream` empty or longer than 128 characters.
    BadStream,
    /// No items, a seq twice in one batch, or too many items.
    BadSeq,
    /// An item whose contents break the contract: a device id empty or longer than 128
    /// characters; an alarm with an id empty or longer than 256, `started_ms` after `ts_ms`,
    /// `cleared_ms` missing with `cleared` (or present without it, or before `started_ms`), or
    /// a value, peak or limit that is not finite.
    BadItem,
    /// A `status` message that is not a `Status` document.
    BadStatus,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Oversized,
        Reason::BadTopic,
        Reason::UnknownGateway,
        Reason::NoMac,
        Reason::BadMac,
        Reason::Malformed,
        Reason::UnknownField,
        Reason::GatewayMismatch,
        Reason::BadStream,
        Reason::BadSeq,
        Reason::BadItem,
        Reason::BadStatus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::BadTopic => "bad_topic",
            Reason::UnknownGateway => "unknown_gateway",
            Reason::NoMac => "no_mac",
            Reason::BadMac => "bad_mac",
            Reason::Malformed => "malformed",
            Reason::UnknownField => "unknown_field",
            Reason::GatewayMismatch => "gateway_mismatch",
            Reason::BadStream => "bad_stream",
            Reason::BadSeq => "bad_seq",
            Reason::BadItem => "bad_item",
            Reason::BadStatus => "bad_status",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A refused message: why, which gateway the topic named (if any), and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Reject {
    pub reason: Reason,
    pub gateway: Option<String>,
    pub detail: String,
}

fn reject(reason: Reason, gateway: Option<&str>, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        gateway: gateway.map(str::to_string),
        detail: detail.into(),
    }
}

/// Limits applied before and after parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_items: usize,
}

/// Longest stream or device id accepted.
const MAX_ID: usize = 128;
/// Longest alarm episode id accepted (`{device}:{kind}[:{metric}]:{started_ms}` fits).
const MAX_ALARM_ID: usize = 256;

/// Validates one `up` message. Pure.
pub fn validate_up(
    topic: &str,
    payload: &[u8],
    keys: &Keys,
    limits: Limits,
) -> Result<Batch, Reject> {
    if payload.len() > limits.max_payload_bytes {
        return Err(reject(
            Reason::Oversized,
            wire::parse_topic(topic).map(|(g, _)| g),
            format!(
                "{} bytes, limit {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let gw = match wire::parse_topic(topic) {
        Some((gw, Channel::Up)) => gw,
        _ => {
            return Err(reject(
                Reason::BadTopic,
                None,
                format!("`{}` is not fumegrid/v1/{{gateway}}/up", truncate(topic)),
            ));
        }
    };
    let Some(key) = keys.get(gw) else {
        return Err(reject(
            Reason::UnknownGateway,
            Some(gw),
            "no key configured for this gateway",
        ));
    };
    let batch: Batch = wire::open(payload, key).map_err(|e| match e {
        SealError::NoMac => reject(Reason::NoMac, Some(gw), e.to_string()),
        SealError::BadMac => reject(Reason::BadMac, Some(gw), e.to_string()),
        SealError::Json(m) if m.contains("unknown field") => {
            reject(Reason::UnknownField, Some(gw), m)
        }
        SealError::Json(m) => reject(Reason::Malformed, Some(gw), m),
    })?;
    if batch.gateway != gw {
        return Err(reject(
            Reason::GatewayMismatch,
            Some(gw),
            format!(
                "batch says gateway `{}`, topic says `{gw}`",
                truncate(&batch.gateway)
            ),
        ));
    }
    if batch.stream.is_empty() || batch.stream.len() > MAX_ID {
        return Err(reject(
            Reason::BadStream,
            Some(gw),
            format!("stream id must be 1..={MAX_ID} characters"),
        ));
    }
    if batch.items.is_empty() {
        return Err(reject(Reason::BadSeq, Some(gw), "batch has no items"));
    }
    if batch.items.len() > limits.max_items {
        return Err(reject(
            Reason::BadSeq,
            Some(gw),
            format!("{} items, limit {}", batch.items.len(), limits.max_items),
        ));
    }
    // Seqs usually arrive ascending; only then is the cheap check enough.
    let ascending = batch.items.windows(2).all(|w| w[0].seq < w[1].seq);
    if !ascending {
        let mut seen = HashSet::with_capacity(batch.items.len());
        if let Some(dup) = batch.items.iter().find(|i| !seen.insert(i.seq)) {
            return Err(reject(
                Reason::BadSeq,
                Some(gw),
                format!("seq {} appears twice in one batch", dup.seq),
            ));
        }
    }
    for item in &batch.items {
        let bad = match &item.body {
            Body::Reading(r) => check_device(&r.device).err(),
            Body::Alarm(a) => check_alarm(a).err(),
            Body::Event(_) => None,
        };
        if let Some(why) = bad {
            return Err(reject(
                Reason::BadItem,
                Some(gw),
                format!("seq {}: {why}", item.seq),
            ));
        }
    }
    Ok(batch)
}

fn check_device(device: &str) -> Result<(), String> {
    if device.is_empty() || device.len() > MAX_ID {
        return Err(format!("device id must be 1..={MAX_ID} characters"));
    }
    Ok(())
}

/// The contents of one alarm transition: ids, time order, `cleared_ms` with `cleared` only,
/// finite numbers. Pure; the message says which rule and the values involved.
pub fn check_alarm(a: &Alarm) -> Result<(), String> {
    if a.id.is_empty() || a.id.len() > MAX_ALARM_ID {
        return Err(format!(
            "alarm id must be 1..={MAX_ALARM_ID} characters, got {}",
            a.id.len()
        ));
    }
    check_device(&a.device).map_err(|e| format!("alarm `{}`: {e}", truncate(&a.id)))?;
    let id = truncate(&a.id);
    if a.started_ms > a.ts_ms {
        return Err(format!(
            "alarm `{id}`: started_ms {} is after ts_ms {}",
            a.started_ms, a.ts_ms
        ));
    }
    match (a.phase, a.cleared_ms) {
        (AlarmPhase::Cleared, None) => {
            return Err(format!("alarm `{id}`: phase cleared without cleared_ms"));
        }
        (AlarmPhase::Cleared, Some(c)) if c < a.started_ms => {
            return Err(format!(
                "alarm `{id}`: cleared_ms {c} is before started_ms {}",
                a.started_ms
            ));
        }
        (AlarmPhase::Raised | AlarmPhase::Updated, Some(_)) => {
            return Err(format!(
                "alarm `{id}`: cleared_ms is only allowed with phase cleared"
            ));
        }
        _ => {}
    }
    for (name, v) in [("value", a.value), ("peak", a.peak), ("limit", a.limit)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(format!("alarm `{id}`: {name} is not a finite number"));
        }
    }
    Ok(())
}

/// Validates one `status` message (plain JSON, not sealed: it is also the broker-published Last
/// Will). Returns the gateway and its status. Pure.
pub fn validate_status<'t>(
    topic: &'t str,
    payload: &[u8],
    keys: &Keys,
) -> Result<(&'t str, Status), Reject> {
    if payload.len() > 4096 {
        return Err(reject(Reason::Oversized, None, "status over 4096 bytes"));
    }
    let gw = match wire::parse_topic(topic) {
        Some((gw, Channel::Status)) => gw,
        _ => {
            return Err(reject(
                Reason::BadTopic,
                None,
                format!(
                    "`{}` is not fumegrid/v1/{{gateway}}/status",
                    truncate(topic)
                ),
            ));
        }
    };
    if keys.get(gw).is_none() {
        return Err(reject(
            Reason::UnknownGateway,
            Some(gw),
            "status of a gateway with no key",
        ));
    }
    let status: Status = serde_json::from_slice(payload)
        .map_err(|e| reject(Reason::BadStatus, Some(gw), e.to_string()))?;
    Ok((gw, status))
}

/// Inclusive ranges covering `seqs`, merged: `[1,2,3,5]` → `[(1,3),(5,5)]`.
pub fn ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut v: Vec<u64> = seqs.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in v {
        match out.last_mut() {
            Some((_, to)) if to.checked_add(1) == Some(s) => *to = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn truncate(s: &str) -> &str {
    fumegrid_common::text::clip(s, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Item, State, seal, topic};

    const KEY_A: &[u8] = b"key-of-gateway-a-32-bytes-long!!";
    const KEY_B: &[u8] = b"key-of-gateway-b-32-bytes-long!!";

    fn keys() -> Keys {
        Keys::new([
            ("gw-a".to_string(), KEY_A.to_vec()),
            ("gw-b".to_string(), KEY_B.to_vec()),
        ])
    }

    const LIMITS: Limits = Limits {
        max_payload_bytes: 64 * 1024,
        max_items: 100,
    };

    fn batch(gw: &str, seqs: &[u64]) -> Batch {
        Batch {
            gateway: gw.into(),
            stream: "s1".into(),
            sent_ms: 1,
            items: seqs
                .iter()
                .map(|&seq| Item {
                    seq,
                    body: Body::Reading(Reading {
                        device: "rest-1".into(),
                        metric: Metric::FumeMgM3,
                        value: Some(1.5),
                        quality: Quality::Ok,
                        ts_ms: 1000 + seq as i64,
                    }),
                })
                .collect(),
        }
    }

    fn up(gw: &str) -> String {
        topic(gw, Channel::Up)
    }

    fn reason(r: Result<Batch, Reject>) -> Reason {
        r.expect_err("should be rejected").reason
    }

    #[test]
    fn good_batch_is_accepted() {
        let b = batch("gw-a", &[1, 2, 3]);
        let got = validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS);
        assert_eq!(got, Ok(b));
    }

    #[test]
    fn unknown_gateway() {
        let b = batch("gw-x", &[1]);
        let r = validate_up(&up("gw-x"), &seal(&b, KEY_A), &keys(), LIMITS);
        assert_eq!(reason(r.clone()), Reason::UnknownGateway);
        assert_eq!(r.expect_err("rejected").gateway.as_deref(), Some("gw-x"));
    }

    #[test]
    fn bad_mac_and_no_mac() {
        let b = batch("gw-a", &[1]);
        let mut p = seal(&b, KEY_A);
        let n = p.len();
        p[n - 5] = if p[n - 5] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            reason(validate_up(&up("gw-a"), &p, &keys(), LIMITS)),
            Reason::BadMac
        );
        let plain = serde_json::to_vec(&b).expect("json");
        assert_eq!(
            reason(validate_up(&up("gw-a"), &plain, &keys(), LIMITS)),
            Reason::NoMac
        );
    }

    #[test]
    fn gateway_a_cannot_publish_as_b() {
        // A seals with its own key but publishes on B's topic (body says A or B): B's key fails.
        for body_gw in ["gw-a", "gw-b"] {
            let p = seal(&batch(body_gw, &[1]), KEY_A);
            assert_eq!(
                reason(validate_up(&up("gw-b"), &p, &keys(), LIMITS)),
                Reason::BadMac
            );
        }
        // A on its own topic, claiming to be B in the body.
        let p = seal(&batch("gw-b", &[1]), KEY_A);
        assert_eq!(
            reason(validate_up(&up("gw-a"), &p, &keys(), LIMITS)),
            Reason::GatewayMismatch
        );
    }

    #[test]
    fn malformed_json_and_unknown_field() {
        let junk =
            serde_json::json!({"gateway": "gw-a", "stream": "s", "items": "nope", "sent_ms": 1});
        assert_eq!(
            reason(validate_up(
                &up("gw-a"),
                &seal(&junk, KEY_A),
                &keys(),
                LIMITS
            )),
            Reason::Malformed
        );
        let extra = serde_json::json!({"gateway": "gw-a", "stream": "s", "sent_ms": 1, "items": [], "extra": 1});
        assert_eq!(
            reason(validate_up(
                &up("gw-a"),
                &seal(&extra, KEY_A),
                &keys(),
                LIMITS
            )),
            Reason::UnknownField
        );
        assert_eq!(
            reason(validate_up(
                &up("gw-a"),
                b"\xff\x00garbage",
                &keys(),
                LIMITS
            )),
            Reason::NoMac
        );
    }

    #[test]
    fn oversized_topic_stream_seq_item() {
        let big = batch("gw-a", &(0..99).collect::<Vec<_>>());
        let p = seal(&big, KEY_A);
        let small = Limits {
            max_payload_bytes: 1000,
            ..LIMITS
        };
        assert_eq!(
            reason(validate_up(&up("gw-a"), &p, &keys(), small)),
            Reason::Oversized
        );
        let ok = seal(&batch("gw-a", &[1]), KEY_A);
        assert_eq!(
            reason(validate_up("fumegrid/v1/gw-a/ack", &ok, &keys(), LIMITS)),
            Reason::BadTopic
        );
        assert_eq!(
            reason(validate_up("x/y", &ok, &keys(), LIMITS)),
            Reason::BadTopic
        );
        let mut s = batch("gw-a", &[1]);
        s.stream.clear();
        assert_eq!(
            reason(validate_up(&up("gw-a"), &seal(&s, KEY_A), &keys(), LIMITS)),
            Reason::BadStream
        );
        for seqs in [&[][..], &[3, 1, 3][..]] {
            let b = batch("gw-a", seqs);
            assert_eq!(
                reason(validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS)),
                Reason::BadSeq
            );
        }
        let b = batch("gw-a", &(0..101).collect::<Vec<_>>());
        assert_eq!(
            reason(validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS)),
            Reason::BadSeq
        );
        let mut d = batch("gw-a", &[1]);
        if let Body::Reading(r) = &mut d.items[0].body {
            r.device.clear();
        }
        assert_eq!(
            reason(validate_up(&up("gw-a"), &seal(&d, KEY_A), &keys(), LIMITS)),
            Reason::BadItem
        );
        // Out of order but unique is fine.
        let b = batch("gw-a", &[5, 1, 3]);
        assert!(validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS).is_ok());
    }

    fn alarm(phase: AlarmPhase) -> Alarm {
        Alarm {
            id: "rest-1:exceedance:fume_mg_m3:1000".into(),
            device: "rest-1".into(),
            kind: fumegrid_common::wire::AlarmKind::Exceedance,
            metric: Some(Metric::FumeMgM3),
            phase,
            started_ms: 1000,
            ts_ms: 5000,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(5000),
            value: Some(2.5),
            peak: Some(2.8),
            peak_ms: Some(3000),
            limit: Some(2.0),
            suppressed: false,
            message: "10-min average 2.5 mg/m³ over the 2.0 limit".into(),
        }
    }

    fn with_alarm(a: Alarm) -> Batch {
        let mut b = batch("gw-a", &[1, 2]);
        b.items[1].body = Body::Alarm(a);
        b
    }

    #[test]
    fn good_alarms_are_accepted() {
        for phase in [AlarmPhase::Raised, AlarmPhase::Updated, AlarmPhase::Cleared] {
            let b = with_alarm(alarm(phase));
            let got = validate_up(&up("gw-a"), &seal(&b, KEY_A), &keys(), LIMITS);
            assert_eq!(got, Ok(b), "{phase:?}");
        }
        // Optional numbers absent, started = ts, no metric (device_offline).
        let mut a = alarm(AlarmPhase::Raised);
        a.kind = fumegrid_common::wire::AlarmKind::DeviceOffline;
        (a.metric, a.value, a.peak, a.peak_ms, a.limit) = (None, None, None, None, None);
        a.started_ms = a.ts_ms;
        a.id = "x".repeat(256);
        assert!(check_alarm(&a).is_ok());
    }

    #[test]
    fn bad_alarms_are_bad_item_with_a_detail() {
        let cases: Vec<(Alarm, &str)> = vec![
            (
                Alarm {
                    id: String::new(),
                    ..alarm(AlarmPhase::Raised)
                },
                "alarm id must be 1..=256 characters",
            ),
            (
                Alarm {
                    id: "x".repeat(257),
                    ..alarm(AlarmPhase::Raised)
                },
                "alarm id must be 1..=256 characters, got 257",
            ),
            (
                Alarm {
                    device: String::new(),
                    ..alarm(AlarmPhase::Raised)
                },
                "device id must be 1..=128 characters",
            ),
            (
                Alarm {
                    device: "d".repeat(129),
                    ..alarm(AlarmPhase::Updated)
                },
                "device id must be 1..=128 characters",
            ),
            (
                Alarm {
                    started_ms: 6000,
                    ..alarm(AlarmPhase::Raised)
                },
                "started_ms 6000 is after ts_ms 5000",
            ),
            (
                Alarm {
                    cleared_ms: None,
                    ..alarm(AlarmPhase::Cleared)
                },
                "phase cleared without cleared_ms",
            ),
            (
                Alarm {
                    cleared_ms: Some(500),
                    ..alarm(AlarmPhase::Cleared)
                },
                "cleared_ms 500 is before started_ms 1000",
            ),
            (
                Alarm {
                    cleared_ms: Some(5000),
                    ..alarm(AlarmPhase::Updated)
                },
                "cleared_ms is only allowed with phase cleared",
            ),
            (
                Alarm {
                    value: Some(f64::NAN),
                    ..alarm(AlarmPhase::Raised)
                },
                "value is not a finite number",
            ),
            (
                Alarm {
                    peak: Some(f64::INFINITY),
                    ..alarm(AlarmPhase::Raised)
                },
                "peak is not a finite number",
            ),
            (
                Alarm {
                    limit: Some(f64::NEG_INFINITY),
                    ..alarm(AlarmPhase::Raised)
                },
                "limit is not a finite number",
            ),
        ];
        for (a, want) in cases {
            let why = check_alarm(&a).expect_err(want);
            assert!(why.contains(want), "{why} does not say {want}");
            // Non-finite numbers cannot be written as JSON; the others go through validate_up.
            if !want.contains("finite") {
                let r = validate_up(&up("gw-a"), &seal(&with_alarm(a), KEY_A), &keys(), LIMITS)
                    .expect_err(want);
                assert_eq!(r.reason, Reason::BadItem);
                assert!(r.detail.starts_with("seq 2: "), "{}", r.detail);
                assert!(r.detail.contains(want), "{}", r.detail);
            }
        }
    }

    #[test]
    fn status_documents() {
        let t = topic("gw-a", Channel::Status);
        let (gw, s) =
            validate_status(&t, br#"{"state":"online","ts_ms":5}"#, &keys()).expect("valid");
        assert_eq!((gw, s.state), ("gw-a", State::Online));
        assert_eq!(
            validate_status(&t, b"{\"state\":\"sleepy\"}", &keys())
                .expect_err("bad")
                .reason,
            Reason::BadStatus
        );
        assert_eq!(
            validate_status(
                &topic("gw-z", Channel::Status),
                b"{\"state\":\"online\"}",
                &keys()
            )
            .expect_err("unknown")
            .reason,
            Reason::UnknownGateway
        );
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(ranges([5, 1, 2, 3, 3, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
        assert_eq!(ranges([]), Vec::<(u64, u64)>::new());
        assert_eq!(
            ranges([u64::MAX, u64::MAX - 1]),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn reason_indices_match_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
