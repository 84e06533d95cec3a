//! Evidence (issue 13, DESIGN.md §12): what happens to a picture after ingest has verified it,
//! and everything the API does with pictures.
//!
//! - [`blobs`]: the bytes, through `object_store` (local files by default), keyed by SHA-256.
//! - The **mover** ([`Evidence::move_pending`], run by [`run`]): writes each `complete`
//!   picture's original to the blob store, then its derived views, then marks it `stored`,
//!   which frees its parts in the store. Woken by ingest when a picture completes, and every
//!   [`MOVER_POLL`] anyway; whatever a crash interrupted is redone at start (content-addressed
//!   writes are idempotent).
//! - **Retention** ([`Evidence::expire`]): a picture that belongs to no case is deleted
//!   `[evidence] keep_unlinked_days` after it arrived, one still arriving then is abandoned;
//!   a picture of a case lives as long as the case. Blobs first, then the row.
//! - **Derived views** ([`views`]): the captioned JPEG people look at and a thumbnail for
//!   lists, made from the original; none for H.265 (no decoder here).
//! - **Uploads** ([`Evidence::upload`]): a department's proof of rectification (and, through
//!   the same call, other modules' photos): size limit, JPEG or PNG sniffed from the bytes and
//!   agreeing with the declared type.
//! - **Snapshot requests** ([`Evidence::request_snapshot`]): a sealed `Command` to a gateway,
//!   recorded with its case so the picture it produces belongs to that case.
//!
//! Layering: `evidence` → `store` (its evidence traits), `ingest` (the command publisher);
//! `api` and `daemon` → `evidence`.

pub mod blobs;
pub mod views;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fumegrid_common::clock::Clock;
use fumegrid_common::wire;
use metrics::counter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use blobs::Blobs;

use crate::ingest::{CommandError, Commands};
use crate::store::StoreError;
use crate::store::evidence::{
    self as ev, EvidenceReader, EvidenceWriter, PictureRow, SnapshotRequest, Upload,
};
use crate::telemetry as m;

/// How often the mover looks for complete pictures without being woken.
pub const MOVER_POLL: Duration = Duration::from_secs(30);
/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// `[evidence]` as the daemon hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A picture that belongs to no case is deleted this long after it arrived.
    pub keep_unlinked: Duration,
    /// Largest upload accepted.
    pub max_upload_bytes: usize,
    /// How long a gateway may act on a snapshot command.
    pub snapshot_expiry: Duration,
    /// The district's UTC offset in minutes for captions (the case calendar's), if known.
    pub caption_offset_min: Option<i32>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            keep_unlinked: Duration::from_secs(30 * 86_400),
            max_upload_bytes: 8 * 1024 * 1024,
            snapshot_expiry: Duration::from_secs(60),
            caption_offset_min: None,
        }
    }
}

/// [`Evidence::link`] with the base `public_url` (none: the API path). Pure.
pub fn picture_link(public_url: Option<&str>, sha256: &str, tail: &str) -> String {
    format!(
        "{}/api/v1/evidence/{sha256}/{tail}",
        public_url.unwrap_or("").trim_end_matches('/')
    )
}

/// The store side of evidence as the service shares it.
pub type SharedEvidenceWriter = Arc<Mutex<dyn EvidenceWriter>>;

/// Failures of the evidence side. Messages say what failed and what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob store: {0}")]
    Blob(#[from] object_store::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the picture is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("the body is empty; send the picture's bytes")]
    Empty,
    #[error("the bytes are not a JPEG or PNG picture")]
    NotAPicture,
    #[error("Content-Type says `{declared}` but the bytes are {sniffed}")]
    TypeMismatch {
        declared: String,
        sniffed: &'static str,
    },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

/// Why a snapshot could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot commands are not available (no MQTT client)")]
    Unavailable,
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The evidence service: shared by the API, the mover and retention.
pub struct Evidence {
    pub blobs: Blobs,
    pub reader: Arc<dyn EvidenceReader>,
    writer: SharedEvidenceWriter,
    /// Ingest wakes the mover through it when a picture completes.
    pub wake: Arc<Notify>,
    pub settings: Settings,
    commands: Option<Commands>,
    clock: Clock,
    /// `[api] public_url`: where the API is reached from outside, for [`Evidence::link`].
    public_url: Option<String>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence")
            .field("blobs", &self.blobs)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, EvidenceError> {
    tokio::task::spawn_blocking(move || fumegrid_common::panic::contained(f))
        .await
        .map_err(|e| EvidenceError::Internal(e.to_string()))?
        .map_err(EvidenceError::Store)
}

impl Evidence {
    pub fn new(
        blobs: Blobs,
        reader: Arc<dyn EvidenceReader>,
        writer: SharedEvidenceWriter,
        settings: Settings,
        commands: Option<Commands>,
        clock: Clock,
    ) -> Evidence {
        Evidence {
            blobs,
            reader,
            writer,
            wake: Arc::new(Notify::new()),
            settings,
            commands,
            clock,
            public_url: None,
        }
    }

    /// Links built by [`Evidence::link`] start with `url` (`[api] public_url`, no trailing
    /// slash) instead of being API paths.
    pub fn with_public_url(mut self, url: Option<String>) -> Evidence {
        self.public_url = url.map(|u| u.trim_end_matches('/').to_string());
        self
    }

    /// Where the API serves `tail` (`original`, `view`, `thumb`) of picture `sha256`: an
    /// absolute URL under `[api] public_url` when it is set, else the API path
    /// (`/api/v1/evidence/{sha256}/{tail}`), for whoever knows the API's address.
    pub fn link(&self, sha256: &str, tail: &str) -> String {
        picture_link(self.public_url.as_deref(), sha256, tail)
    }

    /// One blocking call on the shared writer.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn EvidenceWriter) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, EvidenceError> {
        let w = self.writer.clone();
        blocking(move || f(&mut *w.lock().unwrap_or_else(|p| p.into_inner()))).await
    }

    /// Moves every `complete` picture to the blob store; how many. A failure stops the round
    /// (counted and logged by the caller); what is left is moved next time.
    pub async fn move_pending(&self) -> Result<usize, EvidenceError> {
        let mut moved = 0;
        loop {
            let batch = self.write(|w| w.pictures_to_move(16)).await?;
            if batch.is_empty() {
                return Ok(moved);
            }
            for sha in batch {
                let s = sha.clone();
                let Some(bytes) = self.write(move |w| w.assembled(&s)).await? else {
                    continue;
                };
                if ev::sha256_hex(&bytes) != sha {
                    // Ingest checked the hash when the last part came in: the parts changed in
                    // the store since. Never store them under a hash they do not have.
                    error!(sha256 = %sha, "a complete picture's parts no longer match its hash; deleted");
                    counter!(m::EVIDENCE_ERRORS, "op" => "move").increment(1);
                    let s = sha.clone();
                    self.write(move |w| w.delete_picture(&s)).await?;
                    continue;
                }
                let size = bytes.len() as u64;
                let bytes = Bytes::from(bytes);
                self.blobs
                    .put(&ev::original_key(&sha), bytes.clone())
                    .await?;
                let s = sha.clone();
                if let Some(row) = blocking({
                    let r = self.reader.clone();
                    move || r.picture(&s)
                })
                .await?
                {
                    self.derive(&row, &bytes).await;
                }
                let now = self.clock.now_ms();
                let s = sha.clone();
                self.write(move |w| w.mark_stored(&s, now)).await?;
                counter!(m::EVIDENCE_STORED, "source" => ev::CAMERA).increment(1);
                counter!(m::EVIDENCE_BYTES, "source" => ev::CAMERA).increment(size);
                debug!(sha256 = %sha, size, "picture stored");
                moved += 1;
            }
        }
    }

    /// Makes and stores the derived views of a picture; a failure is counted and logged, the
    /// original stays (the API makes the views again when asked).
    async fn derive(&self, row: &PictureRow, original: &Bytes) -> Option<views::Views> {
        let (r, o, offset) = (
            row.clone(),
            original.clone(),
            self.settings.caption_offset_min,
        );
        let made = tokio::task::spawn_blocking(move || {
            fumegrid_common::panic::contained(|| Ok::<_, StoreError>(views::derive(&r, &o, offset)))
        })
        .await;
        let made = match made {
            Ok(Ok(Ok(Some(v)))) => v,
            Ok(Ok(Ok(None))) => return None,
            Ok(Ok(Err(why))) => {
                counter!(m::EVIDENCE_ERRORS, "op" => "view").increment(1);
                warn!(sha256 = %row.sha256, media = %row.media, why = %fumegrid_common::text::clip(&why, 200),
                    "no view of this picture (the original is kept)");
                return None;
            }
            _ => {
                counter!(m::EVIDENCE_ERRORS, "op" => "view").increment(1);
                warn!(sha256 = %row.sha256, "making the view of this picture failed");
                return None;
            }
        };
        for (kind, bytes) in [(views::VIEW, &made.view), (views::THUMB, &made.thumb)] {
            if let Err(e) = self
                .blobs
                .put(&ev::derived_key(kind, &row.sha256), bytes.clone())
                .await
            {
                counter!(m::EVIDENCE_ERRORS, "op" => "view").increment(1);
                warn!(sha256 = %row.sha256, error = %e, "cannot store a derived view");
            }
        }
        Some(made)
    }

    /// A derived view (`view` or `thumb`) of a picture: from the blob store, else made now from
    /// the original and kept. None when the media has no decoder here or nothing is stored.
    pub async fn derived(
        &self,
        row: &PictureRow,
        kind: &str,
    ) -> Result<Option<Bytes>, EvidenceError> {
        if let Some(b) = self.blobs.get(&ev::derived_key(kind, &row.sha256)).await? {
            return Ok(Some(b));
        }
        if !views::can_derive(&row.media) || row.state != ev::STORED {
            return Ok(None);
        }
        let Some(original) = self.blobs.get(&ev::original_key(&row.sha256)).await? else {
            return Ok(None);
        };
        Ok(self.derive(row, &original).await.map(|v| {
            if kind == views::THUMB {
                v.thumb
            } else {
                v.view
            }
        }))
    }

    /// The original bytes of a stored picture.
    pub async fn original(&self, sha256: &str) -> Result<Option<Bytes>, EvidenceError> {
        Ok(self.blobs.get(&ev::original_key(sha256)).await?)
    }

    /// Deletes what retention says has expired; how many pictures.
    pub async fn expire(&self) -> Result<usize, EvidenceError> {
        let keep = i64::try_from(self.settings.keep_unlinked.as_millis()).unwrap_or(i64::MAX);
        let before = self.clock.now_ms().saturating_sub(keep);
        let mut gone = 0;
        loop {
            let batch = self.write(move |w| w.expired(before, 100)).await?;
            if batch.is_empty() {
                return Ok(gone);
            }
            for sha in batch {
                self.blobs.delete(&ev::original_key(&sha)).await?;
                for kind in [views::VIEW, views::THUMB] {
                    self.blobs.delete(&ev::derived_key(kind, &sha)).await?;
                }
                let s = sha.clone();
                self.write(move |w| w.delete_picture(&s)).await?;
                counter!(m::EVIDENCE_EXPIRED).increment(1);
                debug!(sha256 = %sha, "picture expired");
                gone += 1;
            }
        }
    }

    /// Stores an uploaded picture for case `case_id` (the caller checked that `by` may add
    /// evidence to it): size, type sniffed from the bytes and agreeing with `declared` (a MIME
    /// type, parameters ignored), original in the blob store, then the row. The picture.
    pub async fn upload(
        &self,
        case_id: &str,
        by: &str,
        bytes: Bytes,
        declared: &str,
    ) -> Result<PictureRow, UploadError> {
        let max = self.settings.max_upload_bytes;
        if bytes.len() > max {
            return Err(UploadError::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        if bytes.is_empty() {
            return Err(UploadError::Empty);
        }
        let sniffed = views::sniff(&bytes).ok_or(UploadError::NotAPicture)?;
        let declared = declared
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if declared != sniffed {
            return Err(UploadError::TypeMismatch {
                declared: fumegrid_common::text::clip(&declared, 64).to_string(),
                sniffed,
            });
        }
        let sha = ev::sha256_hex(&bytes);
        let (width, height) = views::dimensions(&bytes).unzip();
        let size = bytes.len() as u64;
        self.blobs
            .put(&ev::original_key(&sha), bytes.clone())
            .await
            .map_err(EvidenceError::from)?;
        let upload = Upload {
            sha256: sha.clone(),
            case_id: case_id.to_string(),
            by: by.to_string(),
            media: sniffed.to_string(),
            size,
            width,
            height,
        };
        let now = self.clock.now_ms();
        let new = self.write(move |w| w.add_upload(&upload, now)).await?;
        if new {
            counter!(m::EVIDENCE_STORED, "source" => ev::UPLOAD).increment(1);
            counter!(m::EVIDENCE_BYTES, "source" => ev::UPLOAD).increment(size);
        }
        info!(case = case_id, by, sha256 = %sha, size, media = sniffed, "picture uploaded");
        let row = blocking({
            let r = self.reader.clone();
            let s = sha.clone();
            move || r.picture(&s)
        })
        .await?
        .ok_or_else(|| EvidenceError::Internal(format!("uploaded picture {sha} not found")))?;
        if new && row.source == ev::UPLOAD {
            self.derive(&row, &bytes).await;
        }
        Ok(row)
    }

    /// Sends a sealed snapshot command to `gateway` (for `device`, carrying `alarm` into the
    /// picture) on behalf of case `case_id`, recorded before it is sent.
    pub async fn request_snapshot(
        &self,
        case_id: &str,
        gateway: &str,
        device: Option<&str>,
        alarm: Option<&str>,
        by: &str,
    ) -> Result<SnapshotRequest, SnapshotError> {
        let commands = self.commands.clone().ok_or(SnapshotError::Unavailable)?;
        let id = crate::auth::random_hex(16).ok_or(SnapshotError::Unavailable)?;
        let now = self.clock.now_ms();
        let expiry = i64::try_from(self.settings.snapshot_expiry.as_millis()).unwrap_or(60_000);
        let req = SnapshotRequest {
            id: id.clone(),
            case_id: case_id.to_string(),
            gateway: gateway.to_string(),
            device: device.map(str::to_string),
            issued_ms: now,
            expires_ms: now + expiry,
            requested_by: by.to_string(),
        };
        let r = req.clone();
        self.write(move |w| w.add_request(&r))
            .await
            .map_err(|e| match e {
                EvidenceError::Store(s) => SnapshotError::Store(s),
                other => SnapshotError::Store(StoreError::Malformed(other.to_string())),
            })?;
        commands.send(&wire::Command {
            id,
            gateway: gateway.to_string(),
            issued_ms: now,
            expires_ms: req.expires_ms,
            action: wire::Action::Snapshot {
                camera: None,
                device: device.map(str::to_string),
                alarm: alarm.map(str::to_string),
            },
        })?;
        counter!(m::EVIDENCE_SNAPSHOTS).increment(1);
        info!(case = case_id, gateway, device, request = %req.id, by, "snapshot requested");
        Ok(req)
    }
}

/// The mover and retention until `cancel`: a move round at start (what a crash left), then on
/// every wake-up from ingest and every [`MOVER_POLL`]; retention at start and every
/// [`RETENTION_EVERY`].
pub async fn run(ev: Arc<Evidence>, clock: Clock, cancel: CancellationToken) {
    for name in ["move", "expire", "view"] {
        counter!(m::EVIDENCE_ERRORS, "op" => name).absolute(0);
    }
    for source in [ev::CAMERA, ev::UPLOAD] {
        counter!(m::EVIDENCE_STORED, "source" => source).absolute(0);
        counter!(m::EVIDENCE_BYTES, "source" => source).absolute(0);
    }
    counter!(m::EVIDENCE_EXPIRED).absolute(0);
    counter!(m::EVIDENCE_SNAPSHOTS).absolute(0);
    let mut next_retention = clock.instant();
    loop {
        if let Err(e) = ev.move_pending().await {
            counter!(m::EVIDENCE_ERRORS, "op" => "move").increment(1);
            error!(error = %e, "evidence mover: cannot store pictures now; retrying (their parts stay in the store)");
        }
        if clock.instant() >= next_retention {
            match ev.expire().await {
                Ok(0) => {}
                Ok(n) => info!(pictures = n, "evidence retention: expired pictures deleted"),
                Err(e) => {
                    counter!(m::EVIDENCE_ERRORS, "op" => "expire").increment(1);
                    error!(error = %e, "evidence retention failed; retrying at the next round");
                }
            }
            next_retention = clock.instant() + RETENTION_EVERY;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ev.wake.notified() => {}
            _ = tokio::time::sleep(MOVER_POLL) => {}
        }
    }
    debug!("evidence mover stopped");
}
