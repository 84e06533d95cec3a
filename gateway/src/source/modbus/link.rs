//! The I/O seam of Modbus acquisition: one [`Link`] is one physical channel (an RS-485 port or a
//! TCP connection) that carries one request at a time. tokio-modbus speaks the protocol; this
//! module adds what it lacks for unattended use: a timeout on every request, classification of
//! what went wrong, and recovery that can never pair a late reply with the wrong request.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::profile::Table;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ProtocolError, Slave};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::decode::BlockData;

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    Even,
    Odd,
    None,
}

impl Parity {
    pub fn name(self) -> &'static str {
        match self {
            Parity::Even => "even",
            Parity::Odd => "odd",
            Parity::None => "none",
        }
    }
}

impl std::str::FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "even" | "e" => Ok(Parity::Even),
            "odd" | "o" => Ok(Parity::Odd),
            "none" | "n" => Ok(Parity::None),
            _ => Err(format!("parity must be even, odd or none, not `{s}`")),
        }
    }
}

/// Serial line settings of one RS-485 bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

impl Line {
    /// Bits on the wire per character: start + data + parity + stop.
    pub fn char_bits(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// Time one character takes on the wire.
    pub fn char_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(f64::from(self.char_bits()) / f64::from(self.baud))
    }

    /// The 3.5-character silence that ends an RTU frame (fixed at 1.75 ms above 19200 baud,
    /// Modbus over Serial Line v1.02 §2.5.1.1).
    pub fn frame_silence(&self) -> std::time::Duration {
        if self.baud > 19_200 {
            std::time::Duration::from_micros(1750)
        } else {
            std::time::Duration::from_secs_f64(
                3.5 * f64::from(self.char_bits()) / f64::from(self.baud),
            )
        }
    }
}

/// Why a request produced no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Nothing came back within the response timeout: slave off, wrong id, wiring, baud.
    #[error("no reply within {0} ms")]
    NoReply(u64),
    /// Bytes came back but not a valid answer to this request: CRC error, noise, a reply from
    /// another slave or for another request, wrong length.
    #[error("garbled reply: {0}")]
    Garbled(String),
    /// The slave answered with a Modbus exception (e.g. 2 = illegal data address).
    #[error("modbus exception {code} ({})", exception_name(*.code))]
    Exception { code: u8 },
    /// The channel itself failed: port cannot be opened, connection refused or reset.
    #[error("{0}")]
    Io(String),
}

impl ReadError {
    /// Short stable name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::NoReply(_) => "no_reply",
            ReadError::Garbled(_) => "garbled",
            ReadError::Exception { .. } => "exception",
            ReadError::Io(_) => "io",
        }
    }

    /// Did the slave answer at all (it is alive even if the answer was an exception)?
    pub fn slave_answered(&self) -> bool {
        matches!(self, ReadError::Exception { .. })
    }

    /// What a technician should check first, for this failure on this kind of channel.
    pub fn hint(&self, transport: Transport) -> &'static str {
        match (self, transport) {
            (ReadError::NoReply(_), Transport::Rtu) => {
                "check slave id, baud rate and parity, A/B wiring and termination, and that the monitor is powered"
            }
            (ReadError::NoReply(_), Transport::Tcp) => {
                "the connection is up but nothing came back: check the unit id (devices and TCP→RTU converters stay silent for other ids), and for a converter the device behind it (its serial settings and wiring)"
            }
            (ReadError::Garbled(_), Transport::Rtu) => {
                "check baud rate and parity, cable shielding and termination, and that no other master polls this bus"
            }
            (ReadError::Garbled(_), Transport::Tcp) => {
                "bytes came back that are not a valid reply: check that host:port is the monitor's Modbus TCP port (502 by default, not a web, telnet or RTU-over-TCP port), the unit id, and that nothing else answers there"
            }
            (ReadError::Exception { code: 2 }, _) => {
                "the monitor rejects this address range: check the profile's addresses (zero-based: 40001 is holding 0) and table"
            }
            (ReadError::Exception { code: 1 }, _) => {
                "the monitor does not support this table/function: check the profile's `table`"
            }
            (ReadError::Exception { code: 10 | 11 }, Transport::Tcp) => {
                "the TCP gateway could not reach the unit id behind it: check the unit id and the gateway's serial side"
            }
            (ReadError::Exception { .. }, _) => {
                "the monitor reported an error; see its manual for this exception code"
            }
            (ReadError::Io(_), Transport::Rtu) => {
                "check the port path and permissions (group dialout) and that the adapter is plugged in"
            }
            (ReadError::Io(_), Transport::Tcp) => {
                "check the IP address and port (Modbus TCP is usually 502), that the device is powered and reachable from the gateway (ping), and firewalls"
            }
        }
    }
}

/// The kind of channel a request went over: what can be wrong, and so what to check, differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Modbus RTU on an RS-485 serial line.
    Rtu,
    /// Modbus TCP (MBAP framing) to a device or a TCP→RTU converter.
    Tcp,
}

pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "vendor specific",
    }
}

/// One request on a channel. Implementations must leave the channel usable for the next
/// request whatever happened to this one.
pub trait Link {
    /// Human name of the channel for logs (`/dev/ttyUSB0`, `10.0.0.5:502`).
    fn name(&self) -> &str;

    /// What kind of channel this is (for the technician's hint).
    fn transport(&self) -> Transport;

    /// Keeps the line quiet until `at` (a firmware's inter-request delay). Only a shared
    /// RS-485 line needs this; the default does nothing.
    fn hold_until(&mut self, _at: Instant) {}

    fn read(
        &mut self,
        slave: u8,
        table: Table,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> impl Future<Output = Result<BlockData, ReadError>>;
}

async fn call(
    ctx: &mut Context,
    table: Table,
    start: u16,
    count: u16,
) -> tokio_modbus::Result<BlockData> {
    Ok(match table {
        Table::Holding => ctx
            .read_holding_registers(start, count)
            .await?
            .map(BlockData::Words),
        Table::Input => ctx
            .read_input_registers(start, count)
            .await?
            .map(BlockData::Words),
        Table::Coil => ctx.read_coils(start, count).await?.map(BlockData::Bits),
        Table::Discrete => ctx
            .read_discrete_inputs(start, count)
            .await?
            .map(BlockData::Bits),
    })
}

/// tokio-modbus checks slave id and function code of a reply, but not its length.
fn check_len(data: BlockData, count: u16) -> Result<BlockData, ReadError> {
    let n = usize::from(count);
    match data {
        BlockData::Words(w) if w.len() != n => Err(ReadError::Garbled(format!(
            "asked for {n} registers, got {}",
            w.len()
        ))),
        BlockData::Bits(mut b) if b.len() >= n => {
            b.truncate(n);
            Ok(BlockData::Bits(b))
        }
        BlockData::Bits(b) => Err(ReadError::Garbled(format!(
            "asked for {n} bits, got {}",
            b.len()
        ))),
        ok => Ok(ok),
    }
}

/// What a finished call means, and whether the channel must be reset before reuse.
/// `r` is `None` when the request timed out.
fn classify(
    r: Option<tokio_modbus::Result<BlockData>>,
    timeout: Duration,
    bytes_seen: bool,
    count: u16,
) -> (Result<BlockData, ReadError>, bool) {
    match r {
        None if bytes_seen => (
            Err(ReadError::Garbled(
                "bytes arrived but no valid frame (CRC error or noise)".into(),
            )),
            true,
        ),
        None => (Err(ReadError::NoReply(timeout.as_millis() as u64)), true),
        Some(Ok(Ok(data))) => (check_len(data, count), false),
        Some(Ok(Err(code))) => (
            Err(ReadError::Exception {
                code: u8::from(code),
            }),
            false,
        ),
        Some(Err(tokio_modbus::Error::Protocol(ProtocolError::HeaderMismatch {
            message, ..
        }))) => (
            Err(ReadError::Garbled(format!(
                "reply header does not match the request: {message}"
            ))),
            true,
        ),
        Some(Err(tokio_modbus::Error::Protocol(ProtocolError::FunctionCodeMismatch {
            request,
            ..
        }))) => (
            Err(ReadError::Garbled(format!(
                "reply is not for function {request:?}"
            ))),
            true,
        ),
        Some(Err(tokio_modbus::Error::Transport(e)))
            if e.kind() == io::ErrorKind::InvalidData || (bytes_seen && is_decode_error(&e)) =>
        {
            (Err(ReadError::Garbled(e.to_string())), true)
        }
        Some(Err(tokio_modbus::Error::Transport(e))) => (Err(ReadError::Io(e.to_string())), true),
    }
}

/// Longest Modbus RTU frame: address, a 253-byte PDU and the CRC ("Modbus over serial line"
/// V1.02, 2.5.1.1).
const RTU_MAX_FRAME: u64 = 256;

/// Length of the RTU frame a decoded answer came in (address, function, byte count, data, CRC),
/// `None` when nothing was decoded.
fn rtu_frame_len(r: &Option<tokio_modbus::Result<BlockData>>) -> Option<u64> {
    match r {
        Some(Ok(Ok(BlockData::Words(w)))) => Some(5 + 2 * w.len() as u64),
        // tokio-modbus hands back every bit of the data bytes (a multiple of 8).
        Some(Ok(Ok(BlockData::Bits(b)))) => Some(5 + b.len().div_ceil(8) as u64),
        // Address, function | 0x80, exception code, CRC.
        Some(Ok(Err(_))) => Some(5),
        _ => None,
    }
}

/// Second look at an RTU exchange once the line has gone quiet: `arrived` counts every byte
/// received from the request on until the line fell silent (including the guard time after a
/// timeout), `frame_len` the decoded answer's length. An RTU frame ends with a 3.5-character
/// silence, so bytes that follow a decoded answer without that pause mean the frame was not
/// what the decoder took it for: the answer is not taken as a reading, even though its first
/// bytes made a valid frame (a slave that runs on, two slaves talking at once). More than
/// [`RTU_MAX_FRAME`] bytes is named as an over-long frame, also when they came after the
/// response timeout: the slave answered, so it is `garbled`, not `no_reply`. I/O errors stand.
/// Bytes after a valid reply that are not yet "running on": many RS-485 transceivers put one
/// stray byte on the line when the sender's driver switches off, after a perfectly good frame.
const RTU_STRAY_BYTES: u64 = 1;

fn judge_rtu_tail(
    (result, reset): (Result<BlockData, ReadError>, bool),
    frame_len: Option<u64>,
    arrived: u64,
) -> (Result<BlockData, ReadError>, bool) {
    if matches!(result, Err(ReadError::Io(_))) {
        return (result, reset);
    }
    if arrived > RTU_MAX_FRAME {
        let valid = match frame_len {
            Some(f) => format!(" (a valid {f}-byte reply, then {} more)", arrived - f),
            None => String::new(),
        };
        return (
            Err(ReadError::Garbled(format!(
                "over-long frame: {arrived} bytes arrived, an RTU frame holds at most {RTU_MAX_FRAME}{valid}"
            ))),
            true,
        );
    }
    match frame_len {
        Some(f) if arrived > f + RTU_STRAY_BYTES => (
            Err(ReadError::Garbled(format!(
                "the reply ran on: {arrived} bytes arrived without the pause that ends an RTU frame, the reply is {f}"
            ))),
            true,
        ),
        _ => (result, reset),
    }
}

/// Waits `first`, then discards what arrived in the port's input buffer, again after each
/// `silence` while bytes keep coming (at most until `limit`). Returns how many were discarded.
async fn drain(
    port: &impl ClearInput,
    clock: &Clock,
    first: Duration,
    silence: Duration,
    limit: Duration,
) -> u64 {
    let end = clock.tokio_instant() + limit;
    tokio::time::sleep(first).await;
    let mut n = u64::from(port.clear_input().unwrap_or(0));
    let mut total = n;
    while n > 0 && clock.tokio_instant() < end {
        tokio::time::sleep(silence).await;
        n = u64::from(port.clear_input().unwrap_or(0));
        total += n;
    }
    total
}

/// tokio-modbus reports a reply it cannot parse as an `io::Error` like any socket failure: a
/// byte count larger than the data reads past the end (`UnexpectedEof`, "failed to fill whole
/// buffer"), an over-size PDU is `InvalidInput`, bytes left when the peer closes are `Other`.
/// After bytes arrived these kinds are a bad reply, not a broken channel.
fn is_decode_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::Other
    )
}

/// Longest MBAP length field a Modbus TCP frame can carry: unit id + a 253-byte PDU.
const MBAP_MAX_LEN: usize = 254;

/// What arrived on a TCP connection since the current request was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    /// Bytes received in all.
    pub total: u64,
    /// The first of them (at most [`Received::KEEP`]), enough to read an MBAP header and a PDU's
    /// first bytes.
    pub head: Vec<u8>,
    /// The peer closed the connection.
    pub eof: bool,
}

impl Received {
    pub const KEEP: usize = 32;

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = Self::KEEP.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Up to 12 bytes as hex, for messages (what comes from outside is never echoed unbounded).
fn hex(bytes: &[u8], total: u64) -> String {
    let shown: Vec<String> = bytes.chunks(1).take(12).map(hex::encode_upper).collect();
    let more = if total > shown.len() as u64 {
        " …"
    } else {
        ""
    };
    format!("{}{more}", shown.join(" "))
}

/// Says what is wrong with the bytes that came back for a Modbus TCP request to `unit` that
/// produced no valid reply. Pure: `rx` is what arrived.
pub fn describe_tcp_reply(rx: &Received, unit: u8) -> String {
    let h = &rx.head;
    let total = rx.total;
    let bytes = hex(h, total);
    if h.len() < 7 {
        return format!(
            "truncated frame: {total} byte(s) arrived, fewer than the 7-byte MBAP header ({bytes})"
        );
    }
    let proto = u16::from_be_bytes([h[2], h[3]]);
    if proto != 0 {
        return format!(
            "not a Modbus TCP reply: protocol id 0x{proto:04X} instead of 0 ({total} byte(s): {bytes})"
        );
    }
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if len > MBAP_MAX_LEN {
        return format!(
            "over-long frame: the MBAP header announces {len} bytes, a Modbus TCP frame holds at most {MBAP_MAX_LEN} ({bytes})"
        );
    }
    if len < 2 {
        return format!(
            "bad MBAP length {len}: a reply needs a unit id and at least a function code ({bytes})"
        );
    }
    let after_len = total.saturating_sub(6);
    if after_len < len as u64 {
        return format!(
            "truncated frame: the MBAP header announces {len} bytes, {after_len} arrived ({bytes})"
        );
    }
    if h[6] != unit {
        return format!(
            "reply from unit id {} to a request for unit id {unit}",
            h[6]
        );
    }
    let function = h[7];
    if matches!(function, 1..=4) && len >= 3 {
        let count = usize::from(h[8]);
        let carried = len - 3;
        if count != carried {
            return format!(
                "bad byte count: the reply to function {function} says {count} data bytes, the frame carries {carried}"
            );
        }
        if matches!(function, 3 | 4) && count % 2 != 0 {
            return format!(
                "bad byte count: {count} data bytes for registers of 2 bytes each (function {function})"
            );
        }
    }
    if len > 2 && function >= 0x80 {
        return format!("malformed exception reply ({total} byte(s): {bytes})");
    }
    format!("invalid reply ({total} byte(s): {bytes})")
}

/// [`classify`] for Modbus TCP, where the bytes that arrived name what was wrong. tokio-modbus
/// waits for as many bytes as an MBAP header announces, so garbage, a truncated frame and an
/// over-long length field all end in a timeout; and it reports a bad byte count as an I/O error.
fn classify_tcp(
    r: Option<tokio_modbus::Result<BlockData>>,
    timeout: Duration,
    rx: &Received,
    unit: u8,
    count: u16,
) -> (Result<BlockData, ReadError>, bool) {
    let arrived = rx.total > 0;
    match r {
        None if arrived => (Err(ReadError::Garbled(describe_tcp_reply(rx, unit))), true),
        None => (Err(ReadError::NoReply(timeout.as_millis() as u64)), true),
        Some(Err(tokio_modbus::Error::Protocol(ProtocolError::HeaderMismatch { .. })))
            if rx.head.len() >= 7 && rx.head[6] != unit =>
        {
            (
                Err(ReadError::Garbled(format!(
                    "reply from unit id {} to a request for unit id {unit}",
                    rx.head[6]
                ))),
                true,
            )
        }
        Some(Err(tokio_modbus::Error::Protocol(ProtocolError::HeaderMismatch { .. }))) => {
            let tid = rx
                .head
                .get(..2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            (
                Err(ReadError::Garbled(format!(
                    "reply carries transaction id {tid}, not the request's (a late or repeated reply)"
                ))),
                true,
            )
        }
        Some(Err(tokio_modbus::Error::Transport(e))) if arrived && is_decode_error(&e) => {
            (Err(ReadError::Garbled(describe_tcp_reply(rx, unit))), true)
        }
        Some(Err(tokio_modbus::Error::Transport(_))) if rx.eof => (
            Err(ReadError::Io(
                "the device closed the connection without a reply".into(),
            )),
            true,
        ),
        other => classify(other, timeout, arrived, count),
    }
}

/// A TCP stream that records what arrives ([`Received`]) for the link to explain a failure.
#[derive(Debug)]
struct Capture<T> {
    inner: T,
    rx: Arc<std::sync::Mutex<Received>>,
}

impl<T> Capture<T> {
    fn rx(&self) -> std::sync::MutexGuard<'_, Received> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Capture<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let got = &buf.filled()[before..];
            let mut rx = self.rx();
            if got.is_empty() && buf.remaining() > 0 {
                rx.eof = true;
            }
            rx.push(got);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Capture<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Discards what is waiting in a port's input buffer.
trait ClearInput {
    /// Returns how many bytes were waiting.
    fn clear_input(&self) -> io::Result<u32>;
}

impl ClearInput for SerialStream {
    fn clear_input(&self) -> io::Result<u32> {
        let waiting = self.bytes_to_read().unwrap_or(0);
        self.clear(tokio_serial::ClearBuffer::Input)
            .map_err(io::Error::other)?;
        Ok(waiting)
    }
}

/// The open serial port, shared by the successive protocol contexts of one link: after a
/// timeout or a garbled reply the context (with whatever it had buffered) is dropped, but the port
/// stays open, so a late reply lands in the input buffer and is discarded before the next request
/// ([`Tap`]) instead of racing a reopen. Only one context uses it at a time; the lock is never
/// contended.
#[derive(Debug, Clone)]
struct SharedPort(Arc<std::sync::Mutex<SerialStream>>);

impl SharedPort {
    fn lock(&self) -> std::sync::MutexGuard<'_, SerialStream> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

impl ClearInput for SharedPort {
    fn clear_input(&self) -> io::Result<u32> {
        self.lock().clear_input()
    }
}

/// Counts bytes received, so that a timeout can tell "silence" from "garbage"; and, when a new
/// request is about to be written, discards whatever is waiting in the input buffer first.
///
/// RTU replies carry no transaction id: a slave's reply that arrives after we gave up on it
/// would otherwise be read as the answer to the next request — to the same slave with the same
/// function and length, it passes every check and becomes a wrong reading (another block's
/// values, or an old poll's). Whatever is in the buffer before a request is written cannot be
/// the answer to it.
#[derive(Debug)]
struct Tap<T> {
    inner: T,
    rx: Arc<AtomicU64>,
    /// Set by the link before each request; the first write clears the input, then this.
    clear_before_write: Arc<AtomicBool>,
    /// Bytes thrown away that way (late replies).
    stale: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.rx.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + ClearInput + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.clear_before_write.swap(false, Ordering::Relaxed) {
            let n = self.inner.clear_input()?;
            self.stale.fetch_add(u64::from(n), Ordering::Relaxed);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An RS-485 port in Modbus RTU master mode.
pub struct RtuLink {
    path: PathBuf,
    name: String,
    line: Line,
    guard: Option<Duration>,
    ctx: Option<Context>,
    /// Kept open across contexts; closed only after an I/O error (e.g. the adapter unplugged).
    port: Option<SharedPort>,
    rx: Arc<AtomicU64>,
    clear_before_write: Arc<AtomicBool>,
    stale: Arc<AtomicU64>,
    /// The line is free for the next request from this moment (3.5-char silence after a frame).
    free_at: Instant,
    clock: Clock,
    /// Times the port was (re)opened.
    pub opens: u64,
}

impl std::fmt::Debug for RtuLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtuLink")
            .field("path", &self.path)
            .field("open", &self.ctx.is_some())
            .finish()
    }
}

impl RtuLink {
    /// `guard`: after a timeout, how long to stay off the line before the next request;
    /// `None` waits twice the request's own response timeout, so a reply up to three timeouts
    /// late lands in the input buffer before the next request and is discarded. A late reply that arrives
    /// before the next request is discarded when that request is written ([`Tap`]); one that
    /// arrives while the next request is outstanding cannot be told apart in RTU (no
    /// transaction id) unless its length or header differ — keep `response_timeout_ms` above
    /// the slowest device's real answer time.
    pub fn new(path: PathBuf, line: Line, guard: Option<Duration>, clock: Clock) -> RtuLink {
        RtuLink {
            name: path.display().to_string(),
            path,
            line,
            guard,
            ctx: None,
            port: None,
            rx: Arc::new(AtomicU64::new(0)),
            clear_before_write: Arc::new(AtomicBool::new(false)),
            stale: Arc::new(AtomicU64::new(0)),
            free_at: clock.tokio_instant(),
            clock,
            opens: 0,
        }
    }

    fn open(&mut self) -> Result<&mut Context, ReadError> {
        if self.ctx.is_none() {
            let port = match &self.port {
                Some(p) => p.clone(),
                None => {
                    let p = SharedPort(Arc::new(std::sync::Mutex::new(open_serial(
                        &self.path, self.line,
                    )?)));
                    self.opens += 1;
                    self.port = Some(p.clone());
                    p
                }
            };
            let tap = Tap {
                inner: port,
                rx: self.rx.clone(),
                clear_before_write: self.clear_before_write.clone(),
                stale: self.stale.clone(),
            };
            self.ctx = Some(tokio_modbus::client::rtu::attach(tap));
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| ReadError::Io("port not open".into()))
    }
}

/// Opens a serial port for Modbus RTU and discards whatever was waiting in its input buffer.
pub fn open_serial(path: &std::path::Path, line: Line) -> Result<SerialStream, ReadError> {
    let parity = match line.parity {
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::None => tokio_serial::Parity::None,
    };
    let data_bits = if line.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if line.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let port = tokio_serial::new(path.to_string_lossy(), line.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|e| ReadError::Io(serial_open_hint(path, &e)))?;
    // A reply that arrived while the port was closed belongs to no request of ours.
    port.clear(tokio_serial::ClearBuffer::Input)
        .map_err(|e| ReadError::Io(format!("cannot flush {}: {e}", path.display())))?;
    Ok(port)
}

fn serial_open_hint(path: &std::path::Path, e: &tokio_serial::Error) -> String {
    let hint = match e.kind() {
        tokio_serial::ErrorKind::NoDevice => {
            " — is the adapter plugged in and the path right (ls /dev/serial/by-path)?"
        }
        tokio_serial::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
            " — is the service user in group dialout?"
        }
        tokio_serial::ErrorKind::Io(io::ErrorKind::NotFound) => " — no such device; check the path",
        _ => "",
    };
    format!("cannot open {}: {e}{hint}", path.display())
}

impl Link for RtuLink {
    fn name(&self) -> &str {
        &self.name
    }

    fn transport(&self) -> Transport {
        Transport::Rtu
    }

    fn hold_until(&mut self, at: Instant) {
        self.free_at = self.free_at.max(at);
    }

    async fn read(
        &mut self,
        slave: u8,
        table: Table,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<BlockData, ReadError> {
        let silence = self.line.frame_silence();
        tokio::time::sleep_until(self.free_at).await;
        let (rx, stale) = (self.rx.clone(), self.stale.clone());
        let stale_before = stale.load(Ordering::Relaxed);
        self.clear_before_write.store(true, Ordering::Relaxed);
        let ctx = self.open()?;
        ctx.set_slave(Slave(slave));
        let before = rx.load(Ordering::Relaxed);
        let r = tokio::time::timeout(timeout, call(ctx, table, start, count))
            .await
            .ok();
        let stale = stale.load(Ordering::Relaxed) - stale_before;
        if stale > 0 {
            tracing::debug!(target: "poll", link = %self.name, slave, bytes = stale, "discarded a late reply before the request");
        }
        let in_call = rx.load(Ordering::Relaxed) - before;
        let frame_len = rtu_frame_len(&r);
        let (result, reset) = classify(r, timeout, in_call > 0, count);
        if matches!(result, Err(ReadError::Io(_))) {
            // The port itself is closed (and reopened on the next request) only after an I/O
            // error.
            self.ctx = None;
            self.port = None;
            self.free_at = self.clock.tokio_instant() + self.guard.unwrap_or(timeout * 2);
            return result;
        }
        // Listen to the line before it is free for the next request: for the 3.5-character
        // silence after an answer, for the guard time after a timeout or a bad frame (the
        // slave may still answer this request; a late reply lands in the port's input buffer).
        // What arrives is discarded here, and counted: bytes running on after an answer, or more
        // than an RTU frame holds, make the exchange `garbled` ([`judge_rtu_tail`]), and they
        // cannot spill into the next slave's exchange. Bounded, so a babbling slave cannot hold
        // the line for ever.
        let first = if reset {
            self.guard.unwrap_or(timeout * 2)
        } else {
            silence
        };
        let limit = first + self.line.char_time() * (2 * RTU_MAX_FRAME as u32);
        let drained = match &self.port {
            Some(port) => drain(port, &self.clock, first, silence, limit).await,
            None => 0,
        };
        let (result, reset) = judge_rtu_tail((result, reset), frame_len, in_call + drained);
        if reset {
            // Drop the context with whatever it had buffered.
            self.ctx = None;
        }
        self.free_at = self.clock.tokio_instant() + silence;
        result
    }
}

/// A Modbus TCP connection to one `host:port` (a monitor, or a TCP→RTU gateway with several
/// unit ids behind it), reconnected on demand.
pub struct TcpLink {
    addr: String,
    ctx: Option<Context>,
    /// What arrived since the current request was written.
    rx: Arc<std::sync::Mutex<Received>>,
    pub connects: u64,
    /// No request before this moment (a firmware's inter-request delay), if held.
    free_at: Option<Instant>,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("addr", &self.addr)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

impl TcpLink {
    pub fn new(addr: String) -> TcpLink {
        TcpLink {
            addr,
            ctx: None,
            rx: Arc::default(),
            connects: 0,
            free_at: None,
        }
    }

    async fn connect(&mut self, timeout: Duration) -> Result<&mut Context, ReadError> {
        if self.ctx.is_none() {
            let addr = tokio::net::lookup_host(&self.addr)
                .await
                .map_err(|e| ReadError::Io(format!("cannot resolve {}: {e}", self.addr)))?
                .next()
                .ok_or_else(|| ReadError::Io(format!("{} resolves to no address", self.addr)))?;
            let stream = tokio::time::timeout(
                timeout.max(Duration::from_secs(1)),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| ReadError::Io(format!("connect to {} timed out", self.addr)))?
            .map_err(|e| ReadError::Io(format!("cannot connect to {}: {e}", self.addr)))?;
            let _ = stream.set_nodelay(true);
            self.connects += 1;
            let stream = Capture {
                inner: stream,
                rx: self.rx.clone(),
            };
            self.ctx = Some(tokio_modbus::client::tcp::attach(stream));
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| ReadError::Io("not connected".into()))
    }
}

impl Link for TcpLink {
    fn name(&self) -> &str {
        &self.addr
    }

    fn transport(&self) -> Transport {
        Transport::Tcp
    }

    fn hold_until(&mut self, at: Instant) {
        self.free_at = Some(self.free_at.map_or(at, |f| f.max(at)));
    }

    async fn read(
        &mut self,
        slave: u8,
        table: Table,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<BlockData, ReadError> {
        if let Some(at) = self.free_at {
            tokio::time::sleep_until(at).await;
        }
        let rx = self.rx.clone();
        let ctx = self.connect(timeout).await?;
        ctx.set_slave(Slave(slave));
        // tokio-modbus drops what it buffered before it writes a request; so does this record.
        *rx.lock().unwrap_or_else(|p| p.into_inner()) = Received::default();
        let r = tokio::time::timeout(timeout, call(ctx, table, start, count))
            .await
            .ok();
        let received = rx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Over TCP a late reply carries the old transaction id, but a fresh connection is the
        // simplest guarantee, and a device that stopped answering often needs one anyway.
        let (result, reset) = classify_tcp(r, timeout, &received, slave, count);
        if reset {
            self.ctx = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_register_reply_is_garbled_and_bits_are_trimmed() {
        assert!(matches!(
            check_len(BlockData::Words(vec![1, 2]), 3),
            Err(ReadError::Garbled(_))
        ));
        assert_eq!(
            check_len(BlockData::Bits(vec![true; 8]), 3),
            Ok(BlockData::Bits(vec![true; 3]))
        );
    }

    #[test]
    fn classification_decides_reset() {
        let t = Duration::from_millis(300);
        assert_eq!(
            classify(None, t, false, 1),
            (Err(ReadError::NoReply(300)), true)
        );
        assert!(matches!(
            classify(None, t, true, 1),
            (Err(ReadError::Garbled(_)), true)
        ));
        let exc = Some(Ok(Err(tokio_modbus::ExceptionCode::IllegalDataAddress)));
        assert_eq!(
            classify(exc, t, false, 1),
            (Err(ReadError::Exception { code: 2 }), false)
        );
        let ok = Some(Ok(Ok(BlockData::Words(vec![7]))));
        assert_eq!(
            classify(ok, t, false, 1),
            (Ok(BlockData::Words(vec![7])), false)
        );
        let crc = Some(Err(tokio_modbus::Error::Transport(io::Error::new(
            io::ErrorKind::InvalidData,
            "Invalid CRC",
        ))));
        assert!(matches!(
            classify(crc, t, false, 1),
            (Err(ReadError::Garbled(_)), true)
        ));
    }

    #[test]
    fn rtu_frame_len_counts_address_function_count_data_and_crc() {
        let words = Some(Ok(Ok(BlockData::Words(vec![1, 2]))));
        assert_eq!(rtu_frame_len(&words), Some(9));
        // 3 coils asked, one data byte: 8 bits come back.
        let bits = Some(Ok(Ok(BlockData::Bits(vec![true; 8]))));
        assert_eq!(rtu_frame_len(&bits), Some(6));
        let exc = Some(Ok(Err(tokio_modbus::ExceptionCode::IllegalDataAddress)));
        assert_eq!(rtu_frame_len(&exc), Some(5));
        assert_eq!(rtu_frame_len(&None), None);
    }

    #[test]
    fn rtu_overlong_after_a_valid_reply_is_garbled_not_a_reading() {
        let ok = (Ok(BlockData::Words(vec![7, 8])), false);
        let (r, reset) = judge_rtu_tail(ok, Some(9), 260);
        assert!(reset);
        let Err(ReadError::Garbled(m)) = r else {
            panic!("{r:?}")
        };
        assert!(
            m.starts_with("over-long frame: 260 bytes arrived, an RTU frame holds at most 256"),
            "{m}"
        );
        assert!(m.contains("a valid 9-byte reply, then 251 more"), "{m}");
    }

    #[test]
    fn rtu_overlong_after_the_timeout_is_garbled_not_no_reply() {
        // The whole frame came after the response timeout (at 9600 baud 268 characters take
        // 307 ms): the slave answered, too much.
        let (r, reset) = judge_rtu_tail((Err(ReadError::NoReply(300)), true), None, 268);
        assert!(reset);
        assert_eq!(r.as_ref().map_err(ReadError::kind), Err("garbled"), "{r:?}");
        let garbled = (Err(ReadError::Garbled("CRC".into())), true);
        let (r, _) = judge_rtu_tail(garbled, None, 300);
        assert!(
            matches!(&r, Err(ReadError::Garbled(m)) if m.starts_with("over-long frame: 300 bytes")),
            "{r:?}"
        );
    }

    #[test]
    fn rtu_reply_that_runs_on_is_garbled() {
        let ok = (Ok(BlockData::Words(vec![7])), false);
        // One stray byte (a transceiver switching off) is not a frame running on.
        assert_eq!(judge_rtu_tail(ok.clone(), Some(7), 8), ok);
        let (r, reset) = judge_rtu_tail(ok, Some(7), 9);
        assert!(reset);
        assert!(
            matches!(&r, Err(ReadError::Garbled(m)) if m.contains("9 bytes arrived") && m.contains("the reply is 7")),
            "{r:?}"
        );
        let exc = (Err(ReadError::Exception { code: 2 }), false);
        assert!(matches!(
            judge_rtu_tail(exc, Some(5), 40),
            (Err(ReadError::Garbled(_)), true)
        ));
    }

    #[test]
    fn rtu_clean_exchanges_and_io_errors_stand() {
        let ok = (Ok(BlockData::Words(vec![7])), false);
        assert_eq!(judge_rtu_tail(ok.clone(), Some(7), 7), ok);
        // A late reply of normal size lands in the guard time: still no reply in time.
        let late = (Err(ReadError::NoReply(200)), true);
        assert_eq!(judge_rtu_tail(late.clone(), None, 45), late);
        let exc = (Err(ReadError::Exception { code: 2 }), false);
        assert_eq!(judge_rtu_tail(exc.clone(), Some(5), 5), exc);
        let io = (Err(ReadError::Io("gone".into())), true);
        assert_eq!(judge_rtu_tail(io.clone(), None, 999), io);
    }

    /// Hands out the byte counts a port's input buffer would hold at each look.
    struct Waiting(std::sync::Mutex<Vec<u32>>);

    impl ClearInput for Waiting {
        fn clear_input(&self) -> io::Result<u32> {
            let mut w = self.0.lock().expect("lock");
            Ok(if w.is_empty() { 0 } else { w.remove(0) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drain_counts_until_the_line_is_quiet_and_gives_up_on_a_babbler() {
        let clock = Clock::following_tokio(0);
        let (ms, silence) = (Duration::from_millis, Duration::from_millis(4));
        let port = Waiting(std::sync::Mutex::new(vec![200, 60, 0, 99]));
        assert_eq!(drain(&port, &clock, ms(600), silence, ms(1200)).await, 260);
        let babbler = Waiting(std::sync::Mutex::new(vec![10; 1000]));
        let start = clock.tokio_instant();
        let n = drain(&babbler, &clock, silence, silence, ms(100)).await;
        assert!(
            n < 10_000 && clock.tokio_instant() - start <= ms(110),
            "{n}"
        );
    }

    /// A raw Modbus TCP peer: reads one request at a time and answers with what `reply` makes
    /// of it (transaction id, unit id, PDU); `None` closes the connection.
    async fn raw_peer(
        reply: impl Fn(u16, u8, &[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                loop {
                    let mut hdr = [0u8; 7];
                    if s.read_exact(&mut hdr).await.is_err() {
                        break;
                    }
                    let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
                    let mut pdu = vec![0u8; len.saturating_sub(1)];
                    if s.read_exact(&mut pdu).await.is_err() {
                        break;
                    }
                    match reply(u16::from_be_bytes([hdr[0], hdr[1]]), hdr[6], &pdu) {
                        Some(bytes) => {
                            if s.write_all(&bytes).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
        });
        addr
    }

    fn mbap(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut f = tid.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
        f.push(unit);
        f.extend_from_slice(pdu);
        f
    }

    /// The correct answer to a read of 2 holding registers: 0x0102, 0x0304.
    fn good(tid: u16, unit: u8) -> Vec<u8> {
        mbap(tid, unit, &[3, 4, 1, 2, 3, 4])
    }

    async fn read_from(addr: String) -> (Result<BlockData, ReadError>, &'static str) {
        let mut link = TcpLink::new(addr);
        let r = link
            .read(7, Table::Holding, 0, 2, Duration::from_millis(300))
            .await;
        let hint = r.as_ref().err().map_or("", |e| e.hint(link.transport()));
        (r, hint)
    }

    fn garbled(r: &Result<BlockData, ReadError>) -> &str {
        match r {
            Err(ReadError::Garbled(m)) => m,
            other => panic!("expected a garbled reply, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_good_tcp_reply_reads() {
        let addr = raw_peer(|tid, unit, _| Some(good(tid, unit))).await;
        assert_eq!(
            read_from(addr).await.0,
            Ok(BlockData::Words(vec![0x0102, 0x0304]))
        );
    }

    #[tokio::test]
    async fn tcp_garbage_is_garbled_not_silence() {
        let addr = raw_peer(|_, _, _| Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await;
        let (r, hint) = read_from(addr).await;
        let m = garbled(&r);
        assert!(
            m.contains("not a Modbus TCP reply: protocol id 0x5450"),
            "{m}"
        );
        assert!(m.contains("48 54 54 50"), "shows the first bytes: {m}");
        assert!(hint.contains("Modbus TCP port"), "{hint}");
        assert!(!hint.contains("A/B") && !hint.contains("baud"), "{hint}");
    }

    #[tokio::test]
    async fn tcp_truncated_frame_is_garbled() {
        // The whole MBAP header and 2 of the 5 PDU bytes it announces.
        let addr = raw_peer(|tid, unit, _| Some(good(tid, unit)[..9].to_vec())).await;
        let (r, _) = read_from(addr).await;
        let m = garbled(&r);
        assert!(
            m.contains("truncated frame: the MBAP header announces 7 bytes, 3 arrived"),
            "{m}"
        );
        // Fewer bytes than a header.
        let addr = raw_peer(|tid, unit, _| Some(good(tid, unit)[..4].to_vec())).await;
        let m = garbled(&read_from(addr).await.0).to_string();
        assert!(
            m.contains("4 byte(s) arrived, fewer than the 7-byte MBAP header"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn tcp_overlong_length_is_garbled() {
        let addr = raw_peer(|tid, unit, _| {
            let mut r = good(tid, unit);
            r[4..6].copy_from_slice(&0xFFFFu16.to_be_bytes());
            Some(r)
        })
        .await;
        let m = garbled(&read_from(addr).await.0).to_string();
        assert!(
            m.contains("over-long frame: the MBAP header announces 65535 bytes"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn tcp_bad_byte_count_is_garbled_not_io() {
        // Byte count 6 with 4 data bytes: tokio-modbus reads past the end (an io::Error).
        let addr = raw_peer(|tid, unit, _| Some(mbap(tid, unit, &[3, 6, 1, 2, 3, 4]))).await;
        let (r, hint) = read_from(addr).await;
        let m = garbled(&r);
        assert!(
            m.contains(
                "bad byte count: the reply to function 3 says 6 data bytes, the frame carries 4"
            ),
            "{m}"
        );
        assert!(!hint.contains("network"), "{hint}");
    }

    #[tokio::test]
    async fn tcp_reply_from_another_unit_names_both_ids() {
        let addr = raw_peer(|tid, unit, _| Some(good(tid, unit + 1))).await;
        let (r, hint) = read_from(addr).await;
        let m = garbled(&r);
        assert!(
            m.contains("reply from unit id 8 to a request for unit id 7"),
            "{m}"
        );
        assert!(hint.contains("unit id"), "{hint}");
    }

    #[tokio::test]
    async fn tcp_reply_with_another_transaction_id_is_garbled() {
        let addr = raw_peer(|tid, unit, _| Some(good(tid ^ 0xFFFF, unit))).await;
        let m = garbled(&read_from(addr).await.0).to_string();
        assert!(
            m.contains("reply carries transaction id 65535, not the request's"),
            "{m}"
        );
    }

    #[tokio::test]
    async fn tcp_peer_closing_is_io_with_network_advice() {
        let addr = raw_peer(|_, _, _| None).await;
        let (r, hint) = read_from(addr).await;
        assert_eq!(
            r,
            Err(ReadError::Io(
                "the device closed the connection without a reply".into()
            ))
        );
        assert!(hint.contains("IP address and port"), "{hint}");
    }

    #[tokio::test]
    async fn tcp_silence_is_no_reply_with_tcp_advice() {
        let addr = raw_peer(|_, _, _| Some(Vec::new())).await;
        let (r, hint) = read_from(addr).await;
        assert_eq!(r, Err(ReadError::NoReply(300)));
        assert!(hint.contains("unit id") && !hint.contains("A/B"), "{hint}");
    }

    #[test]
    fn describe_names_what_is_wrong() {
        let rx = |b: &[u8]| Received {
            total: b.len() as u64,
            head: b[..b.len().min(Received::KEEP)].to_vec(),
            eof: false,
        };
        assert!(describe_tcp_reply(&rx(&[0, 1, 0, 0, 0, 1, 7]), 7).contains("bad MBAP length 1"));
        assert!(
            describe_tcp_reply(&rx(&mbap(0, 7, &[3, 3, 1, 2, 3])), 7)
                .contains("3 data bytes for registers of 2 bytes each")
        );
        let long = vec![0xAA; 100];
        let m = describe_tcp_reply(&rx(&long), 7);
        assert!(m.ends_with("AA …)"), "bounded: {m}");
        assert!(m.len() < 120, "{m}");
    }
}
