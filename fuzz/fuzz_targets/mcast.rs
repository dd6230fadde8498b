#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchd::fuzzing::mcast(data));
