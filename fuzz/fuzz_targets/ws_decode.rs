#![no_main]
//! See herald_fuzz::ws_decode.

libfuzzer_sys::fuzz_target!(|data: &[u8]| herald_fuzz::ws_decode(data));
