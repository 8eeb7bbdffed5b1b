//! libFuzzer entry for [`convey_fuzz::manifest`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::manifest(data));
