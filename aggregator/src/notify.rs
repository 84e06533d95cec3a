//! Webhooks to departments: the notifier delivers the queued notifications (schema v4).
//!
//! Each notification announces one case event to one department, or (kind `evidence`) that a
//! picture joined a case the department has (queued when the picture is stored,
//! [`crate::store::notify_sql::enqueue_evidence`]). The body is JSON (`{"notification", "kind",
//! "department", "case", "event", "evidence"}`, `evidence` being the case's pictures so far
//! with links to their bytes, [`picture_json`]); the request carries
//! `X-Fumegrid-Signature: sha256=<hex HMAC-SHA256 of the body with the department's secret>`,
//! `X-Fumegrid-Delivery: <notification id>` (the receiver dedupes on it: a retry after a lost
//! answer delivers it again) and `X-Fumegrid-Event: <event kind>`.
//!
//! A 2xx answer is delivered. Anything else (refused, timeout, 4xx, 5xx) is retried with
//! exponential backoff ([`backoff_ms`]: 1 s, 2 s, 4 s … capped at 5 min) until
//! [`MAX_ATTEMPTS`], then recorded as failed. Per department the oldest pending notification goes
//! first, so a department sees its events in order; a department whose endpoint is down holds
//! up only itself. The case engine never waits for any of this: it only queues.
//!
//! The queue is the store's ([`crate::store::CaseStore`]); the HTTP request is behind
//! [`Deliver`] ([`Http`] in production) so that the retry schedule can be tested in paused
//! time; the time comes from the [`Clock`] it is handed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cases::Catalogue;
use crate::evidence::Evidence;
use crate::evidence::views;
use crate::store::evidence::{EvidenceReader, PictureRow, STORED};
use crate::store::notify_sql::{Attempt, Notification};
use crate::store::{CaseStore, SharedCaseStore, StoreError};

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

/// One delivery attempt: posts `body` (the notification `n`) to `ep`; the answer's status, or
/// `None` when there was none, and a description for the log.
pub trait Deliver: Send + Sync {
    fn post(
        &self,
        ep: &Endpoint,
        n: &Notification,
        body: Vec<u8>,
    ) -> impl Future<Output = (Option<u16>, String)> + Send;
}

/// Delivery over HTTP(S) with reqwest, signed (see the module doc), [`REQUEST_TIMEOUT`] each.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("fumegrid-aggregator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http { client })
    }
}

impl Deliver for Http {
    async fn post(&self, ep: &Endpoint, n: &Notification, body: Vec<u8>) -> (Option<u16>, String) {
        let result = self
            .client
            .post(&ep.url)
            .header("content-type", "application/json")
            .header("x-fumegrid-signature", signature(&ep.secret, &body))
            .header("x-fumegrid-delivery", n.id.to_string())
            .header("x-fumegrid-event", n.kind.clone())
            .body(body)
            .send()
            .await;
        match result {
            Ok(r) => {
                let s = r.status();
                (Some(s.as_u16()), format!("HTTP {s}"))
            }
            Err(e) => (None, error_chain(&e)),
        }
    }
}

/// What the notifier works with: the store holding the queue, the departments' endpoints, what
/// wakes it when casework queued something, its counters, and the clock.
#[derive(Clone)]
pub struct Notifier {
    pub store: SharedCaseStore,
    pub endpoints: HashMap<String, Endpoint>,
    pub wake: Arc<Notify>,
    pub stats: Arc<NotifyStats>,
    pub clock: Clock,
    /// The case's pictures for the bodies, and their links; none: bodies carry an empty
    /// `evidence`.
    pub evidence: Option<Arc<Evidence>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// Runs until cancelled: delivers what is due over HTTP, sleeps until the next retry or until
/// woken ([`run_with`]).
pub async fn run(parts: Notifier, cancel: CancellationToken) {
    let http = match Http::new() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; notifications stay queued");
            return;
        }
    };
    run_with(http, parts, cancel).await;
}

/// [`run`] with the delivery `deliver`.
pub async fn run_with(deliver: impl Deliver, parts: Notifier, cancel: CancellationToken) {
    let Notifier {
        store: writer,
        endpoints,
        wake,
        stats,
        clock,
        evidence,
    } = parts;
    let now_ms = || clock.now_ms();
    loop {
        let batch = {
            let w = writer.clone();
            let ev = evidence.clone();
            let t = now_ms();
            tokio::task::spawn_blocking(move || {
                let link = |sha: &str, tail: &str| {
                    ev.as_deref().map(|e| e.link(sha, tail)).unwrap_or_default()
                };
                let pictures = ev.as_deref().map(|e| Pictures {
                    reader: &*e.reader,
                    link: &link,
                });
                due_with_bodies(&w, pictures, t)
            })
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
            let (status, error) = deliver.post(ep, &n, body).await;
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
                let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
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

/// Where the bodies' pictures come from: the evidence reader and how a picture's link is
/// made (`(sha256, "view" | "thumb" | "original")` → URL).
#[derive(Clone, Copy)]
pub struct Pictures<'a> {
    pub reader: &'a dyn EvidenceReader,
    pub link: &'a dyn Fn(&str, &str) -> String,
}

impl std::fmt::Debug for Pictures<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pictures").finish_non_exhaustive()
    }
}

/// One picture of a case as a webhook body shows it: what it is (hash of the original bytes,
/// where it came from, trigger, capture time) and `links` to its `view` (captioned JPEG),
/// `thumb` and `original` (`null` until the picture is stored; `view` and `thumb` also `null`
/// for a type the aggregator cannot decode). The links are absolute under `[api] public_url`
/// when that is set, else API paths; either way the receiver fetches them with a token of the
/// department (docs/api.md, "Webhooks"). Pure.
pub fn picture_json(p: &PictureRow, link: &dyn Fn(&str, &str) -> String) -> serde_json::Value {
    let stored = p.state == STORED;
    let derivable = stored && views::can_derive(&p.media);
    let at = |tail: &str, ok: bool| ok.then(|| link(&p.sha256, tail));
    json!({
        "sha256": p.sha256,
        "source": p.source,
        "camera": p.camera,
        "gateway": p.gateway,
        "devices": p.devices,
        "trigger": p.trigger,
        "alarm": p.alarm,
        "captured_ms": p.captured_ms,
        "captured_at": jiff::Timestamp::from_millisecond(p.captured_ms)
            .map(|t| format!("{t:.3}"))
            .unwrap_or_default(),
        "media": p.media,
        "size": p.size,
        "width": p.width,
        "height": p.height,
        "links": {
            "view": at(views::VIEW, derivable),
            "thumb": at(views::THUMB, derivable),
            "original": at("original", stored),
        },
    })
}

/// The due notifications with their request bodies (the case as it stands, the event, and the
/// case's pictures so far when `pictures` is given).
fn due_with_bodies(
    w: &Mutex<dyn CaseStore>,
    pictures: Option<Pictures<'_>>,
    now_ms: i64,
) -> Result<Vec<(Notification, Vec<u8>)>, StoreError> {
    let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
    let due = w.due_notifications(now_ms, 64)?;
    let mut out = Vec::with_capacity(due.len());
    for n in due {
        let case = w.load_case(&n.case_id)?;
        let event = w.case_event(&n.case_id, n.seq)?;
        let evidence: Vec<serde_json::Value> = match pictures {
            Some(p) => p
                .reader
                .case_pictures(&n.case_id)?
                .iter()
                .map(|row| picture_json(row, p.link))
                .collect(),
            None => Vec::new(),
        };
        let body = json!({
            "notification": n.id,
            "kind": n.kind,
            "department": n.department,
            "case": case,
            "event": event,
            "evidence": evidence,
        });
        out.push((n, serde_json::to_vec(&body).unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::model::{Intake, Origin};
    use crate::cases::{Action, Actor, Command, apply, open};
    use crate::store::Reader;
    use crate::store::memory::MemoryStore;
    use crate::store::notify_sql::NotificationQuery;

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

    /// A webhook's picture: links absolute under `[api] public_url`, API paths without it,
    /// `null` until stored; no views for a type the aggregator cannot decode.
    #[test]
    fn a_picture_in_a_webhook_links_to_its_bytes() {
        let mut p = PictureRow {
            sha256: "ab".repeat(32),
            source: "camera".into(),
            gateway: Some("gw-1".into()),
            camera: Some("cam-1".into()),
            devices: vec!["m00".into()],
            captured_ms: T0,
            trigger: Some("alarm_raised".into()),
            alarm: Some("e1".into()),
            request: None,
            media: "image/jpeg".into(),
            size: 10,
            width: Some(640),
            height: Some(480),
            site: "s".into(),
            readings: Vec::new(),
            state: STORED.into(),
            parts: 1,
            parts_held: 1,
            received_ms: T0,
            stored_ms: Some(T0),
            uploaded_by: None,
        };
        let public = |sha: &str, tail: &str| {
            crate::evidence::picture_link(Some("https://fume.example/"), sha, tail)
        };
        let v = picture_json(&p, &public);
        let sha = p.sha256.clone();
        assert_eq!(
            v["links"]["view"],
            format!("https://fume.example/api/v1/evidence/{sha}/view")
        );
        assert_eq!(v["captured_at"], "2025-11-03T02:00:00.000Z");
        assert_eq!(v["trigger"], "alarm_raised");
        let path = |sha: &str, tail: &str| crate::evidence::picture_link(None, sha, tail);
        assert_eq!(
            picture_json(&p, &path)["links"]["original"],
            format!("/api/v1/evidence/{sha}/original")
        );
        p.media = "video/h265".into();
        let v = picture_json(&p, &path);
        assert!(v["links"]["view"].is_null() && v["links"]["original"].is_string());
        p.state = "arriving".into();
        let v = picture_json(&p, &path);
        assert!(v["links"]["original"].is_null(), "{v}");
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// A department endpoint that answers 500 to the first `fail` attempts, then 204, and
    /// records when each attempt came (the notifier's clock) and what it carried. The delivery
    /// seam, not a socket: with paused time, tokio advances the clock whenever every task waits,
    /// including on a socket, so reqwest's 10 s timeout would fire before a loopback server
    /// answered. The HTTP side ([`Http`]) is covered by the end-to-end tests.
    #[derive(Clone)]
    struct FlakyEndpoint {
        clock: Clock,
        fail: usize,
        seen: Arc<Mutex<Vec<(i64, i64, serde_json::Value)>>>,
    }

    impl Deliver for FlakyEndpoint {
        async fn post(
            &self,
            _ep: &Endpoint,
            n: &Notification,
            body: Vec<u8>,
        ) -> (Option<u16>, String) {
            let mut seen = self.seen.lock().expect("seen");
            let v = serde_json::from_slice(&body).expect("JSON body");
            seen.push((n.id, self.clock.now_ms(), v));
            if seen.len() <= self.fail {
                (Some(500), "HTTP 500".into())
            } else {
                (Some(204), "HTTP 204".into())
            }
        }
    }

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    const T0: i64 = 1_762_135_200_000;

    /// A case dispatched at `T0` (one notification for its department) in a fresh store; the
    /// department.
    fn queued() -> (MemoryStore, String) {
        let cat = Catalogue::builtin().expect("catalogue");
        let op = Actor::operator("op-1");
        let intake = Intake {
            category: "exceedance".into(),
            title: "smoke".into(),
            origin: Origin::Operator,
            site: None,
            grid_cell: None,
        };
        let (mut c, mut ev, mut ef) = open("C1", intake, &op, "", T0, &cat).expect("open");
        for a in [Action::Register, Action::Dispatch { department: None }] {
            let (n, e, f) = apply(&c, Command::new(a), &op, T0, &cat).expect("step");
            c = n;
            ev.extend(e);
            ef.extend(f);
        }
        let mut store = MemoryStore::new();
        store.save_case(&c, &ev, &ef, T0).expect("save");
        (store, c.department.expect("dispatched"))
    }

    fn run_notifier(
        store: &MemoryStore,
        deliver: FlakyEndpoint,
        endpoints: HashMap<String, Endpoint>,
        cancel: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let shared: SharedCaseStore = Arc::new(Mutex::new(store.clone()));
        let parts = Notifier {
            store: shared,
            endpoints,
            wake: Arc::new(Notify::new()),
            stats: Arc::new(NotifyStats::default()),
            clock: deliver.clock.clone(),
            evidence: None,
        };
        tokio::spawn(run_with(deliver.clone(), parts, cancel.clone()))
    }

    /// Paused time: a department whose endpoint answers 500 six times gets the notification
    /// again after 1, 2, 4, 8, 16 and 32 s ([`backoff_ms`]), then it is delivered — a minute of
    /// retries in milliseconds.
    #[tokio::test(start_paused = true)]
    async fn failed_deliveries_are_retried_on_the_backoff_schedule_until_delivered() {
        let (store, dep) = queued();
        let clock = Clock::following_tokio(T0);
        let flaky = FlakyEndpoint {
            clock: clock.clone(),
            fail: 6,
            seen: Arc::default(),
        };
        let endpoints: HashMap<String, Endpoint> = [(
            dep.clone(),
            Endpoint {
                url: "http://127.0.0.1:9/hook".into(),
                secret: b"s".to_vec(),
            },
        )]
        .into();
        let cancel = CancellationToken::new();
        let notifier = run_notifier(&store, flaky.clone(), endpoints, &cancel);
        // Wait, in simulated time, until the seventh attempt came (bounded).
        for _ in 0..600 {
            if flaky.seen.lock().expect("seen").len() >= 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let seen = flaky.seen.lock().expect("seen").clone();
        let at: Vec<i64> = seen.iter().map(|(_, t, _)| t - T0).collect();
        assert_eq!(at, [0, 1000, 3000, 7000, 15000, 31000, 63000]);
        let id = seen[0].0;
        assert!(
            seen.iter().all(|(n, _, _)| *n == id),
            "the same notification"
        );
        assert_eq!(seen[0].2["case"]["id"], "C1");
        assert_eq!(seen[0].2["department"], dep.as_str());
        // Delivered: recorded, and nothing is tried again.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(flaky.seen.lock().expect("seen").len(), 7);
        cancel.cancel();
        notifier.await.expect("notifier");
        let (_, log) = store
            .notifications(&NotificationQuery {
                department: None,
                case_id: None,
                state: None,
                limit: 10,
                offset: 0,
            })
            .expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].state.as_str(), log[0].attempts, log[0].last_status),
            ("delivered", 7, Some(204))
        );
        assert_eq!(log[0].delivered_ms, Some(T0 + 63_000));
    }

    /// A department without a webhook: recorded as unrouted, nothing is posted.
    #[tokio::test(start_paused = true)]
    async fn a_department_without_a_webhook_is_recorded_unrouted() {
        let (store, _) = queued();
        let clock = Clock::following_tokio(T0);
        let flaky = FlakyEndpoint {
            clock,
            fail: 0,
            seen: Arc::default(),
        };
        let cancel = CancellationToken::new();
        let notifier = run_notifier(&store, flaky.clone(), HashMap::new(), &cancel);
        let unrouted = || {
            store
                .notifications(&NotificationQuery {
                    department: None,
                    case_id: None,
                    state: Some("unrouted".into()),
                    limit: 10,
                    offset: 0,
                })
                .expect("log")
                .0
        };
        for _ in 0..100 {
            if unrouted() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(unrouted(), 1);
        assert!(flaky.seen.lock().expect("seen").is_empty());
        cancel.cancel();
        notifier.await.expect("notifier");
    }
}
