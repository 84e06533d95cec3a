//! The durable outbox: every item the gateway produces waits here, numbered, until the
//! aggregator acks its seq (DESIGN.md §3, §6, §8).
//!
//! [`Outbox`] is the seam; [`SledOutbox`] the real store, [`MemOutbox`] the model with the same
//! semantics (for the model check and for other components' tests).
//!
//! # Items and seqs
//!
//! `append` gives each body the next seq of the store's stream: 1, 2, 3, … never reused, not
//! after acks, drops or restarts. The stream id (16 hex chars from the OS RNG) is minted when the
//! store is created, so a wiped or reset gateway starts a new sequence space. An item leaves only
//! when acked ([`Outbox::ack`]) or dropped by the full policy.
//!
//! # Classes and budgets
//!
//! Every item is of one [`Class`]: a *reading*, a *priority* item (alarm transitions and events,
//! [`Body::is_priority`]) or *evidence* (one part of a camera picture, [`Body::is_evidence`]).
//! Readings and priority items share `max_bytes`; evidence has its own `evidence_max_bytes`, so
//! a picture never pushes out an alarm and readings never push out a picture.
//!
//! # On-disk format (`meta/format` = [`FORMAT_VERSION`] = 2)
//!
//! One sled 0.34 database in the configured directory, five trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `readings` | seq, u64 big-endian | item record |
//! | `priority` | seq, u64 big-endian | item record (alarm transitions and events) |
//! | `evidence` | seq, u64 big-endian | item record (picture parts; format 2) |
//! | `meta` | `format` | u32 BE |
//! | | `stream` | ASCII stream id |
//! | | `next_seq`, `dropped_readings`, `dropped_priority` | u64 BE |
//! | | `dropped_evidence`, `dropped_pictures` | u64 BE (format 2) |
//! | `state` | caller's key (UTF-8) | caller's bytes ([`Outbox::put_state`]) |
//!
//! Beside sled's files, `handed-out` ([`Checkpoint`]): `<next_seq> <items>` as text, rewritten
//! (beside, then renamed) after each flush that handed out new seqs. sled recovers a torn or
//! truncated log silently to an older state; at open, a store whose recovered next seq is below
//! the checkpoint's was torn, and its next seq jumps there ([`OpenReport::torn`]). The uplink
//! then asks the aggregator which of the skipped seqs it holds and reports the rest.
//!
//! Item record: `[1u8 record version][ts_ms: i64 BE][Body as JSON]`. JSON because it is the
//! wire form already (the `Body` serde of `common::wire`), readable in a dump, and the crate
//! already depends on it; the version byte lets a later format switch encoding record by record.
//! The 9-byte header lets the full policy know an item's time without parsing it. A reading is
//! about 150 bytes, a picture part about 66 KiB (48 KiB as base64 plus its metadata). The class
//! trees (rather than one items tree plus an index) mean that "oldest reading", "oldest
//! priority item" and "priority only" each read exactly what they return: dropping is
//! O(dropped), never a walk over another class.
//!
//! Upgrades go forward only, one numbered step per format, in `SledOutbox::try_open`:
//! - 1 → 2: the `evidence` tree and the `dropped_evidence` / `dropped_pictures` totals (0).
//!   A format-1 store kept any picture part in `readings` (format 1 knew no evidence class);
//!   the step moves each to `evidence` under its seq, in one transaction with the new format.
//!
//! A store whose `format` is newer than this build is refused with
//! [`OutboxError::NewerFormat`] (naming the path and both versions) and left untouched.
//!
//! Counters (items and bytes per class) live in memory and are rebuilt at open by one pass
//! over every tree that also decodes every record (sled's `len()` walks every key anyway):
//! about 170 ms for 200 000 items in release on the development machine. The same pass
//! rebuilds the index of stored pictures (sha256 → parts, bytes, alarm episode) that the
//! evidence policy works from. `next_seq` at open is the larger of `meta/next_seq` and the
//! highest key + 1, so appends never write `meta`; an ack or drop writes `meta/next_seq` before
//! it removes anything (see durability).
//!
//! # Full policy
//!
//! `max_bytes` bounds the sum of [`item_cost`] (8-byte key + record) of unacked readings and
//! priority items; it is checked in `append` before it returns, and `stats().bytes <=
//! max_bytes` holds after every call. When an append would go over, one *enforcement round*
//! frees room for the new bodies plus the widest possible gap event ([`gap_reserve`]): the
//! oldest readings first — stored ones, then this call's own — and only when no reading is
//! left the oldest priority items, stored ones, then this call's. Every dropped item is counted
//! in the persisted totals `dropped_readings` / `dropped_priority`, and the round appends
//! exactly one `Event{kind: Gap, dropped: Some(n), from_ms, to_ms}` (the time span of what was
//! dropped, from the record headers) as a priority item, after the call's bodies. A body
//! dropped by its own call (e.g. one larger than the bound) keeps its seq and is counted in
//! that gap event.
//!
//! The gap event's edge case: it must fit too, so the round frees `gap_reserve()` bytes beyond
//! what the bodies need, and [`MIN_MAX_BYTES`] (1 KiB, far above the ~300-byte reserve) makes sure
//! an empty outbox always has room for it. A gap event can itself be dropped by a later round when
//! only priority items are left; that round's gap event counts it.
//!
//! ## Evidence
//!
//! `evidence_max_bytes` bounds the evidence items alone (`stats().evidence_bytes`). When an
//! append's evidence would go over, whole pictures are dropped (every stored part with the
//! same `sha256` together, and this call's parts of it): first a picture larger than the whole
//! budget (it could never fit), then the pictures that belong to no open alarm episode, then
//! those that do ([`Outbox::set_open_alarms`] says which episodes are open; a picture belongs
//! to one when any of its parts names it), oldest (lowest first seq) first within each group,
//! until the new parts fit. This call's own pictures are candidates too. Dropped parts and pictures are counted in the persisted totals
//! `dropped_evidence` / `dropped_pictures`, and one `Event{kind: Gap}` whose message names the
//! pictures (`dropped`: parts, `from_ms`/`to_ms`: the capture times) is appended as a priority
//! item right after the call's bodies; it goes through the main budget like any priority body
//! (so its own round, if any, follows it).
//!
//! Items whose bytes cannot be decoded are found at open, removed, counted in
//! [`OpenReport::undecodable`] and reported with one `Gap` event (no time span: it is unknown).
//! Their seqs still count as handed out.
//!
//! # Durability
//!
//! sled 0.34 keeps writes in in-process buffers and writes them out every `flush_interval_ms`
//! (its background flusher) or on `flush()`. So:
//!
//! - an append with a priority or evidence body (or an enforcement round) flushes before
//!   returning: when it returns, that item and everything appended before it survive kill -9
//!   and power loss (a picture is taken once; it cannot be polled again like a reading);
//! - readings are durable within `flush_interval_ms`. **This window applies to kill -9 as well,
//!   not only to power loss**: the crash test aborts the process after 1000 appended readings
//!   without a flush, and 0 of them survive. `flush_interval_ms = 0` flushes on every append
//!   (DESIGN §6's zero loss on kill -9), at about 0.6 ms per append of 100 readings here;
//! - acks and `put_state` are not flushed: a lost ack means a resend the aggregator dedupes;
//!   state is as durable as the next flush;
//! - what survives a crash is a prefix of the operations (sled recovers its log in order). The
//!   outbox relies on that: it writes `meta/next_seq` (and drop totals) *before* removing items,
//!   so a surviving removal implies a surviving `next_seq` and seqs are never reused; a drop can
//!   be over-reported after a crash, never hidden;
//! - a corrupt store at start-up (sled refuses to open it, or `meta` cannot be decoded) is moved
//!   aside to `<dir>.corrupt-<unix_ms>` (left there for a post-mortem) and a fresh store with a
//!   new stream is created whose first item is an `Event{kind: StoreReset}` naming that path;
//!   [`OpenReport`] says so too. A held lock, missing permission or a full disk is not corruption
//!   and is returned as an error. Tested: garbage in all files makes sled refuse to open
//!   (`Unsupported`); a garbage log with an intact `conf` opens as an *empty* database, which the
//!   outbox recognises (files existed, no meta) and treats as corrupt too. sled stops recovery
//!   at the first unreadable log message, so damage in the middle of the log loses what follows
//!   it as silently as a crash would: the checkpoint file is what notices it (see the format).
//! - a store put back to an older copy (a restored backup) has its old checkpoint too; only
//!   the aggregator knows it is behind. The uplink asks it before sending anything and, if it
//!   holds seqs this run would reuse, moves this run's items past them
//!   ([`Outbox::renumber`], one sled transaction).
//!
//! # Space on disk
//!
//! The directory is larger than `bytes`, and sled gives space back lazily and unpredictably.
//! Measured with `examples/outbox_bench.rs` (release, this machine): 200 000 readings (31.8 MB of
//! `bytes`) took 72 MiB on disk; acking all of them did not shrink it; after 100 000 more
//! append+ack cycles it was 21.5 MiB in one run and still 73 MiB in another (also after reopen).
//! In steady state (append one reading, ack it) the store stayed at 3.5–4.0 MiB through
//! 1 000 000 cycles (159 MB written through it), 2 MiB after reopen. So size the disk for
//! about 2.5 × `max_bytes` plus a few MiB. One trap measured on the way: `sled::Batch` costs about
//! 100 µs and its manifests pinned space (60 MiB after 250 000 cycles), so the hot paths use plain
//! inserts.
//!
//! # Speed (release, 2-core development machine, `examples/outbox_bench.rs`)
//!
//! Raw sled insert of a 151-byte value: ~200–260 k/s. `append` with batches of 1 reading: ~224
//! k/s; of 100 readings: ~214 k/s (83–87 % of raw). Flush on every append (100 readings): ~170 k
//! items/s. Full outbox (every append drops and fsyncs): ~80–108 k items/s. Append+ack cycle: ~340
//! k/s. Reopen with 200 000 unacked items: ~170 ms.
//!
//! # Model check
//!
//! `tests.rs` runs random sequences of appends (readings, priority items and pictures of one to
//! three parts, some of an alarm episode, of random sizes), changes of the open episodes,
//! acks (random, reversed, duplicate and bogus ranges, and hits on pending items), state writes,
//! flushes and reopens (a real close and reopen of the sled directory; a no-op for the model)
//! against both implementations with a `max_bytes` of 1–3 KiB and an `evidence_max_bytes` of
//! 1–4 KiB, so both policies fire in most cases, and asserts after every operation that
//! everything observable is equal: all pending items, each class's pending items, `newest`, a
//! `pending_range` window, `stats()` (items, bytes, per-class items and bytes, next_seq, drop
//! totals, oldest ts), state values, both byte bounds, whole pictures only, and a stream
//! id stable across reopen. Unit tests cover what a model cannot: a crash (the test binary
//! re-runs itself as a child that aborts) after a priority append and after unflushed readings,
//! a corrupt store (garbage files, a garbage log, bad meta), a newer format, undecodable items,
//! a picture's durability across a crash, the 1 → 2 upgrade.

use std::collections::BTreeSet;
use std::path::PathBuf;

use fumegrid_common::wire::{Body, Event, EventKind, Item};

mod mem;
mod sled_store;
#[cfg(test)]
mod tests;

pub use mem::MemOutbox;
pub use sled_store::{Checkpoint, SledOutbox, release_reserve};

/// The on-disk format this build writes and understands (`meta/format`).
pub const FORMAT_VERSION: u32 = 2;

/// Which budget and tree an item belongs to (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Reading,
    /// Alarm transitions and events ([`Body::is_priority`]).
    Priority,
    /// Parts of camera pictures ([`Body::is_evidence`]).
    Evidence,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Reading, Class::Priority, Class::Evidence];

    pub fn of(body: &Body) -> Class {
        if body.is_priority() {
            Class::Priority
        } else if body.is_evidence() {
            Class::Evidence
        } else {
            Class::Reading
        }
    }

    fn index(self) -> usize {
        match self {
            Class::Reading => 0,
            Class::Priority => 1,
            Class::Evidence => 2,
        }
    }
}

/// The seam between producers/uplink and storage. [`SledOutbox`] is the real one, [`MemOutbox`]
/// the model with identical semantics.
///
/// Seqs start at 1, so `after = 0` means "from the beginning". All methods are synchronous:
/// sled is, and an operation takes microseconds (a priority append: one fsync).
pub trait Outbox: Send + std::fmt::Debug {
    /// Random id of this store's sequence space, minted when the store was created (16 hex
    /// chars) and stable across restarts. Goes into every `Batch` and is checked against every
    /// `Ack`.
    fn stream(&self) -> &str;

    /// Stores `bodies` under consecutive new seqs (returned in order) and enforces the byte bound.
    ///
    /// If any body is a priority item or evidence, or the full policy dropped something, the
    /// store is flushed (fsync) before returning. Readings are durable within `flush_interval_ms`
    /// (sled's background flush), or at once when it is 0.
    ///
    /// When the bound is hit, a body of this very call can be dropped (readings before priority
    /// items, as for stored ones); its seq is still consumed and it is counted in the gap event,
    /// which gets the seq after the last body's.
    fn append(&mut self, bodies: Vec<Body>, now_ms: i64) -> Result<Vec<u64>, OutboxError>;

    /// Unacked items with `after < seq < before`, ascending, at most `limit`; only priority items
    /// if `priority_only`.
    fn pending_range(
        &self,
        after: u64,
        before: u64,
        limit: usize,
        priority_only: bool,
    ) -> Result<Vec<Item>, OutboxError>;

    /// Unacked items of one class with `after < seq < before`, ascending, at most `limit`. The
    /// uplink reads readings and pictures apart, so that a batch of readings never reads (and
    /// decodes) a picture's 64 KiB parts only to skip them.
    fn pending_class(
        &self,
        class: Class,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Item>, OutboxError>;

    /// Unacked items with `seq > after`, ascending, at most `limit`.
    fn pending(
        &self,
        after: u64,
        limit: usize,
        priority_only: bool,
    ) -> Result<Vec<Item>, OutboxError> {
        self.pending_range(after, u64::MAX, limit, priority_only)
    }

    /// The newest `limit` unacked items (only priority ones if `priority_only`), returned in
    /// ascending order.
    ///
    /// Intended use by the uplink, which keeps two cursors: on (re)connect it calls
    /// `newest(n, false)` and sends those at once; the first seq of that answer splits the
    /// outbox into *live* (`seq >= split`, followed by `pending(live_cursor, ..)` as new items
    /// arrive) and *backlog* (`seq < split`, drained oldest first with
    /// `pending_range(backlog_cursor, split, ..)` at a bounded rate, priority items first via
    /// `priority_only = true`). Either cursor only moves forward; the aggregator's acks, not the
    /// cursors, decide what is deleted, so anything published and not acked within the ack
    /// timeout is found again by restarting a cursor from 0.
    fn newest(&self, limit: usize, priority_only: bool) -> Result<Vec<Item>, OutboxError>;

    /// Deletes the items in the inclusive `ranges`. Duplicates, overlaps, reversed ranges and
    /// seqs that do not exist (never did, already acked, dropped) are ignored. Returns how many
    /// items were removed. Not flushed: an ack lost in a crash only means a resend, which the
    /// aggregator dedupes.
    fn ack(&mut self, ranges: &[(u64, u64)]) -> Result<u64, OutboxError>;

    /// Moves every item with `seq >= from` up by `to - from` (keeping their order) and
    /// advances the next seq by as much, so that none of `from..to` is ever handed out. For a
    /// store found behind the aggregator (see the uplink's hello): the items appended since it
    /// opened get seqs past everything already delivered. Atomic and flushed; `to <= from` is a
    /// no-op. Returns how many items moved.
    fn renumber(&mut self, from: u64, to: u64) -> Result<u64, OutboxError>;

    /// Maintained counters; O(1) apart from two head look-ups for `oldest_ts_ms`.
    fn stats(&self) -> OutboxStats;

    /// Makes everything written so far durable (fsync).
    fn flush(&mut self) -> Result<(), OutboxError>;

    /// Seqs handed out since the last flush that worked: what a crash now would lose. For a
    /// gateway that stops while flushes fail (a full disk), so that the loss is counted.
    fn undurable(&self) -> u64 {
        0
    }

    /// The alarm episodes (`Alarm::id`) open now, for the evidence policy: pictures of an open
    /// episode are dropped only after every other picture. Kept in memory (the evidence
    /// pipeline sets it before each append of pictures; it knows the episodes from the rules).
    fn set_open_alarms(&mut self, ids: BTreeSet<String>);

    /// Small KV for other components' state that must survive restarts (alarm rule state).
    /// Durable with the next flush: any priority append, an explicit [`Outbox::flush`], or
    /// sled's background flush within `flush_interval_ms`. Not counted in `stats().bytes`.
    fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), OutboxError>;

    /// See [`Outbox::put_state`].
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError>;

    /// Removes a state key (absent is fine).
    fn remove_state(&mut self, key: &str) -> Result<(), OutboxError>;
}

/// How the outbox is bounded and flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Bound on the stored items' bytes (see [`item_cost`]), not on the directory's size, which
    /// sled's log makes larger (see the module doc). Default 256 MiB; at least
    /// [`MIN_MAX_BYTES`].
    pub max_bytes: u64,
    /// How often sled flushes in the background, i.e. the power-loss (and kill -9) window for
    /// readings. 0 = flush on every append. Default 500 ms.
    pub flush_interval_ms: u64,
    /// Bound on the stored evidence items' bytes (picture parts), apart from `max_bytes`.
    /// Default 64 MiB; at least [`MIN_MAX_BYTES`].
    pub evidence_max_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 256 * 1024 * 1024,
            flush_interval_ms: 500,
            evidence_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Smallest accepted `max_bytes`: room for the largest possible gap event, with margin.
pub const MIN_MAX_BYTES: u64 = 1024;

impl OutboxConfig {
    pub fn validate(&self) -> Result<(), OutboxError> {
        for (field, v) in [
            ("max_bytes", self.max_bytes),
            ("evidence_max_bytes", self.evidence_max_bytes),
        ] {
            if v < MIN_MAX_BYTES {
                return Err(OutboxError::Config {
                    field,
                    max_bytes: v,
                    min: MIN_MAX_BYTES,
                });
            }
        }
        Ok(())
    }
}

/// What [`Outbox::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Unacked items of every class.
    pub items: u64,
    /// Sum of [`item_cost`] over unacked readings and priority items; never above `max_bytes`
    /// after an append.
    pub bytes: u64,
    pub priority_items: u64,
    pub evidence_items: u64,
    /// Sum of [`item_cost`] over unacked evidence items; never above `evidence_max_bytes`.
    pub evidence_bytes: u64,
    /// The seq the next appended item gets.
    pub next_seq: u64,
    /// Totals over the store's life (persisted): items removed by the full policy.
    pub dropped_readings: u64,
    pub dropped_priority: u64,
    /// Totals over the store's life (persisted): evidence items (parts) and whole pictures
    /// removed by the evidence policy.
    pub dropped_evidence: u64,
    pub dropped_pictures: u64,
    /// `ts_ms` of the unacked item with the lowest seq.
    pub oldest_ts_ms: Option<i64>,
    pub max_bytes: u64,
    pub evidence_max_bytes: u64,
}

/// What [`SledOutbox::open`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenReport {
    /// No store existed: a new one (and a new stream id) was created.
    pub created: bool,
    /// The store was corrupt and was moved aside to this path; a fresh one was created (new
    /// stream id) and its first item is an `Event{kind: StoreReset}`.
    pub moved_aside: Option<PathBuf>,
    /// Why it was judged corrupt (set with `moved_aside`).
    pub reason: Option<String>,
    /// Items whose bytes could not be decoded: removed, and reported to the aggregator with one
    /// `Event{kind: Gap}` (no time span: it is unknown).
    pub undecodable: u64,
    /// Unacked items after opening (including any event appended by the opening).
    pub items: u64,
    pub next_seq: u64,
    /// The next seq as recovered from the store's contents: seqs from here on may have been
    /// handed out by an earlier run and lost since (rolled back or torn).
    pub recovered_next_seq: u64,
    /// The next seq before the opening appended anything: every item at or above it is new in
    /// this run (what [`Outbox::renumber`] moves if the aggregator holds more).
    pub start_next_seq: u64,
    /// The checkpoint file said the store had handed out more than it recovered (a torn or
    /// truncated log): `start_next_seq` was moved past it.
    pub torn: Option<Checkpoint>,
}

/// Errors name the store's path and the operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {}: cannot {op}: {source}", path.display())]
    Store {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error(
        "outbox {}: on-disk format {found} is newer than this gateway understands (format \
         {supported}); the store was left untouched: run a newer gateway or move the directory aside",
        path.display()
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "outbox {}: store is corrupt ({reason}) and cannot be moved aside to {}: {source}",
        path.display(),
        to.display()
    )]
    MoveAside {
        path: PathBuf,
        to: PathBuf,
        reason: String,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox {}: a fresh store is unusable too after moving the corrupt one aside: {reason}", path.display())]
    ResetFailed { path: PathBuf, reason: String },
    #[error("outbox {}: cannot mint a stream id: {cause}", path.display())]
    Random {
        path: PathBuf,
        cause: getrandom::Error,
    },
    #[error("outbox: cannot encode an item: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(
        "outbox config: {field} = {max_bytes} is below the minimum {min} (the gap event alone \
         needs room)"
    )]
    Config {
        field: &'static str,
        max_bytes: u64,
        min: u64,
    },
}

// ---- record encoding (shared by both implementations so their byte counts agree) ----

/// Version byte that starts every item record.
const RECORD_V1: u8 = 1;
/// `[version u8][ts_ms i64 BE]`, then the body as JSON.
const RECORD_HEADER: usize = 9;
/// An item's key in the items trees: its seq, big-endian.
const KEY_LEN: u64 = 8;

/// What one stored item counts against `max_bytes`: key plus record.
pub fn item_cost(record_len: usize) -> u64 {
    KEY_LEN + record_len as u64
}

fn body_ts(body: &Body) -> i64 {
    body.ts_ms()
}

fn encode_record(body: &Body) -> Result<Vec<u8>, OutboxError> {
    let mut rec = Vec::with_capacity(160);
    rec.push(RECORD_V1);
    rec.extend_from_slice(&body_ts(body).to_be_bytes());
    serde_json::to_writer(&mut rec, body).map_err(OutboxError::Encode)?;
    Ok(rec)
}

/// The timestamp in a record's header, without decoding the body.
fn record_ts(rec: &[u8]) -> Option<i64> {
    if rec.len() < RECORD_HEADER || rec[0] != RECORD_V1 {
        return None;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&rec[1..RECORD_HEADER]);
    Some(i64::from_be_bytes(ts))
}

fn decode_record(rec: &[u8]) -> Result<Body, String> {
    match rec.first() {
        None => return Err("empty record".into()),
        Some(&RECORD_V1) if rec.len() >= RECORD_HEADER => {}
        Some(&RECORD_V1) => return Err(format!("record of {} bytes is truncated", rec.len())),
        Some(v) => return Err(format!("unknown record version {v}")),
    }
    serde_json::from_slice(&rec[RECORD_HEADER..]).map_err(|e| format!("bad body: {e}"))
}

/// What the full policy removed in one enforcement round.
#[derive(Debug, Default, Clone, Copy)]
struct Dropped {
    readings: u64,
    priority: u64,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

impl Dropped {
    fn add(&mut self, priority: bool, ts: Option<i64>) {
        if priority {
            self.priority += 1;
        } else {
            self.readings += 1;
        }
        if let Some(ts) = ts {
            self.from_ms = Some(self.from_ms.map_or(ts, |f| f.min(ts)));
            self.to_ms = Some(self.to_ms.map_or(ts, |t| t.max(ts)));
        }
    }
}

fn gap_event(now_ms: i64, d: &Dropped) -> Body {
    Body::Event(Event {
        ts_ms: now_ms,
        kind: EventKind::Gap,
        message: format!(
            "outbox full: dropped {} readings and {} priority items",
            d.readings, d.priority
        ),
        dropped: Some(d.readings.saturating_add(d.priority)),
        from_ms: d.from_ms,
        to_ms: d.to_ms,
    })
}

/// What the evidence policy removed in one round.
#[derive(Debug, Default, Clone, Copy)]
struct DroppedPictures {
    pictures: u64,
    parts: u64,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

impl DroppedPictures {
    fn add_part(&mut self, ts: Option<i64>) {
        self.parts += 1;
        if let Some(ts) = ts {
            self.from_ms = Some(self.from_ms.map_or(ts, |f| f.min(ts)));
            self.to_ms = Some(self.to_ms.map_or(ts, |t| t.max(ts)));
        }
    }
}

fn evidence_gap_event(now_ms: i64, d: &DroppedPictures) -> Body {
    Body::Event(Event {
        ts_ms: now_ms,
        kind: EventKind::Gap,
        message: format!(
            "outbox evidence budget full: dropped {} pictures ({} parts), oldest first, \
             pictures of open alarms last",
            d.pictures, d.parts
        ),
        dropped: Some(d.parts),
        from_ms: d.from_ms,
        to_ms: d.to_ms,
    })
}

/// A picture as the evidence policy sees it: the `sha256` its parts share, its lowest seq,
/// whether it belongs to an open alarm episode (any of its parts names one), and the bytes of
/// its parts.
#[derive(Debug, Clone)]
struct PictureCost {
    sha256: String,
    first_seq: u64,
    open: bool,
    cost: u64,
}

/// Which pictures go so that `need` bytes are freed: one larger than the whole budget `max`
/// first (it could never fit), then those of no open episode, then the others, oldest first
/// within each. Both implementations choose through this function.
fn pick_pictures(mut pictures: Vec<PictureCost>, need: u64, max: u64) -> Vec<String> {
    pictures.sort_by_key(|p| (p.cost <= max, p.open, p.first_seq));
    let mut freed = 0u64;
    let mut out = Vec::new();
    for p in pictures {
        if freed >= need {
            break;
        }
        freed += p.cost;
        out.push(p.sha256);
    }
    out
}

/// The picture identity and episode of an evidence body.
fn picture_of(body: &Body) -> Option<(&str, Option<&str>)> {
    match body {
        Body::Evidence(e) => Some((e.sha256.as_str(), e.meta.alarm.as_deref())),
        _ => None,
    }
}

fn is_open(open: &BTreeSet<String>, alarm: Option<&str>) -> bool {
    alarm.is_some_and(|a| open.contains(a))
}

/// Bytes to keep free for the gap event of an enforcement round: the cost of the widest one
/// possible (every number at its longest), so the real one always fits.
pub fn gap_reserve() -> u64 {
    let widest = Dropped {
        readings: u64::MAX,
        priority: u64::MAX,
        from_ms: Some(i64::MIN),
        to_ms: Some(i64::MIN),
    };
    let rec = encode_record(&gap_event(i64::MIN, &widest)).map_or(512, |r| r.len());
    item_cost(rec)
}

fn event(now_ms: i64, kind: EventKind, message: String, dropped: Option<u64>) -> Body {
    Body::Event(Event {
        ts_ms: now_ms,
        kind,
        message,
        dropped,
        from_ms: None,
        to_ms: None,
    })
}

/// The tests' wall time (the store itself is handed its time: see `SledOutbox::open_with_clock`).
#[cfg(test)]
fn unix_ms_now() -> i64 {
    fumegrid_common::clock::Clock::system().now_ms()
}
