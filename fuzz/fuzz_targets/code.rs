//! libFuzzer entry for [`convey_fuzz::code`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::code(data));
