//! libFuzzer entry for [`convey_fuzz::tracker_fast_path`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::tracker_fast_path(data));
