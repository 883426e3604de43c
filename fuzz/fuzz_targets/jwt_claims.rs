#![no_main]
//! See herald_fuzz::jwt_claims.

libfuzzer_sys::fuzz_target!(|data: &[u8]| herald_fuzz::jwt_claims(data));
