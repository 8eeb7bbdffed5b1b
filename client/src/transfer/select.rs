//! The sender's side of a folder transfer: turn the paths on the command line into a
//! manifest (relative names, sizes, modes, folders) and the list of files to read, refusing
//! early and clearly what the receiver would refuse or what cannot be sent faithfully.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use convey_shared::manifest::{
    DirEntry, FileEntry, MAX_ENTRIES, MODE_MASK, Manifest, is_reserved_name, sanitize_relative_path,
};
use sha2::{Digest, Sha256};

use crate::{Error, error::Result};

/// What the sender is about to offer, before hashing.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Digests are filled in by the hashing pass.
    pub manifest: Manifest,
    /// Where each file of the manifest is read from.
    pub sources: Vec<PathBuf>,
    /// SHA-256 over each entry's name, size, mode and file-system identity (device, inode,
    /// modification and change times): the same files, unchanged, give the same value.
    pub fingerprint: [u8; 32],
}

/// Walk `paths` (files or folders, in the order given; folders sorted by name).
pub fn select(paths: &[PathBuf]) -> Result<Selection> {
    let mut sel = Walk::default();
    for path in paths {
        let top = top_level_name(path)?;
        if sel.top_names.contains(&top) {
            return Err(Error::Refused(format!(
                "two of the paths to send are both called {top:?}; rename one or send them separately"
            )));
        }
        sel.top_names.push(top.clone());
        // A link named on the command line is followed, like `cp -H`; links inside are not.
        let meta = std::fs::metadata(path).map_err(Error::io(format!("cannot send {}", path.display())))?;
        if meta.is_dir() {
            sel.walk_dir(path, &top)?;
        } else {
            sel.add(path, &top, &meta)?;
        }
    }
    let entries = sel.files.len() + sel.dirs.len();
    if entries > MAX_ENTRIES {
        return Err(Error::Refused(format!(
            "that is {entries} files and folders, more than the {MAX_ENTRIES} one transfer carries; send them as one stream instead: tar c FOLDER | convey send -"
        )));
    }
    let fingerprint = sel.fingerprint.finalize().into();
    Ok(Selection {
        manifest: Manifest {
            files: sel.files,
            dirs: sel.dirs,
        },
        sources: sel.sources,
        fingerprint,
    })
}

fn top_level_name(path: &Path) -> Result<String> {
    let named = match path.file_name() {
        Some(n) => Some(n.to_owned()),
        None => std::fs::canonicalize(path)
            .map_err(Error::io(format!("cannot send {}", path.display())))?
            .file_name()
            .map(ToOwned::to_owned),
    };
    let name =
        named.ok_or_else(|| Error::Refused(format!("cannot send {}: it has no name", path.display())))?;
    name.into_string().map_err(|n| {
        Error::Refused(format!(
            "cannot send {}: the name is not UTF-8",
            n.to_string_lossy()
        ))
    })
}

#[derive(Default)]
struct Walk {
    top_names: Vec<String>,
    files: Vec<FileEntry>,
    dirs: Vec<DirEntry>,
    sources: Vec<PathBuf>,
    fingerprint: Sha256,
}

impl Walk {
    fn walk_dir(&mut self, root: &Path, top: &str) -> Result<()> {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| {
                let path = e.path().map(|p| p.display().to_string()).unwrap_or_default();
                Error::Io {
                    context: format!("cannot read {path}"),
                    source: e.into(),
                }
            })?;
            let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
            let mut name = top.to_owned();
            for part in rel.components() {
                let part = part.as_os_str().to_str().ok_or_else(|| {
                    Error::Refused(format!(
                        "cannot send {}: the name is not UTF-8",
                        entry.path().display()
                    ))
                })?;
                name.push('/');
                name.push_str(part);
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(format!("cannot read {}", entry.path().display()))(e.into()))?;
            if meta.is_dir() {
                self.check_name(entry.path(), &name)?;
                self.dirs.push(DirEntry {
                    path: name,
                    mode: meta.permissions().mode() & MODE_MASK,
                });
            } else {
                self.add(entry.path(), &name, &meta)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, path: &Path, name: &str, meta: &std::fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(Error::Refused(format!(
                "{} is a symbolic link; convey does not send links. Send its target instead, or remove the link",
                path.display()
            )));
        }
        if !ft.is_file() {
            return Err(Error::Refused(format!(
                "{} is not a regular file or folder (a device, socket or pipe?); it cannot be sent",
                path.display()
            )));
        }
        self.check_name(path, name)?;
        let mode = meta.permissions().mode() & MODE_MASK;
        for v in [
            meta.len(),
            u64::from(mode),
            meta.dev(),
            meta.ino(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            self.fingerprint.update(v.to_le_bytes());
        }
        self.fingerprint.update(name.as_bytes());
        self.fingerprint.update([0]);
        self.files.push(FileEntry {
            path: name.to_owned(),
            size: meta.len(),
            sha256: String::new(),
            mode,
        });
        self.sources.push(path.to_owned());
        Ok(())
    }

    /// The receiver refuses names it cannot create safely; say so before hashing anything.
    fn check_name(&self, path: &Path, name: &str) -> Result<()> {
        let parts = sanitize_relative_path(name)
            .map_err(|e| Error::Refused(format!("cannot send {}: {}", path.display(), e.why)))?;
        if parts.first().is_some_and(|f| is_reserved_name(f)) {
            return Err(Error::Refused(format!(
                "cannot send {}: names like .convey-….partial are convey's staging folders (an unfinished transfer); finish or delete it first",
                path.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn walks_folders_in_order_and_refuses_links() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("tree");
        fs::create_dir_all(root.join("b/empty")).unwrap();
        fs::write(root.join("b/z.txt"), "zz").unwrap();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(d.path().join("single"), "").unwrap();
        let sel = select(&[root.clone(), d.path().join("single")]).unwrap();
        let names: Vec<_> = sel.manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["tree/a.txt", "tree/b/z.txt", "single"]);
        let dirs: Vec<_> = sel.manifest.dirs.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(dirs, ["tree", "tree/b", "tree/b/empty"]);
        assert_eq!(
            sel.fingerprint,
            select(&[root.clone(), d.path().join("single")])
                .unwrap()
                .fingerprint
        );

        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let err = select(std::slice::from_ref(&root)).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        fs::remove_file(root.join("link")).unwrap();
        assert!(
            select(&[root.clone(), root.join("b/../../tree")]).is_err(),
            "same name twice"
        );
    }
}
