//! libFuzzer entry for [`convey_fuzz::tracker_query`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::tracker_query(data));
