//! Webhooks to departments: the notifier delivers the queued notifications (schema v4).
//!
//! Each notification announces one case event to one department. The body is JSON
//! (`{"notification", "department", "case", "event"}`); the request carries
//! `X-Fumegrid-Signature: sha256=<hex HMAC-SHA256 of the body with the department's secret>`,
//! `X-Fumegrid-Delivery: <notification id>` (the receiver dedupes on it: a retry after a lost
//! answer delivers it again) and `X-Fumegrid-Event: <event kind>`.
//!
//! A 2xx answer is delivered. Anything else (refused, timeout, 4xx, 5xx) is retried with
//! exponential backoff ([`backoff_ms`]: 1 s, 2 s, 4 s … capped at 5 min) until
//! [`MAX_ATTEMPTS`], then recorded as failed. Per department the oldest pending notification goes
//! first, so a department sees its events in order; a department whose endpoint is down holds
//! up only itself. The case engine never waits for any of this: it only queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cases::Catalogue;
use crate::store::StoreError;
use crate::store::notify_sql::{Attempt, Notification};
use crate::store::sqlite::SqliteWriter;

/// Attempts before a notification is given up as failed (about 12 h of retries at the cap).
pub const MAX_ATTEMPTS: u32 = 150;
/// Longest wait between attempts.
pub const MAX_BACKOFF_MS: i64 = 300_000;
/// Longest sleep of the notifier between looks at the queue.
pub const IDLE_POLL_MS: i64 = 1_000;
/// Per-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait before attempt `attempts + 1` after `attempts` failed ones (≥ 1). Pure.
pub fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (1000i64 << exp).min(MAX_BACKOFF_MS)
}

/// What to record after an attempt that got `status` (None: no answer) or `error`. Pure.
pub fn outcome(attempts_before: u32, status: Option<u16>, error: String, now_ms: i64) -> Attempt {
    if let Some(s) = status
        && (200..300).contains(&s)
    {
        return Attempt::Delivered { status: s };
    }
    let attempts = attempts_before + 1;
    if attempts >= MAX_ATTEMPTS {
        Attempt::Failed { status, error }
    } else {
        Attempt::Retry {
            status,
            error,
            next_ms: now_ms + backoff_ms(attempts),
        }
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Where and how to deliver to a department.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.url)
    }
}

/// Department id → endpoint: the catalogue's `webhook_url` with the secret from the config.
pub fn endpoints(
    catalogue: &Catalogue,
    secrets: &HashMap<String, Vec<u8>>,
) -> HashMap<String, Endpoint> {
    catalogue
        .departments
        .iter()
        .filter_map(|d| {
            let url = d.webhook_url.clone()?;
            let secret = secrets.get(&d.id)?.clone();
            Some((d.id.clone(), Endpoint { url, secret }))
        })
        .collect()
}

/// Webhook delivery events: [`NotifyStats::attempt`] counts one in Prometheus
/// (`fumegrid_webhook_deliveries_total`) and in the snapshot `/api/v1/stats` shows, and logs it.
#[derive(Debug, Default)]
pub struct NotifyStats {
    counts: Mutex<NotifyCounts>,
}

/// The `notifications` object of `/api/v1/stats`: attempts since start, by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NotifyCounts {
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub unrouted: u64,
}

impl NotifyStats {
    /// Records the attempt `a` at delivering `n` (department ids come from the catalogue).
    pub fn attempt(&self, n: &Notification, a: &Attempt, now_ms: i64) {
        let outcome = match a {
            Attempt::Delivered { .. } => "delivered",
            Attempt::Retry { .. } => "retried",
            Attempt::Failed { .. } => "failed",
            Attempt::Unrouted => "unrouted",
        };
        metrics::counter!(
            crate::telemetry::WEBHOOK_DELIVERIES,
            "department" => n.department.clone(),
            "outcome" => outcome
        )
        .increment(1);
        {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            match a {
                Attempt::Delivered { .. } => c.delivered += 1,
                Attempt::Retry { .. } => c.retried += 1,
                Attempt::Failed { .. } => c.failed += 1,
                Attempt::Unrouted => c.unrouted += 1,
            }
        }
        match a {
            Attempt::Delivered { .. } => {
                tracing::debug!(id = n.id, department = %n.department, case = %n.case_id, "webhook delivered");
            }
            Attempt::Retry { error, next_ms, .. } => {
                tracing::warn!(id = n.id, department = %n.department, case = %n.case_id, attempts = n.attempts + 1, %error, retry_in_ms = next_ms - now_ms, "webhook not delivered; will retry");
            }
            Attempt::Failed { error, .. } => {
                tracing::error!(id = n.id, department = %n.department, case = %n.case_id, %error, "webhook given up after {MAX_ATTEMPTS} attempts");
            }
            Attempt::Unrouted => {
                tracing::info!(id = n.id, department = %n.department, case = %n.case_id, "no webhook for the department; notification recorded only");
            }
        }
    }

    pub fn snapshot(&self) -> NotifyCounts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs until cancelled: delivers what is due, sleeps until the next retry or until woken.
pub async fn run(
    writer: Arc<Mutex<SqliteWriter>>,
    endpoints: HashMap<String, Endpoint>,
    wake: Arc<Notify>,
    stats: Arc<NotifyStats>,
    now_ms: fn() -> i64,
    cancel: CancellationToken,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("fumegrid-aggregator/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; notifications stay queued");
            return;
        }
    };
    loop {
        let batch = {
            let w = writer.clone();
            tokio::task::spawn_blocking(move || due_with_bodies(&w, now_ms()))
                .await
                .unwrap_or_else(|e| Err(StoreError::Malformed(e.to_string())))
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification queue");
                Vec::new()
            }
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for (n, body) in batch {
            if cancel.is_cancelled() {
                break;
            }
            let Some(ep) = endpoints.get(&n.department) else {
                outcomes.push((n, Attempt::Unrouted));
                continue;
            };
            let result = client
                .post(&ep.url)
                .header("content-type", "application/json")
                .header("x-fumegrid-signature", signature(&ep.secret, &body))
                .header("x-fumegrid-delivery", n.id.to_string())
                .header("x-fumegrid-event", n.kind.clone())
                .body(body)
                .send()
                .await;
            let (status, error) = match result {
                Ok(r) => {
                    let s = r.status();
                    (Some(s.as_u16()), format!("HTTP {s}"))
                }
                Err(e) => (None, error_chain(&e)),
            };
            let a = outcome(n.attempts, status, error, now_ms());
            outcomes.push((n, a));
        }
        for (n, a) in &outcomes {
            stats.attempt(n, a, now_ms());
        }
        let progressed = !outcomes.is_empty();
        if progressed {
            let w = writer.clone();
            let t = now_ms();
            let r = tokio::task::spawn_blocking(move || {
                let w = w.lock().unwrap_or_else(|p| p.into_inner());
                for (n, a) in &outcomes {
                    w.record_attempt(n.id, a, t)?;
                }
                Ok::<_, StoreError>(())
            })
            .await;
            if let Ok(Err(e)) | Err(e) = r.map_err(|e| StoreError::Malformed(e.to_string())) {
                tracing::warn!(error = %e, "cannot record webhook attempts");
            }
            // Something moved: look again at once (the next of each department may be due).
            continue;
        }
        let next = {
            let w = writer.clone();
            tokio::task::spawn_blocking(move || {
                w.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next_notification_ms()
            })
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
        };
        // Ingest queues notifications for alarm cases in its own transactions without waking
        // us, so look again within IDLE_POLL_MS (one indexed query).
        let wait = next
            .map(|t| (t - now_ms()).clamp(50, IDLE_POLL_MS))
            .unwrap_or(IDLE_POLL_MS) as u64;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The due notifications with their request bodies (the case as it stands and the event).
fn due_with_bodies(
    w: &Mutex<SqliteWriter>,
    now_ms: i64,
) -> Result<Vec<(Notification, Vec<u8>)>, StoreError> {
    let w = w.lock().unwrap_or_else(|p| p.into_inner());
    let due = w.due_notifications(now_ms, 64)?;
    let mut out = Vec::with_capacity(due.len());
    for n in due {
        let case = w.load_case(&n.case_id)?;
        let event = w.case_event(&n.case_id, n.seq)?;
        let body = json!({
            "notification": n.id,
            "department": n.department,
            "case": case,
            "event": event,
        });
        out.push((n, serde_json::to_vec(&body).unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let waits: Vec<i64> = (1..=11).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [
                1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000
            ]
        );
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }

    #[test]
    fn only_2xx_delivers_and_retries_end_in_failure() {
        assert_eq!(
            outcome(0, Some(204), "HTTP 204".into(), 10),
            Attempt::Delivered { status: 204 }
        );
        assert_eq!(
            outcome(2, Some(503), "HTTP 503".into(), 10),
            Attempt::Retry {
                status: Some(503),
                error: "HTTP 503".into(),
                next_ms: 10 + 4000
            }
        );
        assert!(matches!(
            outcome(0, None, "connection refused".into(), 0),
            Attempt::Retry { status: None, .. }
        ));
        assert!(matches!(
            outcome(MAX_ATTEMPTS - 1, Some(404), "HTTP 404".into(), 0),
            Attempt::Failed {
                status: Some(404),
                ..
            }
        ));
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
