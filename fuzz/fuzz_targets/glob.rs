#![no_main]
//! See herald_fuzz::glob.

libfuzzer_sys::fuzz_target!(|data: &[u8]| herald_fuzz::glob(data));
