//! The content path: choose and read what is sent, build the ciphertext torrent, seal/open
//! on the fly inside librqbit's storage, stage and install what is received, and run librqbit
//! sessions configured for private, tracker-only transfers (or a plain stream for pipes).

pub mod bt;
pub mod codec;
pub mod content_key;
pub mod files;
pub mod prepare;
pub mod push_recv;
pub mod push_send;
pub mod select;
pub mod staging;
pub mod storage;
pub mod stream;
pub mod writer;
