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

use fumegrid_common::profile::Table;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ProtocolError, Slave};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::config::{Line, Parity};
use crate::decode::BlockData;

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
        Some(Err(tokio_modbus::Error::Transport(e))) if e.kind() == io::ErrorKind::InvalidData => {
            (Err(ReadError::Garbled(e.to_string())), true)
        }
        Some(Err(tokio_modbus::Error::Transport(e))) => (Err(ReadError::Io(e.to_string())), true),
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
    pub fn new(path: PathBuf, line: Line, guard: Option<Duration>) -> RtuLink {
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
            free_at: Instant::now(),
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
        let bytes_seen = rx.load(Ordering::Relaxed) != before;
        let (result, reset) = classify(r, timeout, bytes_seen, count);
        if reset {
            // The slave may still answer this request. Drop the context (and its buffer) and stay
            // off the line for the guard time; a late reply lands in the port's input buffer and
            // is discarded before the next request is written. The port itself is closed (and
            // reopened on the next request) only after an I/O error.
            self.ctx = None;
            if matches!(result, Err(ReadError::Io(_))) {
                self.port = None;
            }
            self.free_at = Instant::now() + self.guard.unwrap_or(timeout * 2);
        } else {
            self.free_at = Instant::now() + silence;
        }
        result
    }
}

/// A Modbus TCP connection to one `host:port` (a monitor, or a TCP→RTU gateway with several
/// unit ids behind it), reconnected on demand.
pub struct TcpLink {
    addr: String,
    ctx: Option<Context>,
    pub connects: u64,
    /// No request before this moment (a firmware's inter-request delay).
    free_at: Instant,
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
            connects: 0,
            free_at: Instant::now(),
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
        tokio::time::sleep_until(self.free_at).await;
        let ctx = self.connect(timeout).await?;
        ctx.set_slave(Slave(slave));
        let r = tokio::time::timeout(timeout, call(ctx, table, start, count))
            .await
            .ok();
        // Over TCP a late reply carries the old transaction id, but a fresh connection is the
        // simplest guarantee, and a device that stopped answering often needs one anyway.
        let (result, reset) = classify(r, timeout, false, count);
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
}
