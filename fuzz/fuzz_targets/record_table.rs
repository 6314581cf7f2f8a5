#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lesion_search::fuzz_harness::record_table(data));
