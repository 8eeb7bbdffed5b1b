//! Where a receiver keeps a transfer until it is verified: a hidden staging folder under
//! `--out`, named after the info-hash so running the same transfer again finds it and
//! resumes. Only after every file's SHA-256 matched and the data is on disk is each file
//! moved into place with one atomic rename; nothing under its real name is ever partial.
//!
//! Inside the staging folder a file is named by its index in the offer, never by the name
//! the sender chose, so no two entries can share a staged path and no entry can reach into
//! the staging area (whatever the file system folds together: case, Unicode forms).

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use convey_shared::manifest::{CheckedManifest, MODE_MASK};
use sha2::{Digest, Sha256};

use super::files::FileSet;
use crate::{Error, error::Result};

/// Longest path the kernel takes in one call (`PATH_MAX`, less its terminating NUL).
const PATH_MAX: usize = 4095;

/// Paths of one transfer's staging folder and final destinations.
#[derive(Debug, Clone)]
pub struct Staging {
    pub root: PathBuf,
    out_dir: PathBuf,
    staged: Vec<PathBuf>,
    dests: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// The distinct first components of every entry, each once.
    tops: Vec<PathBuf>,
}

fn join(base: &Path, parts: &[String]) -> PathBuf {
    parts.iter().fold(base.to_owned(), |p, c| p.join(c))
}

impl Staging {
    pub fn new(out_dir: &Path, info_hash: &[u8; 20], content: &CheckedManifest) -> Self {
        let root = out_dir.join(format!(".convey-{}.partial", hex::encode(&info_hash[..10])));
        let mut seen = HashSet::new();
        let tops = content
            .dir_parts
            .iter()
            .chain(&content.file_parts)
            .filter_map(|p| p.first())
            .filter(|first| seen.insert(first.as_str()))
            .map(|first| out_dir.join(first))
            .collect();
        Self {
            staged: (0..content.file_parts.len())
                .map(|i| root.join(i.to_string()))
                .collect(),
            dests: content.file_parts.iter().map(|p| join(out_dir, p)).collect(),
            dirs: content.dir_parts.iter().map(|p| join(out_dir, p)).collect(),
            tops,
            root,
            out_dir: out_dir.to_owned(),
        }
    }

    /// Where each file of the offer ends up once installed, in manifest order.
    pub fn final_paths(&self) -> Vec<PathBuf> {
        self.dests.clone()
    }

    /// The top-level entries this transfer creates under `--out`, each once.
    pub fn tops(&self) -> &[PathBuf] {
        &self.tops
    }

    /// Is there an earlier attempt to resume?
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Refuse to replace existing files unless `overwrite`; never replace a folder by a file;
    /// refuse paths longer than the system takes, before anyone is asked.
    pub fn check_destinations(&self, overwrite: bool) -> Result<()> {
        let base = std::path::absolute(&self.out_dir)
            .map_err(Error::io(format!("resolving {}", self.out_dir.display())))?;
        let base_len = base.as_os_str().len();
        for dest in self.dests.iter().chain(&self.dirs) {
            let len = base_len + dest.as_os_str().len() - self.out_dir.as_os_str().len();
            if len > PATH_MAX {
                return Err(Error::Refused(format!(
                    "the offer names a path too long for this system ({len} bytes under {}, at most {PATH_MAX}): {}; nothing was written",
                    base.display(),
                    dest.display()
                )));
            }
        }
        for dest in &self.dests {
            match dest.symlink_metadata() {
                Ok(m) if m.is_dir() => {
                    return Err(Error::Refused(format!(
                        "{} is a folder, and the sender offers a file of that name; use --out to choose another folder",
                        dest.display()
                    )));
                }
                Ok(_) if !overwrite => {
                    return Err(Error::Refused(format!(
                        "{} already exists; use --overwrite to replace it or --out to choose another folder",
                        dest.display()
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Fail unless the output folder's file system has room for `bytes`.
    pub fn check_space(&self, bytes: u64) -> Result<()> {
        let mut probe = self.out_dir.as_path();
        while !probe.exists() {
            probe = probe
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
        }
        let st = rustix::fs::statvfs(probe).map_err(|e| Error::Io {
            context: format!("checking free space in {}", probe.display()),
            source: e.into(),
        })?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < bytes {
            return Err(Error::Refused(format!(
                "not enough free space in {}: the offer needs {bytes} bytes, {free} are free; free some space or use --out",
                probe.display()
            )));
        }
        Ok(())
    }

    /// Create (or reopen, when resuming) the staging folder, even for an offer of folders
    /// only, and the staging files at their sizes. Refuses an offer one of whose entries is
    /// the staging folder itself on this file system (a name it folds into ours).
    pub fn create(&self, content: &CheckedManifest) -> Result<FileSet> {
        std::fs::create_dir_all(&self.root)
            .map_err(Error::io(format!("creating {}", self.root.display())))?;
        let root =
            std::fs::metadata(&self.root).map_err(Error::io(format!("reading {}", self.root.display())))?;
        for top in &self.tops {
            if let Ok(m) = top.symlink_metadata()
                && (m.dev(), m.ino()) == (root.dev(), root.ino())
            {
                return Err(Error::Refused(format!(
                    "the offer names {}, which is convey's staging folder on this file system; refusing the offer",
                    top.display()
                )));
            }
        }
        for (path, entry) in self.staged.iter().zip(&content.manifest.files) {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(Error::io(format!("creating {}", path.display())))?;
            f.set_len(entry.size)
                .map_err(Error::io(format!("making room for {}", path.display())))?;
        }
        Ok(FileSet::new(self.staged.clone(), content.layout.clone(), true))
    }

    /// Check every file against the manifest's SHA-256 and flush it all to disk. Returns the
    /// name of the first file that does not match. `hashed` holds the files' digests when
    /// the writer computed them as the data arrived; otherwise (a resumed transfer) the
    /// files are read back and hashed here.
    pub fn verify(&self, content: &CheckedManifest, hashed: Option<&[[u8; 32]]>) -> Result<Option<String>> {
        let mut buf = Vec::new();
        for (i, (path, entry)) in self.staged.iter().zip(&content.manifest.files).enumerate() {
            let digest = match hashed.and_then(|h| h.get(i)) {
                Some(d) => *d,
                None => {
                    buf.resize(1 << 20, 0);
                    hash_file(path, &mut buf)?
                }
            };
            if hex::encode(digest) != entry.sha256.to_ascii_lowercase() {
                return Ok(Some(entry.path.clone()));
            }
        }
        // One flush of the whole file system instead of an fsync per file.
        let root = File::open(&self.root).map_err(Error::io(format!("opening {}", self.root.display())))?;
        rustix::fs::syncfs(&root).map_err(|e| Error::Io {
            context: format!("flushing {}", self.root.display()),
            source: e.into(),
        })?;
        Ok(None)
    }

    /// Move every verified file into place (one rename each), create the folders, apply the
    /// sender's permission bits as this process's umask allows (as `cp` without `-p` does),
    /// and remove the staging folder. A destination that appeared since the check, or that
    /// another entry of this offer already took (a file system that folds case or Unicode
    /// forms makes `A` and `a` one name), is never replaced.
    pub fn install(&self, content: &CheckedManifest, overwrite: bool) -> Result<()> {
        let allowed = MODE_MASK & !process_umask();
        let mut installed = HashSet::new();
        for ((staged, dest), entry) in self.staged.iter().zip(&self.dests).zip(&content.manifest.files) {
            std::fs::set_permissions(staged, std::fs::Permissions::from_mode(entry.mode & allowed))
                .map_err(Error::io(format!("setting the mode of {}", staged.display())))?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(Error::io(format!("creating {}", parent.display())))?;
            }
            let existing = dest.symlink_metadata().ok();
            if let Some(m) = &existing {
                if installed.contains(&(m.dev(), m.ino())) {
                    return Err(Error::Refused(format!(
                        "two entries of the offer are the same file on this file system (it folds case or Unicode forms): {}; the rest is kept in {}",
                        dest.display(),
                        self.root.display()
                    )));
                }
                if !overwrite {
                    return Err(Error::Refused(format!(
                        "{} appeared while receiving; use --overwrite to replace it; the rest is kept in {}",
                        dest.display(),
                        self.root.display()
                    )));
                }
            }
            let moved = if existing.is_some() {
                std::fs::rename(staged, dest)
            } else {
                rename_noreplace(staged, dest)
            };
            moved.map_err(Error::io(format!("moving {} into place", dest.display())))?;
            if let Ok(m) = dest.symlink_metadata() {
                installed.insert((m.dev(), m.ino()));
            }
        }
        for dir in &self.dirs {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        // Deepest first, so a read-only folder is closed only after its contents arrived.
        let mut dirs: Vec<_> = self.dirs.iter().zip(&content.manifest.dirs).collect();
        dirs.sort_by_key(|(d, _)| std::cmp::Reverse(d.components().count()));
        for (dir, entry) in dirs {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(entry.mode & allowed))
                .map_err(Error::io(format!("setting the mode of {}", dir.display())))?;
        }
        self.discard();
        Ok(())
    }

    /// Remove the staging folder and whatever is left in it.
    pub fn discard(&self) {
        if let Err(err) = std::fs::remove_dir_all(&self.root)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%err, path = %self.root.display(), "could not remove the staging folder");
        }
    }
}

/// Rename `from` to `to` only if `to` does not exist (atomically where the file system
/// supports it; where it does not, after a check).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// This process's umask, read without changing it (`umask(2)` can only set it, which would
/// race with other threads creating files). Linux reports it in `/proc/self/status`.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// SHA-256 of the file at `path`, read through `buf`.
fn hash_file(path: &Path, buf: &mut [u8]) -> Result<[u8; 32]> {
    let mut f = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    loop {
        let n = f
            .read(buf)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use convey_shared::manifest::{FileEntry, Manifest};

    use super::*;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            mode: 0o644,
        }
    }

    /// The digests the writer computed, or a read-back when it has none, must match the
    /// sender's manifest; the first file that does not is named.
    #[test]
    fn verify_names_the_file_whose_digest_does_not_match() {
        let out = tempfile::tempdir().unwrap();
        let manifest = Manifest {
            files: vec![entry("a", b"alpha"), entry("b", b"beta")],
            dirs: vec![],
        };
        let content = manifest.check().unwrap();
        let staging = Staging::new(out.path(), &[1; 20], &content);
        staging.create(&content).unwrap();
        std::fs::write(&staging.staged[0], b"alpha").unwrap();
        std::fs::write(&staging.staged[1], b"beta").unwrap();
        let good: Vec<[u8; 32]> = [b"alpha".as_slice(), b"beta"]
            .iter()
            .map(|d| Sha256::digest(d).into())
            .collect();
        assert_eq!(staging.verify(&content, Some(&good)).unwrap(), None);
        assert_eq!(staging.verify(&content, None).unwrap(), None, "read back");
        let mut bad = good.clone();
        bad[1][0] ^= 1;
        assert_eq!(staging.verify(&content, Some(&bad)).unwrap(), Some("b".into()));
        std::fs::write(&staging.staged[0], b"alphA").unwrap();
        assert_eq!(staging.verify(&content, None).unwrap(), Some("a".into()));
    }
}
