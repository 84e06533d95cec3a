//! Modbus RTU: CRC, frame detection, line timing and one bus of simulated slaves.
//!
//! Hand-written rather than a server crate because the simulator must misbehave at the byte level
//! (corrupted CRCs, garbage, silence, late replies) and emulate line timing, which no server crate
//! offers.
//!
//! **Frame detection.** A pty delivers a frame in one chunk, a real UART byte by byte, so frames
//! are found incrementally by function code: FC 1–6 are 8 bytes, FC 15/16 are 9 + byte count.
//! Any other function code is delimited by silence. A frame with a bad CRC (or a truncated frame
//! followed by silence) counts as a bad frame, and input is then dropped until the line has been
//! silent for [`LineSettings::resync_gap`], which resynchronises on the next request. Well-formed
//! frames for a slave id nobody simulates (and broadcasts) are consumed silently, as on a real bus.
//!
//! **Line timing.** A pty ignores the baud rate and delivers bytes at once, so the simulator
//! reproduces the physical time of a transaction (`tools/rtu_budget.py`): a request whose first
//! byte arrives at `t0` is answered at
//! `t0 + req_len·t_char + t3.5 + turnaround + resp_len·t_char`; the pty then delivers the reply
//! instantly, so the master sees the whole transaction except the trailing t3.5, which it waits
//! itself. On a real serial port the UART already takes that time: use `--no-line-timing` there
//! (turnaround is still applied). A `late` reply does not hold the bus: requests to other slaves
//! that arrive meanwhile are answered on time, and the late reply goes out when due, as a slow
//! device on a real bus would (colliding with whatever the master does then).
//!
//! [`Engine`] is the state machine (no I/O, time passed in); [`run_bus`] drives it over a
//! [`Line`] in one blocking thread, sleeping to ~0.3 ms before a reply deadline and spinning the
//! rest, because tokio timers have 1 ms granularity.

use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fumegrid_common::profile::Profile;

use crate::clock::SimClock;
use crate::fault::{self, Fault, FaultKind};
use crate::pdu::{self, Exception};
use crate::regmap::RegisterImage;
use crate::scenario::Scenario;
use crate::stats::{BusStats, SlaveStats, bump};

/// CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF). On the wire the low byte goes first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Appends the CRC (low byte first).
pub fn push_crc(frame: &mut Vec<u8>) {
    let crc = crc16(frame);
    frame.extend_from_slice(&crc.to_le_bytes());
}

/// Does `frame` (including its two CRC bytes) carry a correct CRC?
pub fn crc_ok(frame: &[u8]) -> bool {
    frame.len() >= 4 && {
        let (body, crc) = frame.split_at(frame.len() - 2);
        crc16(body).to_le_bytes() == [crc[0], crc[1]]
    }
}

/// An RTU frame: slave id, PDU, CRC.
pub fn adu(slave: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(pdu.len() + 3);
    f.push(slave);
    f.extend_from_slice(pdu);
    push_crc(&mut f);
    f
}

/// Where the buffered bytes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// Need more bytes.
    Incomplete,
    /// The first `n` bytes are a frame with a good CRC.
    Complete(usize),
    /// The first `n` bytes should be a frame but the CRC is wrong.
    BadCrc(usize),
    /// A function code whose request length is not known: the frame ends with silence.
    UnknownFunction,
}

/// Classifies the start of `buf` as a request frame.
pub fn frame_status(buf: &[u8]) -> FrameStatus {
    if buf.len() < 2 {
        return FrameStatus::Incomplete;
    }
    let len = match buf[1] {
        1..=6 => 8,
        15 | 16 if buf.len() < 7 => return FrameStatus::Incomplete,
        15 | 16 => 9 + usize::from(buf[6]),
        _ => return FrameStatus::UnknownFunction,
    };
    if buf.len() < len {
        FrameStatus::Incomplete
    } else if crc_ok(&buf[..len]) {
        FrameStatus::Complete(len)
    } else {
        FrameStatus::BadCrc(len)
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Parity, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "n" => Ok(Parity::None),
            "even" | "e" => Ok(Parity::Even),
            "odd" | "o" => Ok(Parity::Odd),
            _ => Err(format!("parity must be even, odd or none, not `{s}`")),
        }
    }
}

impl Parity {
    pub fn to_serialport(self) -> serialport::Parity {
        match self {
            Parity::None => serialport::Parity::None,
            Parity::Even => serialport::Parity::Even,
            Parity::Odd => serialport::Parity::Odd,
        }
    }
    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

/// Serial line settings, for timing and for opening a real port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    pub baud: u32,
    pub parity: Parity,
    pub stop_bits: u8,
}

impl Default for LineSettings {
    fn default() -> Self {
        LineSettings {
            baud: 9600,
            parity: Parity::Even,
            stop_bits: 1,
        }
    }
}

impl LineSettings {
    /// Bits per character: start + 8 data + parity + stop.
    pub fn char_bits(&self) -> u32 {
        1 + 8 + u32::from(self.parity != Parity::None) + u32::from(self.stop_bits)
    }

    pub fn char_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.char_bits()) / f64::from(self.baud.max(1)))
    }

    /// The 3.5-character inter-frame silence; fixed at 1.75 ms above 19200 baud.
    pub fn t35(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.char_time().mul_f64(3.5)
        }
    }

    /// Silence after which buffered input is judged (truncated frame, unknown function) and a
    /// resynchronisation ends: t3.5, but at least 3 ms (ptys and USB adapters deliver in bursts).
    pub fn resync_gap(&self) -> Duration {
        self.t35().max(Duration::from_millis(3))
    }

    /// Time on the line of a transaction as `tools/rtu_budget.py` computes it: request, t3.5,
    /// turnaround, response, t3.5.
    pub fn transaction_time(
        &self,
        req_len: usize,
        resp_len: usize,
        turnaround: Duration,
    ) -> Duration {
        self.reply_delay(req_len, resp_len, turnaround) + self.t35()
    }

    /// From the request's first byte to the end of the reply: the transaction without the
    /// trailing silence. This is when the simulator writes its reply to a pty.
    pub fn reply_delay(&self, req_len: usize, resp_len: usize, turnaround: Duration) -> Duration {
        self.char_time().mul_f64((req_len + resp_len) as f64) + self.t35() + turnaround
    }

    /// "9600 8E1".
    pub fn describe(&self) -> String {
        format!("{} 8{}{}", self.baud, self.parity.letter(), self.stop_bits)
    }
}

/// One simulated slave on a bus.
#[derive(Debug)]
pub struct SimSlave {
    pub id: u8,
    pub profile: Profile,
    pub scenario: Scenario,
    pub fault: Fault,
    pub stats: Arc<SlaveStats>,
    /// Requests received so far (drives `@EVERY`).
    pub count: u64,
}

impl SimSlave {
    pub fn new(id: u8, profile: Profile, scenario: Scenario, fault: Fault) -> SimSlave {
        SimSlave {
            id,
            profile,
            scenario,
            fault,
            stats: Arc::new(SlaveStats::default()),
            count: 0,
        }
    }
}

/// How a bus behaves.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub line: LineSettings,
    /// Device processing time between request and reply.
    pub turnaround: Duration,
    /// Emulate character times and silences (for ptys).
    pub line_timing: bool,
    pub clock: SimClock,
}

/// A reply waiting for its moment on the line.
#[derive(Debug)]
struct Pending {
    at: Instant,
    bytes: Vec<u8>,
    stats: Arc<SlaveStats>,
}

/// The bus state machine: bytes and time in, scheduled replies out. No I/O.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    slaves: Vec<SimSlave>,
    pub bus: Arc<BusStats>,
    buf: Vec<u8>,
    /// Arrival of the first byte in `buf`.
    frame_start: Instant,
    last_rx: Option<Instant>,
    discarding: bool,
    /// Replies not yet due. Usually at most one; more while a `late` reply is outstanding, since
    /// a slow slave must not stall the others on the bus.
    pending: Vec<Pending>,
}

impl Engine {
    pub fn new(cfg: EngineConfig, slaves: Vec<SimSlave>) -> Engine {
        Engine {
            frame_start: cfg.clock.origin,
            cfg,
            slaves,
            bus: Arc::new(BusStats::default()),
            buf: Vec::new(),
            last_rx: None,
            discarding: false,
            pending: Vec::new(),
        }
    }

    pub fn slaves(&self) -> &[SimSlave] {
        &self.slaves
    }

    /// Bytes read from the line at `now`.
    pub fn receive(&mut self, now: Instant, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.last_rx = Some(now);
        if self.discarding {
            return;
        }
        if self.buf.is_empty() {
            self.frame_start = now;
        }
        self.buf.extend_from_slice(data);
        // A frame is at most 256 bytes; more without a frame means noise on the line.
        if self.buf.len() > 512 {
            self.bad_frame();
            return;
        }
        self.process();
    }

    /// Lets time pass: ends a resynchronisation and judges input followed by silence.
    pub fn tick(&mut self, now: Instant) {
        let silent = self
            .last_rx
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.line.resync_gap());
        if self.discarding && silent {
            self.discarding = false;
            self.buf.clear();
        }
        self.process();
        if silent && !self.buf.is_empty() {
            let whole = std::mem::take(&mut self.buf);
            if frame_status(&whole) == FrameStatus::UnknownFunction && crc_ok(&whole) {
                self.handle(&whole, self.frame_start);
            } else {
                self.buf = whole;
                self.bad_frame();
            }
        }
    }

    /// When the next reply is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.at).min()
    }

    /// The reply due at `now`, if any; counted as sent.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (i, _) = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.at <= now)
            .min_by_key(|(_, p)| p.at)?;
        let p = self.pending.remove(i);
        bump(&p.stats.replies);
        Some(p.bytes)
    }

    fn process(&mut self) {
        while !self.discarding && !self.buf.is_empty() {
            match frame_status(&self.buf) {
                FrameStatus::Incomplete | FrameStatus::UnknownFunction => break,
                FrameStatus::BadCrc(_) => {
                    self.bad_frame();
                    break;
                }
                FrameStatus::Complete(len) => {
                    let frame: Vec<u8> = self.buf.drain(..len).collect();
                    let t0 = self.frame_start;
                    if let Some(t) = self.last_rx {
                        // Bytes after this frame arrived with the latest chunk.
                        self.frame_start = t;
                    }
                    self.handle(&frame, t0);
                }
            }
        }
    }

    /// Counts a bad frame, drops the buffer and resynchronises on the next silence.
    fn bad_frame(&mut self) {
        bump(&self.bus.bad_frames);
        if let Some(&id) = self.buf.first()
            && let Some(s) = self.slaves.iter().find(|s| s.id == id)
        {
            bump(&s.stats.bad_requests);
        }
        self.buf.clear();
        self.discarding = true;
    }

    /// A frame with a good CRC that arrived starting at `t0`.
    fn handle(&mut self, frame: &[u8], t0: Instant) {
        let id = frame[0];
        let Some(slave) = self.slaves.iter_mut().find(|s| s.id == id && id != 0) else {
            bump(&self.bus.other_ids);
            return;
        };
        slave.count += 1;
        bump(&slave.stats.requests);
        let pdu_in = &frame[1..frame.len() - 2];
        let function = pdu_in.first().copied().unwrap_or(0);
        let image = RegisterImage::at(&slave.profile, slave.scenario, self.cfg.clock.at(t0));
        let reply = adu(id, &pdu::respond(&image, pdu_in));
        let mut extra = Duration::ZERO;
        let bytes = match slave.fault.for_request(slave.count) {
            None | Some(FaultKind::None) => reply,
            Some(kind) => {
                bump(&slave.stats.faults);
                match kind {
                    FaultKind::NoReply => return,
                    FaultKind::Late(d) => {
                        extra = d;
                        reply
                    }
                    FaultKind::Crc => {
                        let mut r = reply;
                        let n = r.len();
                        r[n - 2] ^= 0x5A;
                        r
                    }
                    FaultKind::Exception(code) => {
                        adu(id, &pdu::exception(function, Exception(code)))
                    }
                    FaultKind::Garbage => {
                        let mut g = fault::garbage(id, slave.count, reply.len());
                        if crc_ok(&g) {
                            let n = g.len();
                            g[n - 1] ^= 0x01;
                        }
                        g
                    }
                    FaultKind::Truncated => reply[..reply.len() / 2].to_vec(),
                    FaultKind::Overlong => {
                        let mut r = reply;
                        let pad = 260 - r.len().min(260);
                        r.extend(fault::garbage(id, slave.count, pad));
                        r
                    }
                    FaultKind::BadCount => adu(id, &fault::bad_count(&reply[1..reply.len() - 2])),
                    FaultKind::OtherUnit => adu(id.wrapping_add(1), &reply[1..reply.len() - 2]),
                    FaultKind::None => reply,
                }
            }
        };
        let delay = if self.cfg.line_timing {
            self.cfg
                .line
                .reply_delay(frame.len(), bytes.len(), self.cfg.turnaround)
        } else {
            self.cfg.turnaround
        };
        self.pending.push(Pending {
            at: t0 + delay + extra,
            bytes,
            stats: slave.stats.clone(),
        });
    }
}

/// The I/O seam of a bus: a serial port or a pty master.
pub trait Line {
    /// Reads what is available, waiting at most `timeout`; `Ok(0)` when nothing came.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
}

impl Line for serialport::TTYPort {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        use serialport::SerialPort;
        self.set_timeout(timeout).map_err(io::Error::other)?;
        match io::Read::read(self, buf) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            other => other,
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        use serialport::SerialPort;
        self.set_timeout(Duration::from_millis(200))
            .map_err(io::Error::other)?;
        io::Write::write_all(self, data)
    }
}

/// Longest wait in one read, so the stop flag is seen promptly.
const POLL: Duration = Duration::from_millis(2);
/// Before a deadline, stop sleeping this early and spin: `ppoll` wakes up late by up to ~0.1 ms.
const SPIN: Duration = Duration::from_micros(300);
/// A line that keeps failing this long (device unplugged, pty peer gone) ends the bus.
const GIVE_UP: Duration = Duration::from_secs(5);

/// A failed read or write: tolerated (after a short pause) until the line has failed for
/// [`GIVE_UP`].
fn line_failed(e: io::Error, since: &mut Option<Instant>) -> io::Result<()> {
    let first = *since.get_or_insert_with(crate::clock::instant);
    if crate::clock::instant() - first >= GIVE_UP {
        return Err(e);
    }
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}

/// Serves the bus until `stop` is set. Returns an error when the line fails for [`GIVE_UP`].
pub fn run_bus<L: Line>(engine: &mut Engine, line: &mut L, stop: &AtomicBool) -> io::Result<()> {
    let mut buf = [0u8; 512];
    let mut failing_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = crate::clock::instant();
        if let Some(at) = engine.next_deadline()
            && at <= now + SPIN
        {
            while crate::clock::instant() < at {
                std::thread::yield_now();
            }
            if let Some(bytes) = engine.take_due(crate::clock::instant())
                && let Err(e) = line.write_all(&bytes)
            {
                line_failed(e, &mut failing_since)?;
            }
            engine.tick(crate::clock::instant());
            continue;
        }
        let timeout = engine.next_deadline().map_or(POLL, |at| {
            at.saturating_duration_since(now + SPIN).min(POLL)
        });
        match line.read_timeout(&mut buf, timeout) {
            Ok(n) => {
                failing_since = None;
                engine.receive(crate::clock::instant(), &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => line_failed(e, &mut failing_since)?,
        }
        engine.tick(crate::clock::instant());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regmap::RegisterImage;
    use fumegrid_common::diag::Source;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap_or(0))
            .collect()
    }

    #[test]
    fn crc_known_vectors() {
        let mut f = hex("01 03 00 00 00 0A");
        push_crc(&mut f);
        assert_eq!(&f[6..], &[0xC5, 0xCD]);
        assert!(crc_ok(&f));
        assert!(crc_ok(&hex("11 03 00 6B 00 03 76 87")));
        assert!(crc_ok(&hex("01 04 02 FF FF B8 80")));
        assert_eq!(crc16(b"123456789"), 0x4B37);
        assert!(!crc_ok(&hex("01 03 00 00 00 0A C5 CC")));
    }

    #[test]
    fn frame_status_by_function_code() {
        let req = hex("01 03 00 00 00 0A C5 CD");
        for cut in 0..req.len() {
            assert_eq!(
                frame_status(&req[..cut]),
                FrameStatus::Incomplete,
                "cut {cut}"
            );
        }
        assert_eq!(frame_status(&req), FrameStatus::Complete(8));
        let mut two = req.clone();
        two.extend_from_slice(&req);
        assert_eq!(frame_status(&two), FrameStatus::Complete(8));
        let mut bad = req.clone();
        bad[3] = 1;
        assert_eq!(frame_status(&bad), FrameStatus::BadCrc(8));
        let wr = adu(1, &[16, 0, 0, 0, 2, 4, 0, 1, 0, 2]);
        assert_eq!(frame_status(&wr[..9]), FrameStatus::Incomplete);
        assert_eq!(frame_status(&wr), FrameStatus::Complete(13));
        assert_eq!(
            frame_status(&adu(1, &[43, 14, 1, 0])),
            FrameStatus::UnknownFunction
        );
    }

    #[test]
    fn timing_matches_rtu_budget_py() {
        // rtu_budget.py --baud 9600 --parity even --registers 10 --turnaround-ms 5 → 50.83 ms
        let l = LineSettings::default();
        let t = l.transaction_time(8, 5 + 2 * 10, Duration::from_millis(5));
        assert!((t.as_secs_f64() * 1000.0 - 50.83).abs() < 0.005, "{t:?}");
        let sim = l.reply_delay(8, 25, Duration::from_millis(5));
        assert_eq!(sim + l.t35(), t);
        // Above 19200 baud t3.5 is fixed: 38400 8N1, 10 regs, 0 ms → 33·10/38400 + 3.5 ms.
        let fast = LineSettings {
            baud: 38_400,
            parity: Parity::None,
            stop_bits: 1,
        };
        let t = fast.transaction_time(8, 25, Duration::ZERO).as_secs_f64() * 1000.0;
        assert!((t - 12.09).abs() < 0.005, "{t}"); // rtu_budget.py: 12.09 ms
        assert_eq!(fast.describe(), "38400 8N1");
    }

    const PROFILE: &str = r#"
[profile]
id = "t"
[[points]]
metric = "fume_mg_m3"
table = "holding"
address = 0
type = "f32"
[[points]]
metric = "fan_on"
table = "holding"
address = 2
type = "u16"
"#;

    fn engine(fault: &str) -> (Engine, Instant) {
        let profile = Profile::from_source(&Source::new("t.toml", PROFILE)).expect("valid");
        let clock = SimClock::new(0.0, 0.0);
        let cfg = EngineConfig {
            line: LineSettings::default(),
            turnaround: Duration::from_millis(5),
            line_timing: true,
            clock,
        };
        let slaves = vec![SimSlave::new(
            1,
            profile,
            Scenario::Normal,
            fault.parse().expect("fault"),
        )];
        (Engine::new(cfg, slaves), clock.origin)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn engine_answers_split_request_on_time() {
        let (mut e, t0) = engine("none");
        let req = adu(1, &[3, 0, 0, 0, 3]);
        e.receive(t0, &req[..3]);
        e.tick(t0 + ms(1));
        e.receive(t0 + ms(2), &req[3..]);
        let due = e.next_deadline().expect("reply scheduled");
        let want = LineSettings::default().reply_delay(8, 11, ms(5));
        assert_eq!(due, t0 + want);
        assert_eq!(e.take_due(due - ms(1)), None);
        let reply = e.take_due(due).expect("due");
        let img = RegisterImage::at(&e.slaves()[0].profile, Scenario::Normal, 0.0);
        let words = img
            .read_words(fumegrid_common::profile::Table::Holding, 0, 3)
            .expect("read");
        let mut pdu = vec![3, 6];
        for w in words {
            pdu.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(reply, adu(1, &pdu));
        assert_eq!(e.slaves()[0].stats.replies.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn engine_resyncs_after_garbage_and_ignores_other_ids() {
        let (mut e, t0) = engine("none");
        e.receive(t0, &[0xFF, 0x03, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC]);
        assert_eq!(e.bus.bad_frames.load(Ordering::Relaxed), 1);
        // A good request glued to the noise is dropped with it ...
        e.receive(t0 + ms(1), &adu(1, &[3, 0, 0, 0, 1]));
        e.tick(t0 + ms(2));
        assert!(e.next_deadline().is_none());
        // ... and after a silence the next one is served.
        e.tick(t0 + ms(10));
        e.receive(t0 + ms(20), &adu(2, &[3, 0, 0, 0, 1]));
        assert!(e.next_deadline().is_none());
        assert_eq!(e.bus.other_ids.load(Ordering::Relaxed), 1);
        e.receive(t0 + ms(30), &adu(1, &[3, 0, 0, 0, 1]));
        assert!(e.next_deadline().is_some());
        // A truncated frame is judged after silence.
        let (mut e, t0) = engine("none");
        e.receive(t0, &adu(1, &[3, 0, 0, 0, 1])[..5]);
        e.tick(t0 + ms(2));
        assert_eq!(e.bus.bad_frames.load(Ordering::Relaxed), 0);
        e.tick(t0 + ms(10));
        assert_eq!(e.bus.bad_frames.load(Ordering::Relaxed), 1);
        assert_eq!(e.slaves()[0].stats.bad_requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn late_slave_does_not_stall_the_bus() {
        let profile = Profile::from_source(&Source::new("t.toml", PROFILE)).expect("valid");
        let clock = SimClock::new(0.0, 0.0);
        let cfg = EngineConfig {
            line: LineSettings::default(),
            turnaround: ms(5),
            line_timing: true,
            clock,
        };
        let late = SimSlave::new(
            1,
            profile.clone(),
            Scenario::Normal,
            "late:1000".parse().expect("f"),
        );
        let ok = SimSlave::new(2, profile, Scenario::Normal, Fault::default());
        let mut e = Engine::new(cfg, vec![late, ok]);
        let t0 = clock.origin;
        e.receive(t0, &adu(1, &[3, 0, 0, 0, 1]));
        // The gateway gives up on slave 1 after 300 ms and polls slave 2.
        e.tick(t0 + ms(300));
        e.receive(t0 + ms(300), &adu(2, &[3, 0, 0, 0, 1]));
        let first = e.next_deadline().expect("pending");
        assert!(first < t0 + ms(400), "slave 2 answers promptly");
        assert_eq!(e.take_due(first).map(|r| r[0]), Some(2));
        let second = e.next_deadline().expect("late reply still pending");
        assert!(second >= t0 + ms(1000));
        assert_eq!(e.take_due(second).map(|r| r[0]), Some(1));
    }

    #[test]
    fn engine_faults() {
        let req = adu(1, &[3, 0, 0, 0, 2]);
        let run = |fault: &str| {
            let (mut e, t0) = engine(fault);
            e.receive(t0, &req);
            let at = e.next_deadline();
            (at.map(|a| a - t0), at.and_then(|a| e.take_due(a)))
        };
        let (d_ok, ok) = run("none");
        let ok = ok.expect("reply");
        assert!(crc_ok(&ok));
        assert_eq!(run("no-reply"), (None, None));
        let (d_late, late) = run("late:400");
        assert_eq!(late.as_ref(), Some(&ok));
        assert_eq!(d_late, d_ok.map(|d| d + ms(400)));
        let (_, crc) = run("crc");
        let crc = crc.expect("reply");
        assert_eq!(crc[..crc.len() - 2], ok[..ok.len() - 2]);
        assert!(!crc_ok(&crc));
        assert_eq!(run("exception:4").1, Some(adu(1, &[0x83, 4])));
        let g = run("garbage").1.expect("reply");
        assert_eq!(g.len(), ok.len());
        assert!(!crc_ok(&g));
        // unknown function code, delimited by silence → exception 01
        let (mut e, t0) = engine("none");
        e.receive(t0, &adu(1, &[43, 14, 1, 0]));
        assert!(e.next_deadline().is_none());
        e.tick(t0 + ms(5));
        let at = e.next_deadline().expect("scheduled");
        assert_eq!(e.take_due(at), Some(adu(1, &[43 | 0x80, 1])));
    }
}
