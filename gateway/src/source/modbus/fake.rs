//! A fake [`Link`] for tests of the channel scheduler: answers per slave (good data, silence,
//! a Modbus exception, a garbled reply) after a set reply time, keeps the line held like a
//! shared RS-485 line does ([`Link::hold_until`]), and records every request with its start and
//! end on the tokio clock, so paused-time tests can check order, rates and gaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::profile::Table;
use tokio::time::Instant;

use super::link::{Link, ReadError, Transport};
use crate::decode::BlockData;

/// How a slave answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Zeros, after the reply time.
    Data,
    /// Nothing: the request times out after the slot's response timeout.
    Silent,
    /// A Modbus exception with this code, after the reply time.
    Exception(u8),
    /// Bytes that are not a valid reply, after the reply time.
    Garbled,
}

/// One request as the fake line saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub slave: u8,
    pub table: Table,
    pub start: Instant,
    pub end: Instant,
}

/// What a test sets and reads while the scheduler owns the link.
#[derive(Debug, Default)]
pub struct Line {
    /// Per slave; a slave not listed answers [`Answer::Data`].
    pub answers: HashMap<u8, Answer>,
    pub requests: Vec<Request>,
}

/// The fake link; clone [`FakeLink::line`] before handing it to the scheduler.
#[derive(Debug)]
pub struct FakeLink {
    pub line: Arc<Mutex<Line>>,
    clock: Clock,
    reply_after: Duration,
    free_at: Option<Instant>,
}

impl FakeLink {
    /// Every answer takes `reply_after` (a silent slave costs the request's timeout).
    pub fn new(clock: Clock, reply_after: Duration) -> FakeLink {
        FakeLink {
            line: Arc::default(),
            clock,
            reply_after,
            free_at: None,
        }
    }

    pub fn answer(&self, slave: u8, answer: Answer) {
        self.line
            .lock()
            .expect("fake line")
            .answers
            .insert(slave, answer);
    }
}

impl Link for FakeLink {
    fn name(&self) -> &str {
        "fake"
    }

    fn transport(&self) -> Transport {
        Transport::Rtu
    }

    fn hold_until(&mut self, at: Instant) {
        self.free_at = Some(self.free_at.map_or(at, |f| f.max(at)));
    }

    async fn read(
        &mut self,
        slave: u8,
        table: Table,
        _start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<BlockData, ReadError> {
        if let Some(at) = self.free_at {
            tokio::time::sleep_until(at).await;
        }
        let start = self.clock.tokio_instant();
        let answer = {
            let line = self.line.lock().expect("fake line");
            line.answers.get(&slave).copied().unwrap_or(Answer::Data)
        };
        let took = if answer == Answer::Silent {
            timeout
        } else {
            self.reply_after
        };
        tokio::time::sleep(took).await;
        let end = self.clock.tokio_instant();
        self.line.lock().expect("fake line").requests.push(Request {
            slave,
            table,
            start,
            end,
        });
        match answer {
            Answer::Data if table.is_bits() => Ok(BlockData::Bits(vec![false; usize::from(count)])),
            Answer::Data => Ok(BlockData::Words(vec![0; usize::from(count)])),
            Answer::Silent => Err(ReadError::NoReply(timeout.as_millis() as u64)),
            Answer::Exception(code) => Err(ReadError::Exception { code }),
            Answer::Garbled => Err(ReadError::Garbled("crc mismatch (fake)".into())),
        }
    }
}
