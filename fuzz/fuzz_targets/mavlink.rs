#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fumegrid_gateway::source::mavlink::fuzz::mavlink(data));
