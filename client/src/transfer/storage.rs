//! librqbit storage backends that hold plaintext on disk and speak ciphertext to BitTorrent.
//!
//! * [`SealingStorage`] (sender): every read encrypts the requested chunks from the original
//!   files, so no encrypted copy is ever written.
//! * [`OpeningStorage`] (receiver): every 16 KiB block written is one ciphertext chunk; it is
//!   handed to the [`Writer`] thread, which authenticates and decrypts it into the staging
//!   files. Reads (for librqbit's piece hash check) return the kept ciphertext, or
//!   re-encrypt what is on disk, which is deterministic, so piece hashes still verify; that
//!   is also how a resumed transfer finds the pieces it already has.
//!
//! Compressed (packed) frames are re-packed from the plaintext on a read, once per frame
//! while its chunks are asked for one after another ([`FrameCache`]).

use std::{io::IoSlice, path::Path, sync::Arc};

use bytes::Bytes;

use anyhow::{Context, bail, ensure};
use convey_shared::{
    chunk_map::{ChunkMap, Place},
    content::{CIPHER_CHUNK, ContentCipher, TAG_LEN},
};
use librqbit::{
    ManagedTorrentShared, TorrentMetadata,
    storage::{BoxStorageFactory, StorageFactory, StorageFactoryExt, TorrentStorage},
};

use super::{
    codec::FrameCache,
    files::FileSet,
    writer::{ChunkSet, Writer},
};

const CHUNK: usize = CIPHER_CHUNK as usize;

/// Read ciphertext bytes `[offset, offset + buf.len())`, producing each chunk with `chunk`.
fn read_cipher(
    cipher: &ContentCipher,
    offset: u64,
    buf: &mut [u8],
    mut chunk: impl FnMut(u64, &mut [u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut pos = offset;
    let mut out = buf;
    let mut scratch = [0u8; CHUNK];
    while !out.is_empty() {
        let i = pos / CIPHER_CHUNK;
        ensure!(i < cipher.chunk_count(), "read past the end of the ciphertext");
        let ct_len = usize::try_from(cipher.plain_chunk_len(i) + TAG_LEN)?;
        let within = usize::try_from(pos % CIPHER_CHUNK)?;
        ensure!(within < ct_len, "read past the end of the ciphertext");
        chunk(i, &mut scratch[..ct_len])?;
        let n = (ct_len - within).min(out.len());
        out[..n].copy_from_slice(&scratch[within..within + n]);
        out = &mut out[n..];
        pos += n as u64;
    }
    Ok(())
}

/// Fill `buf` (sealed length + tag room) with the sealed chunk `i`, re-created from the
/// plaintext in `files`: a raw chunk from its bytes, a packed one from its frame re-packed
/// (once per frame, through `frames`).
fn seal_from_files(
    files: &FileSet,
    cipher: &ContentCipher,
    frames: &FrameCache,
    i: u64,
    buf: &mut [u8],
) -> anyhow::Result<()> {
    let n = buf.len() - TAG_LEN as usize;
    match cipher.map().place(i) {
        Place::Raw { offset, .. } => files
            .read_exact_at(offset, &mut buf[..n])
            .context("reading the plaintext")?,
        Place::Packed { frame, part, .. } => {
            let packed = frames.packed(files, cipher.map(), frame)?;
            let slice = packed
                .get(ChunkMap::part_range(part))
                .ok_or_else(|| anyhow::anyhow!("frame {frame} is shorter than its chunks"))?;
            buf[..n].copy_from_slice(slice);
        }
    }
    cipher.seal_chunk(i, buf);
    Ok(())
}

// ---------------------------------------------------------------- sender

/// Seeds existing plaintext files as ciphertext.
#[derive(Debug, Clone)]
pub struct SealingStorageFactory {
    storage: SealingStorage,
}

impl SealingStorageFactory {
    pub fn new(files: Arc<FileSet>, cipher: ContentCipher) -> Self {
        Self {
            storage: SealingStorage {
                files,
                cipher,
                frames: Arc::default(),
            },
        }
    }

    pub fn boxed_factory(self) -> BoxStorageFactory {
        self.boxed()
    }
}

#[derive(Debug, Clone)]
pub struct SealingStorage {
    files: Arc<FileSet>,
    cipher: ContentCipher,
    frames: Arc<FrameCache>,
}

impl StorageFactory for SealingStorageFactory {
    type Storage = SealingStorage;

    fn create(&self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<SealingStorage> {
        Ok(self.storage.clone())
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

impl TorrentStorage for SealingStorage {
    fn init(&mut self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<()> {
        Ok(())
    }

    fn pread_exact(&self, _file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        read_cipher(&self.cipher, offset, buf, |i, chunk| {
            seal_from_files(&self.files, &self.cipher, &self.frames, i, chunk)
        })
    }

    fn pwrite_all(&self, _: usize, _: u64, _: &[u8]) -> anyhow::Result<()> {
        bail!("the sender's storage is read-only")
    }

    fn remove_file(&self, _: usize, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_directory_if_empty(&self, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, _: usize, _: u64) -> anyhow::Result<()> {
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(self.clone()))
    }
}

// ---------------------------------------------------------------- receiver

/// Receives ciphertext into plaintext staging files, through the [`Writer`].
#[derive(Debug, Clone)]
pub struct OpeningStorageFactory {
    storage: OpeningStorage,
}

#[derive(Debug, Clone)]
pub struct OpeningStorage {
    files: Arc<FileSet>,
    cipher: ContentCipher,
    written: Arc<ChunkSet>,
    writer: Arc<Writer>,
    /// Ciphertext of chunks received but not yet on disk, so librqbit's piece check and a
    /// co-receiver's request right after it need neither the writer nor re-encryption. The
    /// writer drops each chunk once it is written (see [`ChunkSet::kept`]). Bounded; past
    /// the bound a read waits for the writer.
    unchecked: Arc<ChunkSet>,
    /// This build re-creates the sender's packed frames byte for byte (same codec).
    repacks: bool,
}

/// Most chunks kept in [`OpeningStorage::unchecked`] (32 MiB).
const MAX_UNCHECKED: usize = 2048;

impl OpeningStorageFactory {
    /// Write into `files` (already created at their sizes) through `writer`, which marks
    /// `written`. With `resume`, `written` starts full: the files may hold chunks from an
    /// earlier attempt, which librqbit's initial check then finds.
    pub fn new(
        files: Arc<FileSet>,
        cipher: ContentCipher,
        written: Arc<ChunkSet>,
        writer: Arc<Writer>,
        repacks: bool,
    ) -> Self {
        Self {
            storage: OpeningStorage {
                files,
                cipher,
                unchecked: written.clone(),
                written,
                writer,
                repacks,
            },
        }
    }

    pub fn boxed_factory(self) -> BoxStorageFactory {
        self.boxed()
    }
}

impl StorageFactory for OpeningStorageFactory {
    type Storage = OpeningStorage;

    fn create(&self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<OpeningStorage> {
        Ok(self.storage.clone())
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

/// Longest a read waits for the writer to put a queued chunk on disk.
const WRITER_LAG: std::time::Duration = std::time::Duration::from_secs(2);

impl OpeningStorage {
    /// Sealed chunk `i` from disk. A chunk librqbit wrote and checked may still sit in the
    /// writer's queue (a piece served to a co-receiver right after its check): wait for it,
    /// briefly, rather than answer zeros. A part of a packed frame that is not complete yet
    /// is on disk as it arrived, in its frame's place (see [`ChunkSet::read_staged`]).
    fn seal_from_disk(&self, i: u64, chunk: &mut [u8]) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        let n = chunk.len() - TAG_LEN as usize;
        loop {
            if self
                .written
                .read_staged(i, &self.files, self.cipher.map(), &mut chunk[..n])?
            {
                self.cipher.seal_chunk(i, chunk);
                return Ok(());
            }
            if self.written.get(i) {
                if !self.repacks && matches!(self.cipher.map().place(i), Place::Packed { .. }) {
                    bail!("this build cannot re-create the sender's compressed frames");
                }
                return seal_from_files(&self.files, &self.cipher, &self.written.frames, i, chunk);
            }
            if !self.written.queued(i) || start.elapsed() > WRITER_LAG {
                chunk.fill(0); // never matches a piece hash
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn write_cipher(&self, offset: u64, data: &[u8]) -> anyhow::Result<()> {
        ensure!(
            offset.is_multiple_of(CIPHER_CHUNK),
            "unaligned block write at {offset}"
        );
        let i = offset / CIPHER_CHUNK;
        ensure!(i < self.cipher.chunk_count(), "block write past the end");
        let ct_len = usize::try_from(self.cipher.plain_chunk_len(i) + TAG_LEN)?;
        ensure!(
            data.len() == ct_len,
            "block of {} bytes where chunk {i} has {ct_len}",
            data.len()
        );
        let ciphertext = Bytes::copy_from_slice(data);
        self.written.mark_queued(i);
        {
            self.unchecked.keep(i, &ciphertext, MAX_UNCHECKED);
        }
        self.writer.queue(i, ciphertext)
    }
}

impl TorrentStorage for OpeningStorage {
    fn init(&mut self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<()> {
        Ok(())
    }

    fn pread_exact(&self, _file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        // Before anything arrived, say so: librqbit's initial check then skips the file.
        ensure!(self.written.any(), "nothing received yet");
        read_cipher(&self.cipher, offset, buf, |i, chunk| {
            let kept = self.unchecked.kept(i);
            if let Some(ct) = kept.filter(|ct| ct.len() == chunk.len()) {
                chunk.copy_from_slice(&ct);
                Ok(())
            } else {
                self.seal_from_disk(i, chunk)
            }
        })
    }

    fn pwrite_all(&self, _file_id: usize, offset: u64, buf: &[u8]) -> anyhow::Result<()> {
        self.write_cipher(offset, buf)
    }

    fn pwrite_all_vectored(
        &self,
        _file_id: usize,
        offset: u64,
        bufs: [IoSlice<'_>; 2],
    ) -> anyhow::Result<usize> {
        let total = bufs[0].len() + bufs[1].len();
        if bufs[1].is_empty() {
            self.write_cipher(offset, &bufs[0])?;
        } else {
            ensure!(total <= CHUNK, "block larger than a chunk");
            let mut joined = [0u8; CHUNK];
            joined[..bufs[0].len()].copy_from_slice(&bufs[0]);
            joined[bufs[0].len()..total].copy_from_slice(&bufs[1]);
            self.write_cipher(offset, &joined[..total])?;
        }
        Ok(total)
    }

    fn remove_file(&self, _: usize, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_directory_if_empty(&self, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, _: usize, _: u64) -> anyhow::Result<()> {
        // The staging files are sized to the plaintext, not the ciphertext librqbit sees.
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(self.clone()))
    }
}
