#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lesion_web::fuzz_harness::search_json(data));
