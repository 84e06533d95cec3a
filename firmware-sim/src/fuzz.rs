//! Fuzz target of the simulator's Modbus parsing: RTU framing and request PDUs, answered from
//! a register image as the simulated monitors answer a real gateway.

use std::sync::OnceLock;

use fumegrid_common::diag::Source;
use fumegrid_common::profile::Profile;

use crate::regmap::RegisterImage;
use crate::{pdu, rtu};

fn image() -> &'static RegisterImage {
    static I: OnceLock<RegisterImage> = OnceLock::new();
    I.get_or_init(|| {
        let text = include_str!("../../device-profiles/generic-f32-input.toml");
        let p = Profile::from_source(&Source::new("generic-f32-input.toml", text))
            .expect("a shipped profile is valid");
        RegisterImage::build(&p, &[])
    })
}

/// An RTU request frame (slave, PDU, CRC) or a bare PDU (TCP after the MBAP header).
pub fn modbus_frame(data: &[u8]) {
    if let rtu::FrameStatus::Complete(len) = rtu::frame_status(data) {
        assert!(len <= data.len());
        let pdu = data.get(1..len - 2).unwrap_or(&[]);
        let reply = pdu::respond(image(), pdu);
        assert!(
            !reply.is_empty() && reply.len() <= 253,
            "a PDU fits a frame"
        );
    }
    let reply = pdu::respond(image(), data);
    assert!(!reply.is_empty());
}

#[cfg(test)]
mod tests {
    use fumegrid_common::fuzz::{config, seeded, seeds};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_pass() {
        for s in seeds("modbus_frame") {
            modbus_frame(&s);
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn modbus_frame_bounded(d in seeded("modbus_frame")) { modbus_frame(&d) }
    }
}
