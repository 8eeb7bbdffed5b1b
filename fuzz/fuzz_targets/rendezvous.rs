//! libFuzzer entry for [`convey_fuzz::rendezvous`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convey_fuzz::rendezvous(data));
