//! libFuzzer entry for [`convey_fuzz::stream_frames`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::stream_frames(data));
