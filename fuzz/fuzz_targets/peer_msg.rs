//! libFuzzer entry for [`convey_fuzz::peer_msg`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::peer_msg(data));
