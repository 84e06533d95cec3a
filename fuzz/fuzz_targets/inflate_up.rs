#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fumegrid_common::fuzz::inflate_up(data));
