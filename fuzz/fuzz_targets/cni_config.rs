#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| podswitch_cni::fuzz_config(data));
