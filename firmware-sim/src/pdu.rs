//! Modbus PDUs (function code + data), shared by the RTU and TCP servers.
//!
//! Reads (FC 1, 2, 3, 4) are served from a [`RegisterImage`]. The simulated monitors are
//! read-only: writes (FC 5, 6, 15, 16) and any other function code get exception 01 (illegal
//! function), which is what many real monitors answer too.

use fumegrid_common::profile::Table;

// The exception codes are the register image's answer to a bad access; re-exported for the
// servers that frame them.
pub use crate::regmap::Exception;
use crate::regmap::{Data, RegisterImage};

/// A decoded request PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC 1, 2, 3 or 4.
    Read {
        function: u8,
        table: Table,
        address: u16,
        count: u16,
    },
    /// A well-formed write (FC 5, 6, 15, 16) or any other function code.
    Unsupported { function: u8 },
    /// Too short, or a byte count that disagrees with the quantity.
    Malformed { function: u8 },
}

/// The table a read function code addresses.
pub fn read_table(function: u8) -> Option<Table> {
    match function {
        1 => Some(Table::Coil),
        2 => Some(Table::Discrete),
        3 => Some(Table::Holding),
        4 => Some(Table::Input),
        _ => None,
    }
}

/// Parses a request PDU (no slave id, no CRC / MBAP).
pub fn parse(pdu: &[u8]) -> Request {
    let Some(&function) = pdu.first() else {
        return Request::Malformed { function: 0 };
    };
    let be = |i: usize| u16::from_be_bytes([pdu[i], pdu[i + 1]]);
    match function {
        1..=4 if pdu.len() == 5 => Request::Read {
            function,
            table: read_table(function).unwrap_or(Table::Holding),
            address: be(1),
            count: be(3),
        },
        5 | 6 if pdu.len() == 5 => Request::Unsupported { function },
        15 | 16 if pdu.len() >= 6 => {
            let qty = usize::from(be(3));
            let want = if function == 15 {
                qty.div_ceil(8)
            } else {
                qty * 2
            };
            let bytes = usize::from(pdu[5]);
            if bytes == want && pdu.len() == 6 + bytes {
                Request::Unsupported { function }
            } else {
                Request::Malformed { function }
            }
        }
        1..=6 | 15 | 16 => Request::Malformed { function },
        _ => Request::Unsupported { function },
    }
}

/// An exception response PDU.
pub fn exception(function: u8, e: Exception) -> Vec<u8> {
    vec![function | 0x80, e.0]
}

/// The response PDU to `pdu` from a device whose tables are `image`.
pub fn respond(image: &RegisterImage, pdu: &[u8]) -> Vec<u8> {
    match parse(pdu) {
        Request::Read {
            function,
            table,
            address,
            count,
        } => match image.read(table, address, count) {
            Ok(data) => read_response(function, &data),
            Err(e) => exception(function, e),
        },
        Request::Unsupported { function } => exception(function, Exception::ILLEGAL_FUNCTION),
        Request::Malformed { function } => exception(function, Exception::ILLEGAL_DATA_VALUE),
    }
}

/// The normal response to a read: function, byte count, data.
pub fn read_response(function: u8, data: &Data) -> Vec<u8> {
    let mut out = vec![function, 0];
    match data {
        Data::Words(words) => {
            for w in words {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        Data::Bits(bits) => {
            for chunk in bits.chunks(8) {
                let byte = chunk
                    .iter()
                    .enumerate()
                    .fold(0u8, |b, (i, &on)| b | (u8::from(on) << i));
                out.push(byte);
            }
        }
    }
    // At most 125 registers (250 bytes) or 2000 bits (250 bytes): fits a u8.
    out[1] = (out.len() - 2) as u8;
    out
}

/// Length of the normal response PDU to a read of `count` items with `function`.
pub fn read_response_len(function: u8, count: u16) -> usize {
    if function <= 2 {
        2 + usize::from(count).div_ceil(8)
    } else {
        2 + 2 * usize::from(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reads_and_writes() {
        assert_eq!(
            parse(&[3, 0, 1, 0, 10]),
            Request::Read {
                function: 3,
                table: Table::Holding,
                address: 1,
                count: 10
            }
        );
        assert_eq!(
            parse(&[6, 0, 1, 0, 10]),
            Request::Unsupported { function: 6 }
        );
        assert_eq!(
            parse(&[16, 0, 0, 0, 2, 4, 0, 1, 0, 2]),
            Request::Unsupported { function: 16 }
        );
        assert_eq!(
            parse(&[16, 0, 0, 0, 2, 3, 0, 1, 0]),
            Request::Malformed { function: 16 }
        );
        assert_eq!(parse(&[3, 0]), Request::Malformed { function: 3 });
        assert_eq!(
            parse(&[43, 14, 1, 0]),
            Request::Unsupported { function: 43 }
        );
    }

    #[test]
    fn packs_bits_lsb_first() {
        let r = read_response(
            1,
            &Data::Bits(vec![
                true, false, true, true, false, false, false, false, true,
            ]),
        );
        assert_eq!(r, vec![1, 2, 0b0000_1101, 0b1]);
        assert_eq!(read_response_len(1, 9), r.len());
        assert_eq!(read_response_len(3, 10), 22);
    }
}
