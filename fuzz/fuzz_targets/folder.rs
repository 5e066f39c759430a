#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_data_fuzz::folder(data));
