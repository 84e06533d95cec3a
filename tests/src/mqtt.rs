//! Hostile MQTT clients for the broker tests and benchmarks: raw MQTT 3.1.1 over a blocking
//! socket, packets encoded by rumqttc's codec. Each waits for the broker's answer to every
//! packet it sends, so what it reports is what the broker did, not what the socket buffered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, Publish, Subscribe,
};
use rumqttc::mqttbytes::{self, QoS};

/// What the broker answered to one CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    Accepted,
    Refused(ConnectReturnCode),
    /// Closed without a CONNACK.
    Closed,
}

/// One raw client connection.
#[derive(Debug)]
pub struct RawClient {
    sock: TcpStream,
    buf: BytesMut,
    /// Packets other than the awaited PUBACK that arrived while [`RawClient::publish_acked`]
    /// waited, in order.
    pub received: Vec<Packet>,
}

impl RawClient {
    /// Connects and sends CONNECT as `client_id` with `user`/`pass`; returns the answer.
    pub fn connect(
        port: u16,
        client_id: &str,
        user: &str,
        pass: &str,
    ) -> std::io::Result<(RawClient, Connected)> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.set_nodelay(true)?;
        let mut c = RawClient {
            sock,
            buf: BytesMut::new(),
            received: Vec::new(),
        };
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 30;
        connect.login = Some(Login::new(user, pass));
        c.send(&Packet::Connect(connect))?;
        let answer = match c.next_packet()? {
            Some(Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            })) => Connected::Accepted,
            Some(Packet::ConnAck(ConnAck { code, .. })) => Connected::Refused(code),
            _ => Connected::Closed,
        };
        Ok((c, answer))
    }

    pub fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        p.write(&mut out, 1 << 28)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.sock.write_all(&out)
    }

    /// The next packet from the broker; `None` when it closed the connection.
    pub fn next_packet(&mut self) -> std::io::Result<Option<Packet>> {
        loop {
            match Packet::read(&mut self.buf, 1 << 28) {
                Ok(p) => return Ok(Some(p)),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Subscribes to `filter` with QoS 1 (the SUBACK lands in `received`).
    pub fn subscribe(&mut self, filter: &str) -> std::io::Result<()> {
        let mut s = Subscribe::new(filter, QoS::AtLeastOnce);
        s.pkid = 2;
        self.send(&Packet::Subscribe(s))
    }

    /// Publishes with QoS 1 and waits: `true` when the broker acked it, `false` when it closed
    /// the connection instead.
    pub fn publish_acked(&mut self, topic: &str, payload: &[u8]) -> std::io::Result<bool> {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        p.pkid = 1;
        if self.send(&Packet::Publish(p)).is_err() {
            return Ok(false);
        }
        loop {
            match self.next_packet() {
                Ok(Some(Packet::PubAck(_))) => return Ok(true),
                Ok(Some(p)) => self.received.push(p),
                Ok(None) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(e),
                Err(_) => return Ok(false),
            }
        }
    }
}

/// What a flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flood {
    /// Publishes the broker acknowledged (kept).
    pub accepted: u64,
    /// Publishes answered by closing the connection (refused).
    pub refused: u64,
    pub connections: u64,
    pub secs: f64,
}

/// Publishes `count` messages, each to its own topic `fumegrid/v1/{user}-{i}-{padding}/up`
/// (`topic_bytes` long, so that it matches the ingest's `fumegrid/v1/+/up`), as account
/// `user`; reconnects whenever the broker closes the connection.
pub fn flood_unique_topics(
    port: u16,
    user: &str,
    pass: &str,
    count: u64,
    topic_bytes: usize,
) -> std::io::Result<Flood> {
    let t0 = crate::now();
    let mut f = Flood::default();
    let mut client: Option<RawClient> = None;
    let mut i = 0u64;
    while i < count {
        let c = match client.as_mut() {
            Some(c) => c,
            None => {
                let (c, answer) = RawClient::connect(port, user, user, pass)?;
                f.connections += 1;
                if answer != Connected::Accepted {
                    return Err(std::io::Error::other(format!("login refused: {answer:?}")));
                }
                client.insert(c)
            }
        };
        let head = format!("fumegrid/v1/{user}-{i}-");
        let pad = topic_bytes.saturating_sub(head.len() + 3);
        let topic = format!("{head}{}/up", "x".repeat(pad));
        if c.publish_acked(&topic, b"{}")? {
            f.accepted += 1;
        } else {
            f.refused += 1;
            client = None;
        }
        i += 1;
    }
    f.secs = (crate::now() - t0).as_secs_f64();
    Ok(f)
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
