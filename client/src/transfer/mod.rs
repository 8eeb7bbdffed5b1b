//! The content path: build the ciphertext torrent, seal/open on the fly inside librqbit's
//! storage, and run librqbit sessions configured for private, tracker-only transfers.

pub mod bt;
pub mod prepare;
pub mod storage;
