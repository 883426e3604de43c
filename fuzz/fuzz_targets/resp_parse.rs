#![no_main]
//! See herald_fuzz::resp_parse.

libfuzzer_sys::fuzz_target!(|data: &[u8]| herald_fuzz::resp_parse(data));
