//! libFuzzer entry for [`convey_fuzz::push_items`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::push_items(data));
