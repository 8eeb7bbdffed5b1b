//! libFuzzer entry for [`convey_fuzz::torrent`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::torrent(data));
