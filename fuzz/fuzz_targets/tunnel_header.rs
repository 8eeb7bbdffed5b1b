//! libFuzzer entry for [`convey_fuzz::tunnel_header`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::tunnel_header(data));
