//! Backend response bytes as the HTTP/1.1 client side reads them: never a
//! panic, and the same reading whole or in pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_http::fuzzing::h1_responses(data));
