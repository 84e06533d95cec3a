//! Fuzz target of the gateway's own parser of outside input: its config file. (Device
//! profiles and wire payloads are fuzzed in `fumegrid_common::fuzz`, Modbus frames in
//! `fumegrid_sim::fuzz`; replies from devices are parsed by tokio-modbus, then decoded by the
//! profile's points, which `fumegrid_common::fuzz::profile` covers. What cameras send is fuzzed
//! in `source::camera::fuzz`.)

use fumegrid_common::diag::Source;

use crate::config::GatewayConfig;

/// A gateway config (TOML). Files it names are looked up under a directory that does not exist.
pub fn gateway_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = GatewayConfig::from_source(&Source::new("/nonexistent/fuzz.toml", text));
    let _ = fumegrid_common::keys::parse_key(&String::from_utf8_lossy(data));
}

#[cfg(test)]
mod tests {
    use fumegrid_common::fuzz::{config, seeded, seeds};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_pass() {
        for s in seeds("gateway_config") {
            gateway_config(&s);
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn gateway_config_bounded(d in seeded("gateway_config")) { gateway_config(&d) }
    }
}
