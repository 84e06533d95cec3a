//! [`SledOutbox`]: the outbox on sled 0.34. The format is described in the module doc of
//! [`super`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::{Body, EventKind, Item};
use sled::{IVec, Tree};

use crate::telemetry as m;

use super::{
    Class, Dropped, DroppedPictures, FORMAT_VERSION, OpenReport, Outbox, OutboxConfig, OutboxError,
    OutboxStats, PictureCost, decode_record, encode_record, event, evidence_gap_event, gap_event,
    gap_reserve, is_open, item_cost, pick_pictures, picture_of, record_ts,
};

/// Tree names. Each class lives in its own tree keyed by seq, so that "oldest reading",
/// "oldest priority item" and "priority only" never walk another class.
const T_READINGS: &str = "readings";
const T_PRIORITY: &str = "priority";
const T_EVIDENCE: &str = "evidence";
const T_META: &str = "meta";
const T_STATE: &str = "state";

const K_FORMAT: &str = "format";
const K_STREAM: &str = "stream";
const K_NEXT_SEQ: &str = "next_seq";
const K_DROPPED_READINGS: &str = "dropped_readings";
const K_DROPPED_PRIORITY: &str = "dropped_priority";
const K_DROPPED_EVIDENCE: &str = "dropped_evidence";
const K_DROPPED_PICTURES: &str = "dropped_pictures";

/// A small file next to sled's own, rewritten after every flush that handed out new seqs:
/// `next_seq items` as decimal text. sled recovers a torn or truncated log silently to an older
/// state; this file, which sled never touches, tells how far the store had got (see
/// [`Checkpoint`]).
const CHECKPOINT_FILE: &str = "handed-out";

/// What [`CHECKPOINT_FILE`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The next seq when the store was last flushed: every seq below it had been handed out
    /// and was durable.
    pub next_seq: u64,
    /// Unacked items then.
    pub items: u64,
}

impl Checkpoint {
    pub fn read(dir: &Path) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
        let mut it = text.split_ascii_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(next_seq)), Some(Ok(items))) => Some(Checkpoint { next_seq, items }),
            _ => {
                tracing::warn!(path = %dir.display(), "outbox checkpoint file unreadable; ignored");
                None
            }
        }
    }

    /// Written beside, then renamed over, so a reader sees the old or the new one. Not fsynced:
    /// after a power loss it can only be older than the store, which weakens the check and
    /// never raises a false alarm.
    fn write(self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        std::fs::write(&tmp, format!("{} {}\n", self.next_seq, self.items))?;
        std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))
    }
}

/// A file of [`RESERVE_BYTES`] kept in the store's folder and given up when the disk is full:
/// sled needs room to open a store (measured: on a full file system `open` fails with ENOSPC,
/// and the gateway would crash-loop on start with its data locked in). Released, the open
/// succeeds, the uplink drains the outbox, and the reserve is made again at the next open.
const RESERVE_FILE: &str = "reserve";
const RESERVE_BYTES: usize = 1 << 20;

fn is_disk_full(e: &OutboxError) -> bool {
    matches!(e, OutboxError::Store { source: sled::Error::Io(io), .. }
        if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
}

/// How long to wait for sled's file lock (see [`SledOutbox::try_open`]).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the lock is tried again within [`LOCK_WAIT`].
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// sled's page cache defaults to 1 GiB; an edge box has less RAM than that to spare.
const CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

/// Item counts and bytes per class, maintained on every change (never `Tree::len`).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    items: u64,
    bytes: u64,
}

/// One stored picture, in the index the evidence policy works from (rebuilt at open).
#[derive(Debug, Clone, Default)]
struct Picture {
    /// Its stored parts: seq → the alarm episode the part names.
    seqs: BTreeMap<u64, Option<String>>,
    /// Sum of their [`item_cost`].
    cost: u64,
}

impl Picture {
    fn add(&mut self, seq: u64, cost: u64, alarm: Option<&str>) {
        self.seqs.insert(seq, alarm.map(str::to_string));
        self.cost += cost;
    }

    fn is_open(&self, open: &BTreeSet<String>) -> bool {
        self.seqs.values().any(|a| is_open(open, a.as_deref()))
    }
}

/// The outbox on disk. See the module doc of [`super`] for format, policy and durability.
pub struct SledOutbox {
    path: PathBuf,
    db: sled::Db,
    /// Indexed by [`Class::index`]: readings, priority, evidence.
    trees: [Tree; 3],
    meta: Tree,
    state: Tree,
    stream: String,
    max_bytes: u64,
    evidence_max_bytes: u64,
    sync_every_append: bool,
    gap_reserve: u64,
    next_seq: u64,
    /// `next_seq` as last written to `meta`; it must be written before any removal (see
    /// [`SledOutbox::persist_meta`]).
    persisted_next_seq: u64,
    dropped_readings: u64,
    dropped_priority: u64,
    dropped_evidence: u64,
    dropped_pictures: u64,
    /// Indexed by [`Class::index`].
    counts: [Counts; 3],
    /// Stored pictures by `sha256`.
    pictures: HashMap<String, Picture>,
    open_alarms: BTreeSet<String>,
    /// `next_seq` as last written to the checkpoint file, and whether that write failed last
    /// time (logged once per streak).
    checkpointed: u64,
    checkpoint_failing: bool,
    /// `next_seq` at the last flush that worked (or at open).
    durable_next_seq: u64,
}

impl std::fmt::Debug for SledOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledOutbox")
            .field("path", &self.path)
            .field("stream", &self.stream)
            .field("next_seq", &self.next_seq)
            .field("counts", &self.counts)
            .field("pictures", &self.pictures.len())
            .finish_non_exhaustive()
    }
}

/// Why an open attempt failed: corrupt (move aside and start afresh) or not ours to fix.
enum OpenFailure {
    Corrupt(String),
    Fatal(OutboxError),
}

impl From<OutboxError> for OpenFailure {
    fn from(e: OutboxError) -> Self {
        OpenFailure::Fatal(e)
    }
}

/// sled errors at open that mean "the bytes are bad" rather than "the environment is wrong".
/// A held lock, missing permission or a full disk is not corruption: moving the store aside
/// would hide good data.
fn classify(op: &str, e: sled::Error, path: &Path, op_static: &'static str) -> OpenFailure {
    use std::io::ErrorKind;
    let corrupt = match &e {
        sled::Error::Io(io) => {
            matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData)
        }
        sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_)
        | sled::Error::CollectionNotFound(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    };
    if corrupt {
        OpenFailure::Corrupt(format!("{op}: {e}"))
    } else {
        OpenFailure::Fatal(OutboxError::Store {
            path: path.to_owned(),
            op: op_static,
            source: e,
        })
    }
}

/// sled 0.34 reports a held file lock as `Io(Other, "could not acquire lock on …")`.
pub(crate) fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(k: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes)
}

fn meta_u64(meta: &Tree, key: &str) -> Result<Option<u64>, String> {
    match meta.get(key) {
        Err(e) => Err(format!("read meta/{key}: {e}")),
        Ok(None) => Ok(None),
        Ok(Some(v)) => <[u8; 8]>::try_from(v.as_ref())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| format!("meta/{key} has {} bytes, expected 8", v.len())),
    }
}

impl SledOutbox {
    /// Opens (or creates) the store in `dir`. A corrupt store is moved aside to
    /// `<dir>.corrupt-<unix_ms>` and replaced by a fresh one whose first item is a `StoreReset`
    /// event; a store of a newer format is refused untouched. Times on the system clock (tools
    /// and tests; the daemon hands its own to [`Self::open_with_clock`]).
    pub fn open(dir: &Path, cfg: OutboxConfig) -> Result<(Self, OpenReport), OutboxError> {
        Self::open_with_clock(dir, cfg, &Clock::system())
    }

    /// [`Self::open`], with the time of the events it may write (and of a corrupt store's new
    /// name) read from `clock`, once.
    pub fn open_with_clock(
        dir: &Path,
        cfg: OutboxConfig,
        clock: &Clock,
    ) -> Result<(Self, OpenReport), OutboxError> {
        cfg.validate()?;
        let now = clock.now_ms();
        let mut first = Self::try_open_catching(dir, &cfg, now);
        let reserve = dir.join(RESERVE_FILE);
        if let Err(OpenFailure::Fatal(e)) = &first
            && is_disk_full(e)
            && std::fs::remove_file(&reserve).is_ok()
        {
            tracing::error!(path = %dir.display(), bytes = RESERVE_BYTES,
                "disk full: gave up the outbox's reserve to open it; free space on this file system");
            first = Self::try_open_catching(dir, &cfg, now);
        }
        let reason = match first {
            Ok(opened) => {
                make_reserve(&reserve);
                return Ok(opened);
            }
            Err(OpenFailure::Fatal(e)) => return Err(e),
            Err(OpenFailure::Corrupt(reason)) => reason,
        };
        let lost = Checkpoint::read(dir);
        let moved_to = corrupt_path(dir, now);
        tracing::error!(path = %dir.display(), moved_to = %moved_to.display(), %reason,
            "outbox store is corrupt; moving it aside and starting a fresh one");
        std::fs::rename(dir, &moved_to).map_err(|source| OutboxError::MoveAside {
            path: dir.to_owned(),
            to: moved_to.clone(),
            reason: reason.clone(),
            source,
        })?;
        let (mut me, mut report) = match Self::try_open(dir, &cfg, now) {
            Ok(opened) => opened,
            Err(OpenFailure::Fatal(e)) => return Err(e),
            Err(OpenFailure::Corrupt(r)) => {
                return Err(OutboxError::ResetFailed {
                    path: dir.to_owned(),
                    reason: r,
                });
            }
        };
        let mut message = format!(
            "outbox store was corrupt ({reason}); moved aside to {} and started afresh",
            moved_to.display()
        );
        if let Some(cp) = lost {
            message += &format!(
                "; at its last flush it held {} unsent items (seqs below {}), which stay there",
                cp.items, cp.next_seq
            );
        }
        me.append(
            vec![event(
                now,
                EventKind::StoreReset,
                message,
                lost.map(|c| c.items),
            )],
            now,
        )?;
        report.moved_aside = Some(moved_to);
        report.reason = Some(reason);
        report.items = me.stats().items;
        report.next_seq = me.next_seq;
        Ok((me, report))
    }

    /// [`Self::try_open`], with a panic inside sled taken for corruption. Measured: 4 KiB of
    /// junk in the middle of a log makes sled 0.34 panic while it recovers its snapshot
    /// ("tried to serialize Uninitialized"); uncaught, the gateway would crash-loop on start.
    /// (Needs `panic = "unwind"`, which the workspace's release profile keeps for this, and
    /// [`fumegrid_common::panic::contained`], or the daemons' panic hook aborts.)
    fn try_open_catching(
        dir: &Path,
        cfg: &OutboxConfig,
        now: i64,
    ) -> Result<(Self, OpenReport), OpenFailure> {
        let open = || fumegrid_common::panic::contained(|| Self::try_open(dir, cfg, now));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Err(OpenFailure::Corrupt(format!(
                    "sled panicked while recovering it: {msg}"
                )))
            }
        }
    }

    fn try_open(
        dir: &Path,
        cfg: &OutboxConfig,
        now: i64,
    ) -> Result<(Self, OpenReport), OpenFailure> {
        let path = dir.to_owned();
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            .flush_every_ms(match cfg.flush_interval_ms {
                0 => None,
                ms => Some(ms),
            });
        // sled releases its file lock a moment after the last handle is dropped (its I/O
        // threads let go of the file asynchronously), so an in-process reopen can find it still
        // held. Another live process holding it is still refused, after LOCK_WAIT.
        // sled opens a log it cannot read as an empty database; an existing store that comes
        // back without meta is corrupt, not new.
        let existed = dir.join("conf").exists() || dir.join("db").exists();
        // Counted tries rather than a deadline: no clock to read, and a paused test clock
        // cannot make it spin.
        let mut tries = LOCK_WAIT.as_millis() / LOCK_RETRY.as_millis();
        let db = loop {
            match config.open() {
                Err(e) if is_lock_held(&e) && tries > 0 => {
                    tries -= 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                r => break r,
            }
        }
        .map_err(|e| classify("open sled database", e, &path, "open sled database"))?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| classify(&format!("open tree {name}"), e, &path, "open tree"))
        };
        let readings = tree(T_READINGS)?;
        let priority = tree(T_PRIORITY)?;
        let evidence = tree(T_EVIDENCE)?;
        let meta = tree(T_META)?;
        let state = tree(T_STATE)?;

        let mut report = OpenReport::default();
        let format = meta
            .get(K_FORMAT)
            .map_err(|e| OpenFailure::Corrupt(format!("read meta/format: {e}")))?;
        let (stream, meta_next_seq, dropped) = match format {
            None => {
                let empty = meta.is_empty()
                    && readings.is_empty()
                    && priority.is_empty()
                    && evidence.is_empty();
                if !empty {
                    return Err(OpenFailure::Corrupt(
                        "meta has no format version but the store holds data".into(),
                    ));
                }
                if existed {
                    return Err(OpenFailure::Corrupt(
                        "the store's files exist but sled recovered nothing from them \
                         (unreadable log)"
                            .into(),
                    ));
                }
                let stream = mint_stream(dir)?;
                let mut b = sled::Batch::default();
                b.insert(K_FORMAT, &FORMAT_VERSION.to_be_bytes()[..]);
                b.insert(K_STREAM, stream.as_bytes());
                b.insert(K_NEXT_SEQ, &1u64.to_be_bytes()[..]);
                b.insert(K_DROPPED_READINGS, &0u64.to_be_bytes()[..]);
                b.insert(K_DROPPED_PRIORITY, &0u64.to_be_bytes()[..]);
                b.insert(K_DROPPED_EVIDENCE, &0u64.to_be_bytes()[..]);
                b.insert(K_DROPPED_PICTURES, &0u64.to_be_bytes()[..]);
                meta.apply_batch(b).map_err(|source| OutboxError::Store {
                    path: path.clone(),
                    op: "initialise meta",
                    source,
                })?;
                db.flush().map_err(|source| OutboxError::Store {
                    path: path.clone(),
                    op: "flush new store",
                    source,
                })?;
                report.created = true;
                (stream, 1, [0; 4])
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        OpenFailure::Corrupt(format!(
                            "meta/format has {} bytes, expected 4",
                            v.len()
                        ))
                    })?;
                if found > FORMAT_VERSION {
                    return Err(OpenFailure::Fatal(OutboxError::NewerFormat {
                        path,
                        found,
                        supported: FORMAT_VERSION,
                    }));
                }
                if found < 1 {
                    return Err(OpenFailure::Corrupt(format!("meta/format is {found}")));
                }
                // Upgrades go forward only, one numbered step per version, here.
                if found == 1 {
                    upgrade_1_to_2(&path, &readings, &evidence, &meta)?;
                }
                let stream = match meta.get(K_STREAM) {
                    Ok(Some(s)) => match std::str::from_utf8(&s) {
                        Ok(s) if !s.is_empty() && s.is_ascii() => s.to_owned(),
                        _ => return Err(OpenFailure::Corrupt("meta/stream is not an id".into())),
                    },
                    Ok(None) => return Err(OpenFailure::Corrupt("meta/stream is missing".into())),
                    Err(e) => return Err(OpenFailure::Corrupt(format!("read meta/stream: {e}"))),
                };
                let get = |k: &str| -> Result<u64, OpenFailure> {
                    meta_u64(&meta, k)
                        .map_err(OpenFailure::Corrupt)?
                        .ok_or_else(|| OpenFailure::Corrupt(format!("meta/{k} is missing")))
                };
                (
                    stream,
                    get(K_NEXT_SEQ)?,
                    [
                        get(K_DROPPED_READINGS)?,
                        get(K_DROPPED_PRIORITY)?,
                        get(K_DROPPED_EVIDENCE)?,
                        get(K_DROPPED_PICTURES)?,
                    ],
                )
            }
        };

        // One pass over every item: counters, the highest seq, and every record decoded so a
        // bad one is found now rather than wedging the uplink later.
        let mut max_seq = 0u64;
        let mut bad: Vec<(Class, IVec)> = Vec::new();
        let mut counts = [Counts::default(); 3];
        let mut pictures: HashMap<String, Picture> = HashMap::new();
        for (class, t) in Class::ALL
            .into_iter()
            .zip([&readings, &priority, &evidence])
        {
            for kv in t.iter() {
                let (k, v) = kv.map_err(|e| OpenFailure::Corrupt(format!("scan items: {e}")))?;
                let body = decode_record(&v).ok().filter(|b| Class::of(b) == class);
                match key_seq(&k).zip(body) {
                    Some((seq, body)) => {
                        max_seq = max_seq.max(seq);
                        let c = &mut counts[class.index()];
                        c.items += 1;
                        c.bytes += item_cost(v.len());
                        if let Some((sha, alarm)) = picture_of(&body) {
                            pictures.entry(sha.to_string()).or_default().add(
                                seq,
                                item_cost(v.len()),
                                alarm,
                            );
                        }
                    }
                    None => {
                        // Its seq was handed out even if its bytes are bad.
                        if let Some(seq) = key_seq(&k) {
                            max_seq = max_seq.max(seq);
                        }
                        bad.push((class, k));
                    }
                }
            }
        }
        let recovered = meta_next_seq.max(max_seq.saturating_add(1));
        report.recovered_next_seq = recovered;
        let mut next_seq = recovered;
        // The store had handed out more than it recovered: its log was torn or truncated (or
        // the checkpoint survived a restore of an older copy). Never hand those seqs out again;
        // the uplink's hello finds out which of them the aggregator holds and reports the rest.
        let checkpoint = if report.created {
            None
        } else {
            Checkpoint::read(dir)
        };
        if let Some(cp) = checkpoint
            && cp.next_seq > recovered
        {
            tracing::error!(path = %path.display(), recovered_next_seq = recovered,
                checkpoint_next_seq = cp.next_seq, items_at_checkpoint = cp.items,
                "outbox came back with less than it had flushed (torn or truncated): seqs \
                 from the recovered next seq on are skipped and checked with the aggregator");
            meta.insert(K_NEXT_SEQ, &cp.next_seq.to_be_bytes()[..])
                .map_err(|source| OutboxError::Store {
                    path: path.clone(),
                    op: "write meta",
                    source,
                })?;
            next_seq = cp.next_seq;
            report.torn = Some(cp);
        }
        report.start_next_seq = next_seq;
        let meta_next_seq = meta_next_seq.max(if report.torn.is_some() { next_seq } else { 0 });
        let mut me = SledOutbox {
            path,
            db,
            trees: [readings, priority, evidence],
            meta,
            state,
            stream,
            max_bytes: cfg.max_bytes,
            evidence_max_bytes: cfg.evidence_max_bytes,
            sync_every_append: cfg.flush_interval_ms == 0,
            gap_reserve: gap_reserve(),
            next_seq,
            persisted_next_seq: meta_next_seq,
            dropped_readings: dropped[0],
            dropped_priority: dropped[1],
            dropped_evidence: dropped[2],
            dropped_pictures: dropped[3],
            counts,
            pictures,
            open_alarms: BTreeSet::new(),
            checkpointed: checkpoint.map_or(0, |c| c.next_seq),
            checkpoint_failing: false,
            durable_next_seq: next_seq,
        };
        if !bad.is_empty() {
            tracing::error!(path = %me.path.display(), count = bad.len(),
                "outbox held undecodable items; removed them");
            me.persist_meta()?;
            for (class, k) in &bad {
                me.tree(*class)
                    .remove(k)
                    .map_err(me.err("remove undecodable item"))?;
            }
            report.undecodable = bad.len() as u64;
            let message = format!(
                "{} undecodable items were found in the outbox at start-up and removed",
                bad.len()
            );
            me.append(
                vec![event(now, EventKind::Gap, message, Some(bad.len() as u64))],
                now,
            )?;
        }
        report.items = me.stats().items;
        report.next_seq = me.next_seq;
        Ok((me, report))
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// sled's own size estimate of the directory (the log, including garbage not yet reclaimed).
    pub fn size_on_disk(&self) -> Result<u64, OutboxError> {
        self.db
            .size_on_disk()
            .map_err(self.err("measure size on disk"))
    }

    fn err(&self, op: &'static str) -> impl FnOnce(sled::Error) -> OutboxError + use<> {
        let path = self.path.clone();
        move |source| OutboxError::Store { path, op, source }
    }

    fn tree(&self, class: Class) -> &Tree {
        &self.trees[class.index()]
    }

    fn counts(&mut self, class: Class) -> &mut Counts {
        &mut self.counts[class.index()]
    }

    /// Bytes of the main budget: readings and priority items.
    fn bytes(&self) -> u64 {
        self.counts[0].bytes + self.counts[1].bytes
    }

    fn items(&self) -> u64 {
        self.counts.iter().map(|c| c.items).sum()
    }

    /// The depth gauges, after every append and ack.
    fn publish_depth(&self) {
        metrics::gauge!(m::OUTBOX_ITEMS).set(self.items() as f64);
        metrics::gauge!(m::OUTBOX_BYTES).set(self.bytes() as f64);
        metrics::gauge!(m::OUTBOX_EVIDENCE_BYTES)
            .set(self.counts[Class::Evidence.index()].bytes as f64);
    }

    /// Writes the drop totals, then `next_seq`. Called before any removal: sled recovers its
    /// log in order, so a removal of the newest item that survives a crash implies this write
    /// survived too, and a reopened store never hands out that seq again. For drops it also
    /// means a crash can over-report a drop, never hide one. Plain inserts, not a `sled::Batch`:
    /// each key is monotonic on its own, and in sled 0.34 a batch costs ~100 µs (measured: an
    /// append+ack cycle ran at 8 k/s with a batch here, 330 k/s with inserts).
    fn persist_meta(&mut self) -> Result<(), OutboxError> {
        for (k, v) in [
            (K_DROPPED_READINGS, self.dropped_readings),
            (K_DROPPED_PRIORITY, self.dropped_priority),
            (K_DROPPED_EVIDENCE, self.dropped_evidence),
            (K_DROPPED_PICTURES, self.dropped_pictures),
        ] {
            self.meta
                .insert(k, &v.to_be_bytes()[..])
                .map_err(self.err("write meta"))?;
        }
        self.persist_next_seq()
    }

    /// `next_seq` alone, for the ack path (a live uplink acks the newest item every time).
    fn persist_next_seq(&mut self) -> Result<(), OutboxError> {
        self.meta
            .insert(K_NEXT_SEQ, &self.next_seq.to_be_bytes()[..])
            .map_err(self.err("write meta"))?;
        self.persisted_next_seq = self.next_seq;
        Ok(())
    }

    /// Inserts one item record. `body` is given for evidence, whose picture index it updates.
    fn insert(
        &mut self,
        class: Class,
        seq: u64,
        rec: &[u8],
        body: Option<&Body>,
    ) -> Result<(), OutboxError> {
        self.tree(class)
            .insert(seq_key(seq), rec)
            .map_err(self.err("insert item"))?;
        let c = self.counts(class);
        c.items += 1;
        c.bytes += item_cost(rec.len());
        if let Some((sha, alarm)) = body.and_then(picture_of) {
            self.pictures
                .entry(sha.to_string())
                .or_default()
                .add(seq, item_cost(rec.len()), alarm);
        }
        Ok(())
    }

    fn remove(&mut self, class: Class, key: &[u8]) -> Result<bool, OutboxError> {
        let old = self
            .tree(class)
            .remove(key)
            .map_err(self.err("remove item"))?;
        let Some(old) = old else { return Ok(false) };
        let c = self.counts(class);
        c.items -= 1;
        c.bytes -= item_cost(old.len());
        if class == Class::Evidence {
            self.unindex(key, item_cost(old.len()));
        }
        Ok(true)
    }

    /// Takes one removed part out of the picture index. A linear search over the pictures: an
    /// outbox holds tens of them (the budget over a picture's size), not thousands.
    fn unindex(&mut self, key: &[u8], cost: u64) {
        let Some(seq) = key_seq(key) else { return };
        let sha = self
            .pictures
            .iter()
            .find(|(_, p)| p.seqs.contains_key(&seq))
            .map(|(s, _)| s.clone());
        if let Some(sha) = sha
            && let Some(p) = self.pictures.get_mut(&sha)
        {
            p.seqs.remove(&seq);
            p.cost -= cost;
            if p.seqs.is_empty() {
                self.pictures.remove(&sha);
            }
        }
    }

    /// Rebuilds the picture index from the evidence tree (after a renumber).
    fn reindex_pictures(&mut self) -> Result<(), OutboxError> {
        let mut pictures: HashMap<String, Picture> = HashMap::new();
        for kv in self.tree(Class::Evidence).iter() {
            let (k, v) = kv.map_err(self.err("scan pictures"))?;
            let (Some(seq), Ok(body)) = (key_seq(&k), decode_record(&v)) else {
                continue;
            };
            if let Some((sha, alarm)) = picture_of(&body) {
                pictures
                    .entry(sha.to_string())
                    .or_default()
                    .add(seq, item_cost(v.len()), alarm);
            }
        }
        self.pictures = pictures;
        Ok(())
    }

    /// Picks the oldest stored items of one class until `freed >= need`. O(picked).
    fn pick_stored(
        &self,
        class: Class,
        need: u64,
        freed: &mut u64,
        d: &mut Dropped,
        out: &mut Vec<(Class, IVec, u64)>,
    ) -> Result<(), OutboxError> {
        for kv in self.tree(class).iter() {
            if *freed >= need {
                break;
            }
            let (k, v) = kv.map_err(self.err("scan oldest items"))?;
            let cost = item_cost(v.len());
            *freed += cost;
            d.add(class == Class::Priority, record_ts(&v));
            out.push((class, k, cost));
        }
        Ok(())
    }

    /// Merges class trees' iterators (all ascending, or all descending) by seq.
    fn read_items<I>(
        &self,
        inputs: Vec<I>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<Item>, OutboxError>
    where
        I: Iterator<Item = sled::Result<(IVec, IVec)>>,
    {
        let mut inputs: Vec<std::iter::Peekable<I>> =
            inputs.into_iter().map(Iterator::peekable).collect();
        let mut out = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            // The input whose head comes first in the wanted order (a read error sorts first
            // so that it surfaces).
            let mut pick: Option<(usize, Vec<u8>)> = None;
            for (i, it) in inputs.iter_mut().enumerate() {
                let Some(k) = peek_key(it) else { continue };
                let better = match &pick {
                    None => true,
                    Some((_, best)) => (k < *best) != descending && k != *best,
                };
                if better {
                    pick = Some((i, k));
                }
            }
            let Some((i, _)) = pick else { break };
            let Some(kv) = inputs[i].next() else { break };
            let (k, v) = kv.map_err(self.err("read items"))?;
            let Some(seq) = key_seq(&k) else { continue };
            match decode_record(&v) {
                Ok(body) => out.push(Item { seq, body }),
                // Checked at open, so only bit rot after open lands here; the item is removed
                // at the next open and reported then.
                Err(e) => tracing::error!(path = %self.path.display(), seq, error = %e,
                    "undecodable outbox item skipped"),
            }
        }
        if descending {
            out.reverse();
        }
        Ok(out)
    }
}

impl SledOutbox {
    /// The evidence policy for this call's picture parts (seq, record, body): returns the parts
    /// to insert and, when pictures were dropped, the gap event that says so. Stored victims
    /// are removed here, after the totals are persisted.
    #[allow(clippy::type_complexity)] // (seq, record, body) triples in, the same out
    fn append_pictures(
        &mut self,
        parts: Vec<(u64, Vec<u8>, Body)>,
        now_ms: i64,
    ) -> Result<(Vec<(u64, Vec<u8>, Body)>, Option<Body>), OutboxError> {
        let incoming: u64 = parts.iter().map(|(_, r, _)| item_cost(r.len())).sum();
        let stored = self.counts[Class::Evidence.index()].bytes;
        let total = stored + incoming;
        if total <= self.evidence_max_bytes {
            return Ok((parts, None));
        }
        // Every picture, stored or new (a sha256 of both is one picture).
        let mut costs: HashMap<String, PictureCost> = self
            .pictures
            .iter()
            .map(|(sha, p)| {
                let cost = PictureCost {
                    sha256: sha.clone(),
                    first_seq: p.seqs.keys().next().copied().unwrap_or(u64::MAX),
                    open: p.is_open(&self.open_alarms),
                    cost: p.cost,
                };
                (sha.clone(), cost)
            })
            .collect();
        for (seq, rec, body) in &parts {
            let Some((sha, alarm)) = picture_of(body) else {
                continue;
            };
            let c = costs.entry(sha.to_string()).or_insert(PictureCost {
                sha256: sha.to_string(),
                first_seq: *seq,
                open: false,
                cost: 0,
            });
            c.open |= is_open(&self.open_alarms, alarm);
            c.first_seq = c.first_seq.min(*seq);
            c.cost += item_cost(rec.len());
        }
        let victims: BTreeSet<String> = pick_pictures(
            costs.into_values().collect(),
            total - self.evidence_max_bytes,
            self.evidence_max_bytes,
        )
        .into_iter()
        .collect();
        let mut d = DroppedPictures {
            pictures: victims.len() as u64,
            ..Default::default()
        };
        let mut stored_victims: Vec<IVec> = Vec::new();
        for sha in &victims {
            if let Some(p) = self.pictures.get(sha) {
                for seq in p.seqs.keys() {
                    let key = seq_key(*seq);
                    if let Some(v) = self
                        .tree(Class::Evidence)
                        .get(key)
                        .map_err(self.err("read picture part"))?
                    {
                        d.add_part(record_ts(&v));
                        stored_victims.push(IVec::from(&key[..]));
                    }
                }
            }
        }
        let mut kept = Vec::with_capacity(parts.len());
        for (seq, rec, body) in parts {
            if picture_of(&body).is_some_and(|(sha, _)| victims.contains(sha)) {
                d.add_part(record_ts(&rec));
            } else {
                kept.push((seq, rec, body));
            }
        }
        self.dropped_evidence += d.parts;
        self.dropped_pictures += d.pictures;
        metrics::counter!(m::OUTBOX_DROPPED, "class" => "evidence").increment(d.parts);
        metrics::counter!(m::OUTBOX_DROPPED_PICTURES).increment(d.pictures);
        tracing::error!(path = %self.path.display(), dropped_pictures = d.pictures,
            dropped_parts = d.parts, from_ms = ?d.from_ms, to_ms = ?d.to_ms,
            "outbox evidence budget full: dropped whole pictures");
        // Totals first (over-report, never hide), then the removals.
        self.persist_meta()?;
        for k in &stored_victims {
            self.remove(Class::Evidence, k)?;
        }
        Ok((kept, Some(evidence_gap_event(now_ms, &d))))
    }

    /// Readings and priority items (seq, class, record) under `max_bytes`: inserts them, or
    /// runs one enforcement round. Returns whether anything was dropped.
    fn append_main(
        &mut self,
        new: Vec<(u64, Class, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<bool, OutboxError> {
        let incoming: u64 = new.iter().map(|(_, _, r)| item_cost(r.len())).sum();
        let total = self.bytes() + incoming;
        if total <= self.max_bytes {
            for (seq, class, rec) in &new {
                self.insert(*class, *seq, rec, None)?;
            }
            return Ok(false);
        }

        // Full. Free enough for this batch plus the widest gap event: stored readings oldest
        // first, then this batch's readings, then stored priority items, then this batch's;
        // i.e. oldest reading first, priority items only when no reading is left.
        let need = total + self.gap_reserve - self.max_bytes;
        let mut freed = 0u64;
        let mut d = Dropped::default();
        let mut stored_victims = Vec::new();
        let mut new_dropped = vec![false; new.len()];
        for class in [Class::Reading, Class::Priority] {
            self.pick_stored(class, need, &mut freed, &mut d, &mut stored_victims)?;
            for (i, (_, c, rec)) in new.iter().enumerate() {
                if freed >= need {
                    break;
                }
                if *c == class {
                    new_dropped[i] = true;
                    freed += item_cost(rec.len());
                    d.add(class == Class::Priority, record_ts(rec));
                }
            }
        }
        self.dropped_readings += d.readings;
        self.dropped_priority += d.priority;
        let gap_seq = self.next_seq;
        self.next_seq += 1;
        let gap = encode_record(&gap_event(now_ms, &d))?;
        metrics::counter!(m::OUTBOX_DROPPED, "class" => "reading").increment(d.readings);
        metrics::counter!(m::OUTBOX_DROPPED, "class" => "priority").increment(d.priority);
        tracing::error!(path = %self.path.display(), dropped_readings = d.readings,
            dropped_priority = d.priority, from_ms = ?d.from_ms, to_ms = ?d.to_ms,
            "outbox full: dropped oldest items");

        // Order matters for a crash in the middle: totals first (over-report, never hide),
        // then the new items and the gap event, then the removals.
        self.persist_meta()?;
        for (i, (seq, class, rec)) in new.iter().enumerate() {
            if !new_dropped[i] {
                self.insert(*class, *seq, rec, None)?;
            }
        }
        self.insert(Class::Priority, gap_seq, &gap, None)?;
        for (class, k, _) in &stored_victims {
            self.remove(*class, k)?;
        }
        Ok(true)
    }
}

/// Format 1 → 2: the evidence tree (opened by the caller) and its drop totals. Picture parts a
/// format-1 store kept among the readings move to the evidence tree under their seqs, in one
/// transaction with the new format number, so a crash leaves format 1 or format 2, never both.
fn upgrade_1_to_2(
    path: &Path,
    readings: &Tree,
    evidence: &Tree,
    meta: &Tree,
) -> Result<(), OpenFailure> {
    use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
    let mut moving: Vec<(IVec, IVec)> = Vec::new();
    for kv in readings.iter() {
        let (k, v) = kv.map_err(|e| OpenFailure::Corrupt(format!("scan items: {e}")))?;
        if decode_record(&v).is_ok_and(|b| b.is_evidence()) {
            moving.push((k, v));
        }
    }
    let r = (readings, evidence, meta).transaction(
        |(r, e, m)| -> Result<(), ConflictableTransactionError<sled::Error>> {
            for (k, v) in &moving {
                r.remove(k)?;
                e.insert(k, v)?;
            }
            m.insert(K_DROPPED_EVIDENCE, &0u64.to_be_bytes()[..])?;
            m.insert(K_DROPPED_PICTURES, &0u64.to_be_bytes()[..])?;
            m.insert(K_FORMAT, &2u32.to_be_bytes()[..])?;
            Ok(())
        },
    );
    match r {
        Ok(()) => {
            tracing::info!(path = %path.display(), moved_parts = moving.len(),
                "outbox upgraded from format 1 to 2 (evidence class)");
            Ok(())
        }
        Err(TransactionError::Abort(source) | TransactionError::Storage(source)) => {
            Err(OpenFailure::Fatal(OutboxError::Store {
                path: path.to_owned(),
                op: "upgrade format 1 to 2",
                source,
            }))
        }
    }
}

/// The key at the head of a merge input; a read error sorts first so that it surfaces.
fn peek_key<I>(it: &mut std::iter::Peekable<I>) -> Option<Vec<u8>>
where
    I: Iterator<Item = sled::Result<(IVec, IVec)>>,
{
    match it.peek()? {
        Ok((k, _)) => Some(k.to_vec()),
        Err(_) => Some(Vec::new()),
    }
}

/// Gives up the disk-full reserve of the store in `dir` (see [`RESERVE_FILE`]); true if there
/// was one. For the last write of a gateway that stops on a full disk: its gap event.
pub fn release_reserve(dir: &Path) -> bool {
    let released = std::fs::remove_file(dir.join(RESERVE_FILE)).is_ok();
    if released {
        tracing::error!(path = %dir.display(), bytes = RESERVE_BYTES,
            "disk full: gave up the outbox's reserve to store the gap event");
    }
    released
}

/// Writes the reserve file if it is missing; on failure (the disk is full already) leaves
/// none behind and says so.
fn make_reserve(path: &Path) {
    if path.exists() {
        return;
    }
    if let Err(e) = std::fs::write(path, vec![0u8; RESERVE_BYTES]) {
        let _ = std::fs::remove_file(path);
        tracing::warn!(path = %path.display(), error = %e,
            "cannot make the outbox's disk-full reserve; a full disk could keep the gateway from starting");
    }
}

fn mint_stream(dir: &Path) -> Result<String, OutboxError> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|cause| OutboxError::Random {
        path: dir.to_owned(),
        cause,
    })?;
    Ok(hex::encode(raw))
}

fn corrupt_path(dir: &Path, now: i64) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "outbox".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.corrupt-{now}"))
}

impl Outbox for SledOutbox {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn append(&mut self, bodies: Vec<Body>, now_ms: i64) -> Result<Vec<u64>, OutboxError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_seq;
        let mut main = Vec::with_capacity(bodies.len());
        let mut pictures = Vec::new();
        let mut flush_now = self.sync_every_append;
        for (i, body) in bodies.into_iter().enumerate() {
            let rec = encode_record(&body)?;
            let class = Class::of(&body);
            flush_now |= class != Class::Reading;
            let seq = first + i as u64;
            if class == Class::Evidence {
                pictures.push((seq, rec, body));
            } else {
                main.push((seq, class, rec));
            }
        }
        let seqs: Vec<u64> = (first..first + (main.len() + pictures.len()) as u64).collect();
        self.next_seq = first + seqs.len() as u64;
        let mut dropped_any = false;
        if !pictures.is_empty() {
            let (kept, gap) = self.append_pictures(pictures, now_ms)?;
            if let Some(gap) = gap {
                dropped_any = true;
                let seq = self.next_seq;
                self.next_seq += 1;
                main.push((seq, Class::Priority, encode_record(&gap)?));
            }
            for (seq, rec, body) in kept {
                self.insert(Class::Evidence, seq, &rec, Some(&body))?;
            }
        }
        dropped_any |= self.append_main(main, now_ms)?;
        if flush_now || dropped_any {
            self.flush()?;
        }
        self.publish_depth();
        Ok(seqs)
    }

    fn pending_range(
        &self,
        after: u64,
        before: u64,
        limit: usize,
        priority_only: bool,
    ) -> Result<Vec<Item>, OutboxError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        if start >= before || limit == 0 {
            return Ok(Vec::new());
        }
        let range = seq_key(start)..seq_key(before);
        let inputs = Class::ALL
            .into_iter()
            .filter(|c| *c == Class::Priority || !priority_only)
            .map(|c| self.tree(c).range(range.clone()))
            .collect();
        self.read_items(inputs, false, limit)
    }

    fn pending_class(
        &self,
        class: Class,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Item>, OutboxError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        if start >= before || limit == 0 {
            return Ok(Vec::new());
        }
        let range = seq_key(start)..seq_key(before);
        self.read_items(vec![self.tree(class).range(range)], false, limit)
    }

    fn newest(&self, limit: usize, priority_only: bool) -> Result<Vec<Item>, OutboxError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inputs = Class::ALL
            .into_iter()
            .filter(|c| *c == Class::Priority || !priority_only)
            .map(|c| self.tree(c).iter().rev())
            .collect();
        self.read_items(inputs, true, limit)
    }

    fn ack(&mut self, ranges: &[(u64, u64)]) -> Result<u64, OutboxError> {
        let mut removed = 0;
        for &(from, to) in ranges {
            if from > to {
                continue;
            }
            for class in Class::ALL {
                let keys = self
                    .tree(class)
                    .range(seq_key(from)..=seq_key(to))
                    .keys()
                    .collect::<Result<Vec<IVec>, _>>()
                    .map_err(self.err("scan acked items"))?;
                if !keys.is_empty() && self.persisted_next_seq != self.next_seq {
                    self.persist_next_seq()?;
                }
                for k in keys {
                    removed += u64::from(self.remove(class, &k)?);
                }
            }
        }
        self.publish_depth();
        Ok(removed)
    }

    fn renumber(&mut self, from: u64, to: u64) -> Result<u64, OutboxError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        if to <= from {
            return Ok(0);
        }
        let delta = to - from;
        let next_seq = self.next_seq.max(from) + delta;
        // Highest first, so that a moved item never lands on one not moved yet.
        let mut items: Vec<(Class, IVec, IVec)> = Vec::new();
        for class in Class::ALL {
            for kv in self.tree(class).range(seq_key(from)..).rev() {
                let (k, v) = kv.map_err(self.err("scan items to renumber"))?;
                items.push((class, k, v));
            }
        }
        // One transaction over both item trees and meta: a crash leaves the old numbering or
        // the new one, never an item under both seqs.
        let [t_r, t_p, t_e] = &self.trees;
        let r = (t_r, t_p, t_e, &self.meta).transaction(
            |(r, p, e, m)| -> Result<u64, ConflictableTransactionError<sled::Error>> {
                let mut moved = 0u64;
                for (class, k, v) in &items {
                    let Some(seq) = key_seq(k) else { continue };
                    let tx = match class {
                        Class::Reading => r,
                        Class::Priority => p,
                        Class::Evidence => e,
                    };
                    tx.remove(k)?;
                    tx.insert(&seq_key(seq + delta)[..], v.clone())?;
                    moved += 1;
                }
                m.insert(K_NEXT_SEQ, &next_seq.to_be_bytes()[..])?;
                Ok(moved)
            },
        );
        let moved = match r {
            Ok(n) => n,
            Err(TransactionError::Abort(source) | TransactionError::Storage(source)) => {
                return Err(OutboxError::Store {
                    path: self.path.clone(),
                    op: "renumber items",
                    source,
                });
            }
        };
        self.next_seq = next_seq;
        self.persisted_next_seq = next_seq;
        self.reindex_pictures()?;
        self.flush()?;
        Ok(moved)
    }

    fn stats(&self) -> OutboxStats {
        let head = |t: &Tree| t.first().ok().flatten();
        let oldest = self
            .trees
            .iter()
            .filter_map(head)
            .min_by(|a, b| a.0.cmp(&b.0));
        let ev = self.counts[Class::Evidence.index()];
        OutboxStats {
            items: self.items(),
            bytes: self.bytes(),
            priority_items: self.counts[Class::Priority.index()].items,
            evidence_items: ev.items,
            evidence_bytes: ev.bytes,
            next_seq: self.next_seq,
            dropped_readings: self.dropped_readings,
            dropped_priority: self.dropped_priority,
            dropped_evidence: self.dropped_evidence,
            dropped_pictures: self.dropped_pictures,
            oldest_ts_ms: oldest.and_then(|(_, v)| record_ts(&v)),
            max_bytes: self.max_bytes,
            evidence_max_bytes: self.evidence_max_bytes,
        }
    }

    fn undurable(&self) -> u64 {
        self.next_seq.saturating_sub(self.durable_next_seq)
    }

    fn flush(&mut self) -> Result<(), OutboxError> {
        self.db.flush().map_err(self.err("flush"))?;
        self.durable_next_seq = self.next_seq;
        if self.next_seq != self.checkpointed {
            let cp = Checkpoint {
                next_seq: self.next_seq,
                items: self.items(),
            };
            match cp.write(&self.path) {
                Ok(()) => {
                    self.checkpointed = self.next_seq;
                    self.checkpoint_failing = false;
                }
                Err(e) if !self.checkpoint_failing => {
                    self.checkpoint_failing = true;
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot write the outbox checkpoint: a torn store would go unnoticed until it works again");
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn set_open_alarms(&mut self, ids: BTreeSet<String>) {
        self.open_alarms = ids;
    }

    fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), OutboxError> {
        self.state
            .insert(key, value)
            .map_err(self.err("write state"))?;
        Ok(())
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        Ok(self
            .state
            .get(key)
            .map_err(self.err("read state"))?
            .map(|v| v.to_vec()))
    }

    fn remove_state(&mut self, key: &str) -> Result<(), OutboxError> {
        self.state.remove(key).map_err(self.err("remove state"))?;
        Ok(())
    }
}

impl Drop for SledOutbox {
    /// A clean shutdown leaves nothing to sled's background flush.
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "outbox flush at close failed");
        }
    }
}
