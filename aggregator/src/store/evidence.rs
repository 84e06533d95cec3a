//! Pictures (issue 13, DESIGN.md §12) as the store keeps them, the same for every
//! implementation: the row types, the pure checks that turn arriving parts into a verified
//! picture ([`assemble`], [`fits`]), and the two traits of the evidence side.
//!
//! A camera picture arrives as wire `Evidence` parts, each an item of its own with its own seq.
//! Ingest's commit stores each new part with its item (so an acked part is durable) in
//! `picture_parts`, and the picture's metadata row (first part wins) in `pictures` with state
//! `arriving`. When the last missing part is in, still inside that commit, the parts are
//! assembled and the SHA-256 of the whole is checked against the one taken at capture:
//!
//! - equal: state `complete`; the evidence mover ([`crate::evidence`]) then writes the bytes to
//!   the blob store and calls [`EvidenceWriter::mark_stored`], which frees the parts (state
//!   `stored`). A crash in between leaves `complete`, and the mover does it again at start;
//!   writing a content-addressed blob twice is harmless.
//! - different (or a part that disagrees with the picture's metadata): the picture and its
//!   parts are deleted, the items are acked all the same (a resend would carry the same bytes),
//!   and the [`AlarmHook`](super::AlarmHook) hears of it ([`PictureEvent`]) so ingest can count
//!   and log it.
//!
//! Parts of the same picture arriving again (a resend under new seqs, a second stream) are
//! content-addressed: a part already held is not stored twice, and a stored picture is not
//! reassembled.
//!
//! Another *capture* can bring the same bytes (two cameras on one shared stream, a still scene
//! encoded the same way twice, a camera serving a cached snapshot): a part whose metadata names
//! another `(gateway, camera, captured_ms)` than the picture's row is recorded as a capture of
//! those bytes (`picture_captures`: camera, time, trigger, alarm, request), so its alarm episode
//! or request links the picture to its case as well. The row keeps the first capture's metadata.
//!
//! Which case a picture belongs to is not stored with it but derived when asked, so that it
//! holds whether the picture arrived before or after its case was opened: a picture belongs to
//!
//! - the case its alarm episode is linked to (`case_alarms`, the same gateway), or the episode
//!   of any later capture of its bytes;
//! - the case whose snapshot request (`snapshot_requests`, the same gateway) it, or a later
//!   capture of its bytes, answers;
//! - every case it was uploaded to (`picture_uploads`).

use base64::Engine as _;
use serde::Serialize;
use sha2::Digest as _;

use super::StoreError;
use fumegrid_common::wire::{EVIDENCE_PART_BYTES, Evidence};

/// A picture's state.
pub const ARRIVING: &str = "arriving";
pub const COMPLETE: &str = "complete";
pub const STORED: &str = "stored";

/// Where a picture came from.
pub const CAMERA: &str = "camera";
pub const UPLOAD: &str = "upload";

/// One picture as stored (its metadata; the bytes are in the blob store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PictureRow {
    pub sha256: String,
    /// `camera` or `upload`.
    pub source: String,
    /// Camera pictures: the gateway, camera and devices.
    pub gateway: Option<String>,
    pub camera: Option<String>,
    pub devices: Vec<String>,
    /// Capture time (gateway clock); an upload's time of upload.
    pub captured_ms: i64,
    /// `alarm_raised`, `alarm_updated`, `schedule`, `request`; none for uploads.
    pub trigger: Option<String>,
    /// The alarm episode it belongs to.
    pub alarm: Option<String>,
    /// The snapshot request it answers.
    pub request: Option<String>,
    /// MIME type of the original bytes.
    pub media: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// For the caption: the site, and `(device, metric, value)` at capture.
    pub site: String,
    pub readings: Vec<(String, String, f64)>,
    /// `arriving`, `complete` or `stored`.
    pub state: String,
    /// Parts of a camera picture, and how many are held.
    pub parts: u32,
    pub parts_held: u32,
    /// Aggregator clock: first part (or upload), and when it reached the blob store.
    pub received_ms: i64,
    pub stored_ms: Option<i64>,
    /// Uploads: who uploaded it first.
    pub uploaded_by: Option<String>,
}

/// An upload to record ([`EvidenceWriter::add_upload`]): its bytes are in the blob store
/// already.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub sha256: String,
    pub case_id: String,
    /// The uploader's actor id.
    pub by: String,
    pub media: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A snapshot command sent for a case ([`EvidenceWriter::add_request`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRequest {
    pub id: String,
    pub case_id: String,
    pub gateway: String,
    pub device: Option<String>,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub requested_by: String,
}

/// What happened to a picture in a commit, for ingest to count and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PictureEvent {
    pub gateway: String,
    pub camera: String,
    pub sha256: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every part is in and the hash verified; waiting for the mover.
    Complete { size: u64 },
    /// Refused and deleted.
    Refused(Refusal),
}

/// Why an arrived picture was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The assembled bytes do not hash to the SHA-256 taken at capture.
    HashMismatch,
    /// A part disagrees with the picture's metadata as first received (size or part count).
    Inconsistent,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::HashMismatch, Refusal::Inconsistent];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::HashMismatch => "hash_mismatch",
            Refusal::Inconsistent => "inconsistent",
        }
    }
}

/// The blob key of a picture's original bytes: `sha256/ab/cd/<hash>`.
pub fn original_key(sha256: &str) -> String {
    format!("sha256/{}", fanned(sha256))
}

/// The blob key of a derived view (`view`, `thumb`): `view/ab/cd/<hash>.jpg`.
pub fn derived_key(kind: &str, sha256: &str) -> String {
    format!("{kind}/{}.jpg", fanned(sha256))
}

fn fanned(sha256: &str) -> String {
    let b = sha256.as_bytes();
    if b.len() < 4 || !sha256.is_ascii() {
        return sha256.to_string();
    }
    let (a, rest) = sha256.split_at(2);
    let (c, _) = rest.split_at(2);
    format!("{a}/{c}/{sha256}")
}

/// Whether `s` is a SHA-256 as the wire writes it: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// How many parts a picture of `size` bytes travels in.
pub fn parts_for(size: u64) -> u64 {
    size.div_ceil(EVIDENCE_PART_BYTES as u64)
}

/// The decoded length part `part` of a picture of `size` bytes has.
pub fn part_len(size: u64, part: u32) -> u64 {
    let per = EVIDENCE_PART_BYTES as u64;
    size.saturating_sub(u64::from(part) * per).min(per)
}

/// A part's bytes (the validation already checked that they decode to [`part_len`]).
pub fn decode_part(e: &Evidence) -> Result<Vec<u8>, StoreError> {
    base64::engine::general_purpose::STANDARD
        .decode(e.data.as_bytes())
        .map_err(|err| StoreError::Malformed(format!("evidence part is not base64: {err}")))
}

/// A picture as the wire carries it: `bytes` split into parts of at most
/// [`EVIDENCE_PART_BYTES`], each with `meta` (its `size` set to the length of `bytes`) and the
/// SHA-256 of `bytes` (tests and tools; the gateway has its own).
pub fn split(bytes: &[u8], mut meta: fumegrid_common::wire::EvidenceMeta) -> Vec<Evidence> {
    meta.size = bytes.len() as u64;
    let sha256 = sha256_hex(bytes);
    let chunks: Vec<&[u8]> = bytes.chunks(EVIDENCE_PART_BYTES).collect();
    let parts = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| Evidence {
            sha256: sha256.clone(),
            part: i as u32,
            parts,
            data: base64::engine::general_purpose::STANDARD.encode(c),
            meta: meta.clone(),
        })
        .collect()
}

/// Whether a new part agrees with the picture's metadata as first received. Pure.
pub fn fits(stored_size: u64, stored_parts: u32, e: &Evidence) -> bool {
    e.meta.size == stored_size && e.parts == stored_parts
}

/// Joins every part (in order) and checks the whole against `sha256`. Pure.
pub fn assemble(sha256: &str, parts: &[Vec<u8>]) -> Result<Vec<u8>, Refusal> {
    let bytes = parts.concat();
    if sha256_hex(&bytes) == sha256 {
        Ok(bytes)
    } else {
        Err(Refusal::HashMismatch)
    }
}

/// The evidence side's writes outside ingest: the mover, retention, uploads and snapshot
/// requests. Used behind a mutex by one caller at a time.
pub trait EvidenceWriter: Send {
    /// Pictures whose parts are all in and verified (state `complete`), oldest first.
    fn pictures_to_move(&mut self, limit: u32) -> Result<Vec<String>, StoreError>;
    /// The assembled original of a `complete` picture (from its parts); none otherwise.
    fn assembled(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The picture's bytes are in the blob store: state `stored`, parts freed. Whether it was
    /// `complete`.
    fn mark_stored(&mut self, sha256: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Records an upload to a case (its bytes are in the blob store): a new `stored` picture
    /// of source `upload`, or a link to the picture already held with those bytes. Whether
    /// the picture was new.
    fn add_upload(&mut self, upload: &Upload, now_ms: i64) -> Result<bool, StoreError>;
    /// Records a snapshot request sent for a case.
    fn add_request(&mut self, request: &SnapshotRequest) -> Result<(), StoreError>;
    /// Pictures retention deletes now: those received before `unlinked_before_ms` that belong
    /// to no case, and those still `arriving` since before then (abandoned), oldest first.
    fn expired(&mut self, unlinked_before_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Deletes a picture's row, parts and upload links; whether there was one.
    fn delete_picture(&mut self, sha256: &str) -> Result<bool, StoreError>;
}

/// The evidence side's reads (the API).
pub trait EvidenceReader: Send + Sync {
    /// The pictures that belong to case `case_id` (see the module doc), oldest capture first.
    fn case_pictures(&self, case_id: &str) -> Result<Vec<PictureRow>, StoreError>;
    /// One picture.
    fn picture(&self, sha256: &str) -> Result<Option<PictureRow>, StoreError>;
    /// The cases a picture belongs to, sorted.
    fn picture_cases(&self, sha256: &str) -> Result<Vec<String>, StoreError>;
    /// The snapshot requests of a case, oldest first.
    fn case_requests(&self, case_id: &str) -> Result<Vec<SnapshotRequest>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fan_out_by_the_first_two_bytes() {
        let h = sha256_hex(b"x");
        assert!(is_sha256(&h));
        let k = original_key(&h);
        let (a, b) = (h.get(..2).unwrap_or(""), h.get(2..4).unwrap_or(""));
        assert_eq!(k, format!("sha256/{a}/{b}/{h}"));
        assert_eq!(derived_key("thumb", &h), format!("thumb/{a}/{b}/{h}.jpg"));
        assert!(!is_sha256(&h.to_uppercase()));
        assert!(!is_sha256(h.get(1..).unwrap_or("")));
    }

    #[test]
    fn part_lengths_cover_the_picture() {
        let per = EVIDENCE_PART_BYTES as u64;
        for size in [1, per - 1, per, per + 1, 3 * per, 8 * 1024 * 1024] {
            let n = parts_for(size);
            let total: u64 = (0..n as u32).map(|p| part_len(size, p)).sum();
            assert_eq!(total, size, "size {size}");
            assert!((0..n as u32).all(|p| part_len(size, p) > 0));
            assert_eq!(part_len(size, n as u32), 0);
        }
    }
}
