//! The content key, reproducible so an interrupted transfer can resume: derived from a
//! random secret kept on the sender's machine and the fingerprint of the files (names,
//! sizes, modes, inode, modification and change times). The same files, unchanged, sent
//! again by the same sender give the same key and hence the same torrent; the receiver then
//! finds the pieces it already has. A changed file changes its change time, so the same key
//! never encrypts different content. Without the secret nobody can tell two transfers of the
//! same files apart, or test a guess of the content against an info-hash.

use std::{
    fs::OpenOptions,
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::PathBuf,
};

use convey_shared::content::ContentKey;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Where the sender's secret lives: `$CONVEY_STATE_DIR`, else the XDG state folder
/// (`~/.local/state/convey`).
pub fn state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CONVEY_STATE_DIR") {
        return Some(dir.into());
    }
    let dirs = directories::ProjectDirs::from("", "", "convey")?;
    Some(dirs.state_dir().unwrap_or(dirs.data_local_dir()).to_owned())
}

/// Read the sender's secret, creating it (mode 0600) on first use.
fn secret() -> std::io::Result<Zeroizing<[u8; 32]>> {
    let dir = state_dir().ok_or_else(|| std::io::Error::other("no home folder"))?;
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("content-secret");
    let mut secret = Zeroizing::new([0u8; 32]);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            rand::rngs::OsRng.fill_bytes(secret.as_mut_slice());
            f.write_all(secret.as_slice())?;
            f.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::File::open(&path)?.read_exact(secret.as_mut_slice())?;
        }
        Err(e) => return Err(e),
    }
    Ok(secret)
}

/// The key for content with this fingerprint; a fresh random key (no resume) when the
/// secret cannot be stored.
pub fn content_key(fingerprint: &[u8; 32]) -> ContentKey {
    match secret() {
        Ok(secret) => {
            let mut key = [0u8; 32];
            Hkdf::<Sha256>::new(Some(b"convey-v1/content-key"), secret.as_slice())
                .expand(fingerprint, &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            ContentKey::from_bytes(key)
        }
        Err(err) => {
            tracing::debug!(%err, "no state folder for the content secret; this transfer cannot be resumed");
            ContentKey::generate()
        }
    }
}
