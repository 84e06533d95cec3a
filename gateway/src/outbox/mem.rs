//! [`MemOutbox`]: the model. Deliberately naive (one `BTreeMap`, linear scans) so that it is
//! obviously right; the proptest holds [`super::SledOutbox`] to it.

use std::collections::{BTreeMap, BTreeSet};

use fumegrid_common::wire::{Body, Item};

use super::{
    Class, Dropped, DroppedPictures, Outbox, OutboxConfig, OutboxError, OutboxStats, PictureCost,
    encode_record, evidence_gap_event, gap_event, gap_reserve, is_open, item_cost, pick_pictures,
    picture_of, record_ts,
};

#[derive(Debug, Clone)]
struct Entry {
    /// The body as it comes back from the record encoding, so reads equal the sled store's.
    body: Body,
    class: Class,
    ts: Option<i64>,
    cost: u64,
}

/// In-memory outbox with the same semantics as [`super::SledOutbox`]; "reopen" is a no-op.
#[derive(Debug, Clone)]
pub struct MemOutbox {
    stream: String,
    max_bytes: u64,
    evidence_max_bytes: u64,
    items: BTreeMap<u64, Entry>,
    next_seq: u64,
    dropped_readings: u64,
    dropped_priority: u64,
    dropped_evidence: u64,
    dropped_pictures: u64,
    open_alarms: BTreeSet<String>,
    state: BTreeMap<String, Vec<u8>>,
}

impl MemOutbox {
    pub fn new(stream: impl Into<String>, cfg: OutboxConfig) -> Result<Self, OutboxError> {
        cfg.validate()?;
        Ok(MemOutbox {
            stream: stream.into(),
            max_bytes: cfg.max_bytes,
            evidence_max_bytes: cfg.evidence_max_bytes,
            items: BTreeMap::new(),
            next_seq: 1,
            dropped_readings: 0,
            dropped_priority: 0,
            dropped_evidence: 0,
            dropped_pictures: 0,
            open_alarms: BTreeSet::new(),
            state: BTreeMap::new(),
        })
    }

    /// Bytes of readings and priority items (the main budget).
    fn bytes(&self) -> u64 {
        self.items
            .values()
            .filter(|e| e.class != Class::Evidence)
            .map(|e| e.cost)
            .sum()
    }

    fn evidence_bytes(&self) -> u64 {
        self.items
            .values()
            .filter(|e| e.class == Class::Evidence)
            .map(|e| e.cost)
            .sum()
    }

    /// The evidence policy, naively: whole pictures out until the evidence fits.
    fn enforce_evidence(&mut self, now_ms: i64) -> Result<(), OutboxError> {
        let total = self.evidence_bytes();
        if total <= self.evidence_max_bytes {
            return Ok(());
        }
        let mut pictures: BTreeMap<String, PictureCost> = BTreeMap::new();
        for (seq, e) in &self.items {
            let Some((sha, alarm)) = picture_of(&e.body) else {
                continue;
            };
            let p = pictures.entry(sha.to_string()).or_insert(PictureCost {
                sha256: sha.to_string(),
                first_seq: *seq,
                open: false,
                cost: 0,
            });
            p.open |= is_open(&self.open_alarms, alarm);
            p.cost += e.cost;
        }
        let victims = pick_pictures(
            pictures.into_values().collect(),
            total - self.evidence_max_bytes,
            self.evidence_max_bytes,
        );
        let mut d = DroppedPictures::default();
        for sha in &victims {
            d.pictures += 1;
            let seqs: Vec<u64> = self
                .items
                .iter()
                .filter(|(_, e)| picture_of(&e.body).is_some_and(|(s, _)| s == sha))
                .map(|(s, _)| *s)
                .collect();
            for s in seqs {
                if let Some(e) = self.items.remove(&s) {
                    d.add_part(e.ts);
                }
            }
        }
        self.dropped_evidence += d.parts;
        self.dropped_pictures += d.pictures;
        self.insert(&evidence_gap_event(now_ms, &d))?;
        Ok(())
    }

    fn insert(&mut self, body: &Body) -> Result<u64, OutboxError> {
        let rec = encode_record(body)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let body = super::decode_record(&rec).unwrap_or_else(|_| body.clone());
        self.items.insert(
            seq,
            Entry {
                class: Class::of(&body),
                body,
                ts: record_ts(&rec),
                cost: item_cost(rec.len()),
            },
        );
        Ok(seq)
    }

    fn item(seq: u64, e: &Entry) -> Item {
        Item {
            seq,
            body: e.body.clone(),
        }
    }
}

impl Outbox for MemOutbox {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn append(&mut self, bodies: Vec<Body>, now_ms: i64) -> Result<Vec<u64>, OutboxError> {
        let mut seqs = Vec::with_capacity(bodies.len());
        for b in &bodies {
            seqs.push(self.insert(b)?);
        }
        self.enforce_evidence(now_ms)?;
        if self.bytes() <= self.max_bytes {
            return Ok(seqs);
        }
        // Full: oldest reading first, then oldest priority item, until the gap event fits.
        let reserve = gap_reserve();
        let mut d = Dropped::default();
        while self.bytes() + reserve > self.max_bytes {
            let first = |class: Class| {
                self.items
                    .iter()
                    .find(|(_, e)| e.class == class)
                    .map(|(s, _)| *s)
            };
            let victim = first(Class::Reading).or_else(|| first(Class::Priority));
            let Some(seq) = victim else { break };
            if let Some(e) = self.items.remove(&seq) {
                d.add(e.class == Class::Priority, e.ts);
            }
        }
        self.dropped_readings += d.readings;
        self.dropped_priority += d.priority;
        self.insert(&gap_event(now_ms, &d))?;
        Ok(seqs)
    }

    fn pending_range(
        &self,
        after: u64,
        before: u64,
        limit: usize,
        priority_only: bool,
    ) -> Result<Vec<Item>, OutboxError> {
        Ok(self
            .items
            .iter()
            .filter(|(s, e)| {
                **s > after && **s < before && (e.class == Class::Priority || !priority_only)
            })
            .take(limit)
            .map(|(s, e)| Self::item(*s, e))
            .collect())
    }

    fn pending_class(
        &self,
        class: Class,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Item>, OutboxError> {
        Ok(self
            .items
            .iter()
            .filter(|(s, e)| **s > after && **s < before && e.class == class)
            .take(limit)
            .map(|(s, e)| Self::item(*s, e))
            .collect())
    }

    fn newest(&self, limit: usize, priority_only: bool) -> Result<Vec<Item>, OutboxError> {
        let mut v: Vec<Item> = self
            .items
            .iter()
            .rev()
            .filter(|(_, e)| e.class == Class::Priority || !priority_only)
            .take(limit)
            .map(|(s, e)| Self::item(*s, e))
            .collect();
        v.reverse();
        Ok(v)
    }

    fn ack(&mut self, ranges: &[(u64, u64)]) -> Result<u64, OutboxError> {
        let before = self.items.len();
        self.items
            .retain(|s, _| !ranges.iter().any(|&(a, b)| a <= *s && *s <= b));
        Ok((before - self.items.len()) as u64)
    }

    fn renumber(&mut self, from: u64, to: u64) -> Result<u64, OutboxError> {
        if to <= from {
            return Ok(0);
        }
        let moved = self.items.split_off(&from);
        let n = moved.len() as u64;
        for (seq, e) in moved {
            self.items.insert(seq + (to - from), e);
        }
        self.next_seq = self.next_seq.max(from) + (to - from);
        Ok(n)
    }

    fn stats(&self) -> OutboxStats {
        let count = |c: Class| self.items.values().filter(|e| e.class == c).count() as u64;
        OutboxStats {
            items: self.items.len() as u64,
            bytes: self.bytes(),
            priority_items: count(Class::Priority),
            evidence_items: count(Class::Evidence),
            evidence_bytes: self.evidence_bytes(),
            next_seq: self.next_seq,
            dropped_readings: self.dropped_readings,
            dropped_priority: self.dropped_priority,
            dropped_evidence: self.dropped_evidence,
            dropped_pictures: self.dropped_pictures,
            oldest_ts_ms: self.items.values().next().and_then(|e| e.ts),
            max_bytes: self.max_bytes,
            evidence_max_bytes: self.evidence_max_bytes,
        }
    }

    fn flush(&mut self) -> Result<(), OutboxError> {
        Ok(())
    }

    fn set_open_alarms(&mut self, ids: BTreeSet<String>) {
        self.open_alarms = ids;
    }

    fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), OutboxError> {
        self.state.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        Ok(self.state.get(key).cloned())
    }

    fn remove_state(&mut self, key: &str) -> Result<(), OutboxError> {
        self.state.remove(key);
        Ok(())
    }
}
