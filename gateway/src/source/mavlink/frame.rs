//! MAVLink framing (pure): bytes in, whole frames (or the reason there is none) out.
//!
//! MAVLink 1 (`0xFE`) and MAVLink 2 (`0xFD`) frames both, whatever the sender mixes. The `mavlink`
//! crate's readers stop at the first bad byte with an I/O-flavoured error and cannot say how
//! many bytes they skipped, so the boundary search is here and the crate does what it is for:
//! the `common` dialect's CRC_EXTRA table and the payload decoding ([`decode`]).
//!
//! Resynchronisation follows the MAVLink guide: a frame whose checksum fails costs its start
//! byte only, and the search goes on from the next byte, so a stray `0xFE` in noise never eats a
//! good frame behind it. A frame of an id the dialect lacks cannot be checked: it is skipped
//! whole only when a start byte (or a datagram's end) follows it, else it costs its start byte
//! too (a stream waits for the byte after it).

use mavlink::dialects::common::MavMessage;
use mavlink::{MavlinkVersion, Message};

const STX_V1: u8 = 0xFE;
const STX_V2: u8 = 0xFD;
/// MAVLink 2 incompatibility flag: the frame carries a 13-byte signature.
const IFLAG_SIGNED: u8 = 0x01;
const SIGNATURE_LEN: usize = 13;

/// One whole frame whose checksum verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub version: MavlinkVersion,
    pub system_id: u8,
    pub component_id: u8,
    pub message_id: u32,
    /// The payload as sent (MAVLink 2 trims trailing zeros; [`decode`] pads them back).
    pub payload: &'a [u8],
}

/// What [`next`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<'a> {
    /// A frame of `len` bytes with a good checksum.
    Frame { frame: Frame<'a>, len: usize },
    /// `skipped` bytes that start no frame (noise before the next start byte).
    Garbage { skipped: usize },
    /// A start byte and a header, but the checksum does not verify: the start byte is skipped.
    BadCrc,
    /// A whole frame of a message the `common` dialect does not define (e.g. ArduPilot's own
    /// messages): its checksum cannot be checked, so [`split`] skips it whole (`len` bytes) when
    /// a start byte or the datagram's end follows it, and its start byte only otherwise.
    Unknown { message_id: u32, len: usize },
    /// A MAVLink 2 frame with incompatibility flags other than signing: not understood; the
    /// start byte is skipped.
    Unsupported,
    /// The buffer ends inside a frame: wait for more bytes (a stream), or count it (a datagram).
    Partial,
    /// Nothing left.
    Empty,
}

/// The first thing in `buf` (see [`Next`]). Never panics, whatever the bytes.
pub fn next(buf: &[u8]) -> Next<'_> {
    let Some(&first) = buf.first() else {
        return Next::Empty;
    };
    if first != STX_V1 && first != STX_V2 {
        let skipped = buf
            .iter()
            .position(|&b| b == STX_V1 || b == STX_V2)
            .unwrap_or(buf.len());
        return Next::Garbage { skipped };
    }
    let v2 = first == STX_V2;
    let header = if v2 { 10 } else { 6 };
    if buf.len() < header {
        return Next::Partial;
    }
    let payload_len = usize::from(buf[1]);
    let (flags, sequence_at) = if v2 { (buf[2], 4) } else { (0, 2) };
    if flags & !IFLAG_SIGNED != 0 {
        return Next::Unsupported;
    }
    let signed = if flags & IFLAG_SIGNED != 0 {
        SIGNATURE_LEN
    } else {
        0
    };
    let len = header + payload_len + 2 + signed;
    if buf.len() < len {
        return Next::Partial;
    }
    let system_id = buf[sequence_at + 1];
    let component_id = buf[sequence_at + 2];
    let message_id = if v2 {
        u32::from_le_bytes([buf[7], buf[8], buf[9], 0])
    } else {
        u32::from(buf[5])
    };
    let payload = &buf[header..header + payload_len];
    let crc_at = header + payload_len;
    let sent = u16::from_le_bytes([buf[crc_at], buf[crc_at + 1]]);
    if MavMessage::default_message_from_id(message_id).is_none() {
        return Next::Unknown { message_id, len };
    }
    let computed = mavlink::calculate_crc(&buf[1..crc_at], MavMessage::extra_crc(message_id));
    if computed != sent {
        return Next::BadCrc;
    }
    Next::Frame {
        frame: Frame {
            version: if v2 {
                MavlinkVersion::V2
            } else {
                MavlinkVersion::V1
            },
            system_id,
            component_id,
            message_id,
            payload,
        },
        len,
    }
}

/// The frame's message, decoded by the `common` dialect. An error for a payload the dialect
/// refuses (a value outside an enum, a payload longer than the message).
pub fn decode(frame: &Frame<'_>) -> Result<MavMessage, mavlink::error::ParserError> {
    MavMessage::parse(frame.version, frame.message_id, frame.payload)
}

/// What one pass over a byte buffer found (for counting), and the frames in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub frames: u64,
    pub garbage_bytes: u64,
    pub bad_crc: u64,
    pub unknown: u64,
    pub unsupported: u64,
}

/// Splits `buf` into frames, calling `each` for every good one, and returns how many bytes were
/// used (the rest is the start of a frame that needs more bytes, when `stream`; in a datagram
/// a partial frame at the end is noise and counted as garbage).
pub fn split<'a>(
    buf: &'a [u8],
    stream: bool,
    tally: &mut Tally,
    mut each: impl FnMut(Frame<'a>),
) -> usize {
    let mut at = 0;
    loop {
        let Some(rest) = buf.get(at..) else {
            return buf.len();
        };
        match next(rest) {
            Next::Frame { frame, len } => {
                tally.frames += 1;
                each(frame);
                at += len;
            }
            Next::Garbage { skipped } => {
                tally.garbage_bytes += skipped as u64;
                at += skipped;
            }
            Next::BadCrc => {
                tally.bad_crc += 1;
                at += 1;
            }
            Next::Unsupported => {
                tally.unsupported += 1;
                at += 1;
            }
            // Its checksum cannot be checked: it is taken for a frame only when another frame
            // (or the datagram's end) follows it. Otherwise it was a start byte in noise, and
            // costs that byte only: over a serial line or TCP, noise and frames are one stream,
            // and a stray start byte must not swallow the good frames behind it.
            Next::Unknown { len, .. } => match rest.get(len) {
                Some(&b) if b != STX_V1 && b != STX_V2 => {
                    tally.garbage_bytes += 1;
                    at += 1;
                }
                None if stream => return at,
                _ => {
                    tally.unknown += 1;
                    at += len;
                }
            },
            Next::Partial if stream => return at,
            Next::Partial => {
                // Not a frame after all: count its start byte and look further in.
                tally.garbage_bytes += 1;
                at += 1;
            }
            Next::Empty => return at,
        }
    }
}

/// A message as one frame (tests).
#[cfg(test)]
pub(crate) fn encode(version: MavlinkVersion, sys: u8, msg: &MavMessage) -> Vec<u8> {
    let mut out = Vec::new();
    let header = mavlink::MavHeader {
        system_id: sys.into(),
        component_id: 1,
        sequence: 7,
    };
    mavlink::write_versioned_msg(&mut out, version, header, msg).expect("write to a Vec");
    out
}

#[cfg(test)]
mod tests {
    use mavlink::MavlinkVersion;
    use mavlink::dialects::common::{HEARTBEAT_DATA, MavMessage};
    use proptest::prelude::*;

    use super::*;

    fn heartbeat() -> MavMessage {
        MavMessage::HEARTBEAT(HEARTBEAT_DATA::default())
    }

    #[test]
    fn v1_and_v2_frames_split_and_decode() {
        for v in [MavlinkVersion::V1, MavlinkVersion::V2] {
            let bytes = encode(v, 42, &heartbeat());
            let Next::Frame { frame, len } = next(&bytes) else {
                panic!("{v:?}: {:?}", next(&bytes));
            };
            assert_eq!(len, bytes.len());
            assert_eq!(frame.system_id, 42);
            assert_eq!(frame.version, v);
            assert_eq!(decode(&frame).expect("decodes"), heartbeat());
        }
    }

    #[test]
    fn a_flipped_byte_is_a_bad_crc_and_the_next_frame_still_comes_through() {
        let mut bytes = encode(MavlinkVersion::V2, 1, &heartbeat());
        bytes[12] ^= 0x40;
        let good = encode(MavlinkVersion::V1, 1, &heartbeat());
        bytes.extend_from_slice(b"noise");
        bytes.extend_from_slice(&good);
        let mut tally = Tally::default();
        let mut got = 0;
        let used = split(&bytes, true, &mut tally, |_| got += 1);
        assert_eq!(used, bytes.len());
        assert_eq!(got, 1);
        assert_eq!(tally.bad_crc, 1);
        assert!(tally.garbage_bytes >= 5);
    }

    #[test]
    fn a_stream_waits_for_the_rest_of_a_frame_a_datagram_does_not() {
        let bytes = encode(MavlinkVersion::V2, 1, &heartbeat());
        let cut = &bytes[..bytes.len() - 3];
        let mut tally = Tally::default();
        assert_eq!(split(cut, true, &mut tally, |_| {}), 0);
        let mut tally = Tally::default();
        assert_eq!(split(cut, false, &mut tally, |_| {}), cut.len());
        assert_eq!(tally.frames, 0);
        assert!(tally.garbage_bytes >= 1);
    }

    #[test]
    fn unknown_messages_are_skipped_whole() {
        // ArduPilot's AHRS2 (id 178) is not in `common`.
        let mut f = vec![STX_V1, 4, 0, 1, 1, 178, 1, 2, 3, 4, 0, 0];
        f.extend(encode(MavlinkVersion::V1, 1, &heartbeat()));
        let mut tally = Tally::default();
        let mut got = 0;
        split(&f, true, &mut tally, |_| got += 1);
        assert_eq!((tally.unknown, got, tally.bad_crc), (1, 1, 0));
    }

    #[test]
    fn a_start_byte_in_noise_that_looks_like_an_unknown_message_eats_no_frame_behind_it() {
        // Over a serial line noise and frames are one stream: a stray 0xFE whose "header"
        // names an id `common` lacks claims the next 40 bytes, the good frames among them.
        let mut bytes = vec![STX_V1, 40, 0x11, 0x22, 0x33, 178, 0x55];
        let good = encode(MavlinkVersion::V1, 1, &heartbeat());
        bytes.extend_from_slice(&good);
        bytes.extend(encode(MavlinkVersion::V2, 2, &heartbeat()));
        bytes.extend_from_slice(&[0x01; 40]);
        for stream in [true, false] {
            let mut tally = Tally::default();
            let mut found = Vec::new();
            split(&bytes, stream, &mut tally, |f| found.push(f.system_id));
            assert_eq!(found, [1, 2], "stream {stream}: {tally:?}");
            assert_eq!(tally.unknown, 0, "noise, not a message: {tally:?}");
        }
    }

    #[test]
    fn a_stream_waits_for_the_byte_after_an_unknown_message() {
        let f = vec![STX_V1, 4, 0, 1, 1, 178, 1, 2, 3, 4, 0, 0];
        let mut tally = Tally::default();
        assert_eq!(split(&f, true, &mut tally, |_| {}), 0, "is a frame next?");
        let mut g = f.clone();
        g.push(STX_V2);
        assert_eq!(split(&g, true, &mut tally, |_| {}), f.len());
        assert_eq!(tally.unknown, 1);
        // A datagram ends where it ends.
        let mut tally = Tally::default();
        assert_eq!(split(&f, false, &mut tally, |_| {}), f.len());
        assert_eq!(tally.unknown, 1);
    }

    proptest! {
        /// Whatever the bytes: no panic, progress on every step, and the counts add up.
        #[test]
        fn any_bytes_are_split_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut tally = Tally::default();
            let used = split(&bytes, false, &mut tally, |f| { let _ = decode(&f); });
            prop_assert_eq!(used, bytes.len());
        }

        /// A good frame hidden in noise is found (the noise has no start byte right before it).
        #[test]
        fn a_frame_in_noise_is_found(noise in proptest::collection::vec(0u8..0xF0, 0..100), sys in 1u8..=255) {
            let mut bytes = noise.clone();
            bytes.extend(encode(MavlinkVersion::V2, sys, &heartbeat()));
            bytes.extend(noise);
            let mut tally = Tally::default();
            let mut found = Vec::new();
            split(&bytes, false, &mut tally, |f| found.push(f.system_id));
            prop_assert_eq!(found, vec![sys]);
        }
    }
}
