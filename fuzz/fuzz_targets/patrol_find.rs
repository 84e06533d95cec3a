#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fumegrid_aggregator::fuzz::patrol_find(data));
