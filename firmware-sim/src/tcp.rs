//! Modbus TCP servers: MBAP framing around the shared [`crate::pdu`] code, on tokio.
//!
//! One listening port serves one unit id; a request for any other unit id gets exception 0x0B
//! (gateway target device failed to respond). A malformed MBAP header (protocol id not 0, length
//! outside 2..=254) closes the connection, as real devices do. Faults behave as on RTU, except
//! that `crc` (TCP has no CRC) answers with a wrong transaction id, which a client must reject,
//! and `overlong` sets the MBAP length field to 65535.
//! A fleet is many such devices, one per port, in one current-thread runtime.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fumegrid_common::profile::Profile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::clock::SimClock;
use crate::fault::{self, Fault, FaultKind};
use crate::pdu::{self, Exception};
use crate::regmap::RegisterImage;
use crate::scenario::Scenario;
use crate::stats::{BusStats, SlaveStats, bump};

/// One simulated TCP device (shared by its connections).
#[derive(Debug)]
pub struct Device {
    pub unit: u8,
    pub profile: Arc<Profile>,
    pub scenario: Scenario,
    pub fault: Fault,
    /// Delay before each reply (device processing time).
    pub turnaround: Duration,
    pub clock: SimClock,
    pub stats: Arc<SlaveStats>,
    pub server: Arc<BusStats>,
    count: AtomicU64,
}

impl Device {
    pub fn new(
        unit: u8,
        profile: Arc<Profile>,
        scenario: Scenario,
        fault: Fault,
        turnaround: Duration,
        clock: SimClock,
    ) -> Device {
        Device {
            unit,
            profile,
            scenario,
            fault,
            turnaround,
            clock,
            stats: Arc::new(SlaveStats::default()),
            server: Arc::new(BusStats::default()),
            count: AtomicU64::new(0),
        }
    }

    /// Shares server-wide counters with other devices (a fleet reports them once).
    pub fn sharing(mut self, server: Arc<BusStats>) -> Device {
        self.server = server;
        self
    }

    /// The reply to one MBAP request (`unit` and PDU), or `None` for silence, plus extra delay.
    fn reply(&self, tid: u16, unit: u8, pdu_in: &[u8]) -> (Option<Vec<u8>>, Duration) {
        let function = pdu_in.first().copied().unwrap_or(0);
        if unit != self.unit {
            bump(&self.server.other_ids);
            let pdu = pdu::exception(function, Exception::GATEWAY_TARGET_FAILED);
            return (Some(mbap(tid, unit, &pdu)), Duration::ZERO);
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        bump(&self.stats.requests);
        let image = RegisterImage::at(&self.profile, self.scenario, self.clock.now());
        let reply = mbap(tid, unit, &pdu::respond(&image, pdu_in));
        let Some(kind) = self.fault.for_request(n) else {
            return (Some(reply), self.turnaround);
        };
        bump(&self.stats.faults);
        let t = self.turnaround;
        match kind {
            FaultKind::None => (Some(reply), t),
            FaultKind::NoReply => (None, t),
            FaultKind::Late(d) => (Some(reply), t + d),
            FaultKind::Crc => (Some(mbap(tid ^ 0xFFFF, unit, &reply[7..])), t),
            FaultKind::Exception(c) => (
                Some(mbap(tid, unit, &pdu::exception(function, Exception(c)))),
                t,
            ),
            FaultKind::Garbage => (Some(fault::garbage(self.unit, n, reply.len())), t),
            FaultKind::Truncated => (Some(reply[..7 + (reply.len() - 7) / 2].to_vec()), t),
            FaultKind::Overlong => {
                let mut r = reply;
                r[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
                (Some(r), t)
            }
            FaultKind::BadCount => (Some(mbap(tid, unit, &fault::bad_count(&reply[7..]))), t),
            FaultKind::OtherUnit => (Some(mbap(tid, unit.wrapping_add(1), &reply[7..])), t),
        }
    }
}

/// An MBAP frame: transaction id, protocol 0, length, unit, PDU.
pub fn mbap(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(7 + pdu.len());
    f.extend_from_slice(&tid.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    f.push(unit);
    f.extend_from_slice(pdu);
    f
}

/// Accepts connections forever, one task per connection.
pub async fn serve(listener: TcpListener, device: Arc<Device>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let d = device.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, d).await;
                });
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn connection(mut stream: TcpStream, device: Arc<Device>) -> io::Result<()> {
    let mut hdr = [0u8; 7];
    let mut pdu_buf = [0u8; 256];
    loop {
        match stream.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let tid = u16::from_be_bytes([hdr[0], hdr[1]]);
        let proto = u16::from_be_bytes([hdr[2], hdr[3]]);
        let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
        if proto != 0 || !(2..=254).contains(&len) {
            bump(&device.server.bad_frames);
            bump(&device.stats.bad_requests);
            return Ok(());
        }
        let pdu_in = &mut pdu_buf[..len - 1];
        stream.read_exact(pdu_in).await?;
        let (reply, delay) = device.reply(tid, hdr[6], pdu_in);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(bytes) = reply {
            stream.write_all(&bytes).await?;
            if hdr[6] == device.unit {
                bump(&device.stats.replies);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::diag::Source;

    #[tokio::test]
    async fn serves_reads_and_rejects_other_units() {
        let text = "[profile]\nid = \"t\"\n[[points]]\nmetric = \"fan_on\"\ntable = \"holding\"\naddress = 6\ntype = \"u16\"\n";
        let profile = Profile::from_source(&Source::new("t.toml", text)).expect("valid");
        let dev = Arc::new(Device::new(
            3,
            Arc::new(profile),
            Scenario::Normal,
            Fault::default(),
            Duration::ZERO,
            SimClock::new(0.0, 1.0),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, dev.clone()));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&mbap(7, 3, &[3, 0, 6, 0, 1]))
            .await
            .expect("write");
        let mut r = [0u8; 11];
        s.read_exact(&mut r).await.expect("reply");
        assert_eq!(r.to_vec(), mbap(7, 3, &[3, 2, 0, 1]));
        s.write_all(&mbap(8, 9, &[3, 0, 6, 0, 1]))
            .await
            .expect("write");
        let mut r = [0u8; 9];
        s.read_exact(&mut r).await.expect("reply");
        assert_eq!(r.to_vec(), mbap(8, 9, &[0x83, 0x0B]));
        s.write_all(&mbap(9, 3, &[3, 0, 0, 0, 1]))
            .await
            .expect("write");
        s.read_exact(&mut r).await.expect("reply");
        assert_eq!(r.to_vec(), mbap(9, 3, &[0x83, 0x02]));
        assert_eq!(dev.stats.requests.load(Ordering::Relaxed), 2);
        assert_eq!(dev.server.other_ids.load(Ordering::Relaxed), 1);
    }
}
