//! Drones over MAVLink (issue 15; docs/drones.md): telemetry in, decimated tracks, photos and
//! link events out, through the outbox like every other item.
//!
//! # Layout (bytes → frames → messages → drone state → items)
//!
//! - [`frame`]: finds MAVLink 1 and 2 frames in bytes and checks their CRC (pure); the
//!   `mavlink` crate's `common` dialect decodes the payloads.
//! - [`track`]: which positions go up (decimation by time, distance and turn) and when a
//!   stretch becomes a `Track` item (pure).
//! - [`drone`]: one drone's state: messages and time in, items out; the heartbeat link judgment
//!   [`drone::Link`] (pure).
//! - [`port`]: the I/O shell, one task per connection (UDP, TCP in or out, serial): reads
//!   bytes, hands each frame to the drone of its system id (others are counted as foreign),
//!   ticks every 250 ms, appends what comes out to the outbox, counts everything.
//! - [`photo`]: photos' bytes fetched over HTTP (`photo_url`) and sent as evidence parts
//!   with the `drone_photo` item that names them.
//! - [`fuzz`]: the fuzz target of everything a connection can receive.
//!
//! Several drones may share one connection (one UDP port for the fleet): frames are told apart
//! by their system id. Nothing of a drone's state is kept across a restart: the points gathered
//! since the last cut (at most `item_every_s`) are cut at a clean stop and lost at a crash, and
//! a link loss is judged again from the first heartbeat after the start.

pub mod drone;
pub mod frame;
pub mod fuzz;
pub mod photo;
pub mod port;
pub mod track;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use drone::DroneCfg;
pub use track::Decimation;

/// Where a drone's MAVLink comes from (the `connection` key), in the notation of the `mavlink`
/// crate and MAVSDK.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Connection {
    /// `udpin:ADDR:PORT`: datagrams to this address (the default `udpin:0.0.0.0:14550`, where
    /// PX4 and ArduPilot send to a ground station).
    UdpIn(SocketAddr),
    /// `tcpin:ADDR:PORT`: listen; one sender at a time (a newer connection replaces it).
    TcpIn(SocketAddr),
    /// `tcpout:HOST:PORT`: connect (SITL, a telemetry bridge), again every 2 s when it drops.
    TcpOut(String),
    /// `serial:PATH:BAUD`: a telemetry radio or a flight controller's UART.
    Serial { path: PathBuf, baud: u32 },
}

/// The default `connection`.
pub const DEFAULT_CONNECTION: &str = "udpin:0.0.0.0:14550";

impl Connection {
    /// Parses `udpin:`, `tcpin:`, `tcpout:` and `serial:`; the error says what was expected.
    pub fn parse(s: &str) -> Result<Connection, String> {
        let bad_addr = |a: &str| format!("`{a}` is not IP:PORT (e.g. 0.0.0.0:14550)");
        if let Some(a) = s.strip_prefix("udpin:") {
            a.parse().map(Connection::UdpIn).map_err(|_| bad_addr(a))
        } else if let Some(a) = s.strip_prefix("tcpin:") {
            a.parse().map(Connection::TcpIn).map_err(|_| bad_addr(a))
        } else if let Some(a) = s.strip_prefix("tcpout:") {
            match a.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                    Ok(Connection::TcpOut(a.to_string()))
                }
                _ => Err(format!("`{a}` is not HOST:PORT (e.g. 127.0.0.1:5760)")),
            }
        } else if let Some(a) = s.strip_prefix("serial:") {
            match a.rsplit_once(':') {
                Some((p, b)) if !p.is_empty() => match b.parse::<u32>() {
                    Ok(baud) if (1200..=3_000_000).contains(&baud) => Ok(Connection::Serial {
                        path: PathBuf::from(p),
                        baud,
                    }),
                    _ => Err(format!("`{b}` is not a baud rate (1200..=3000000)")),
                },
                _ => Err(format!("`{a}` is not PATH:BAUD (e.g. /dev/ttyUSB0:57600)")),
            }
        } else {
            Err(format!(
                "`{}` is not a connection: write udpin:IP:PORT, tcpin:IP:PORT, tcpout:HOST:PORT or serial:PATH:BAUD",
                fumegrid_common::text::clip(s, 64)
            ))
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connection::UdpIn(a) => write!(f, "udpin:{a}"),
            Connection::TcpIn(a) => write!(f, "tcpin:{a}"),
            Connection::TcpOut(a) => write!(f, "tcpout:{a}"),
            Connection::Serial { path, baud } => write!(f, "serial:{}:{baud}", path.display()),
        }
    }
}

/// One `[[drones]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneSpec {
    pub connection: Connection,
    pub drone: DroneCfg,
    /// How its photos' bytes are fetched; none: photos go up as metadata only.
    pub photos: Option<photo::PhotoCfg>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_parse_and_print_back() {
        for s in [
            "udpin:0.0.0.0:14550",
            "tcpin:127.0.0.1:5760",
            "tcpout:sitl.local:5760",
            "serial:/dev/ttyUSB0:57600",
        ] {
            let c = Connection::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(c.to_string(), s);
        }
        for s in [
            "udp:0.0.0.0:14550",
            "udpin:0.0.0.0",
            "tcpout::5760",
            "serial:/dev/ttyUSB0:9",
            "",
        ] {
            assert!(Connection::parse(s).is_err(), "{s}");
        }
    }
}
