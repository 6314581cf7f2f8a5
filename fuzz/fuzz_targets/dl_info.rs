#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lesion_search::fuzz_harness::dl_info(data));
