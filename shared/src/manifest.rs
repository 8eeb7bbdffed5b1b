//! What is offered: names, sizes, modes and digests. Names arrive from the network, so every
//! path is checked here before anything touches the disk.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Longest accepted file name component, in bytes (common filesystem limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest accepted path.
pub const MAX_DEPTH: usize = 64;
/// Most files and folders in one offer.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Permission bits a receiver applies (no set-uid, set-gid or sticky bits).
pub const MODE_MASK: u32 = 0o777;

fn default_file_mode() -> u32 {
    0o644
}

fn default_dir_mode() -> u32 {
    0o755
}

/// One file of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators; check with [`sanitize_relative_path`] before use.
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Unix permission bits; only [`MODE_MASK`] is applied.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

/// A folder of an offer, listed so empty folders and folder modes arrive too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub path: String,
    #[serde(default = "default_dir_mode")]
    pub mode: u32,
}

/// The real description of the content, sent only inside the sealed channel. The content
/// stream is the files' bytes concatenated in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub dirs: Vec<DirEntry>,
}

/// A manifest whose every path was checked: safe to create under an output folder.
#[derive(Debug, Clone)]
pub struct CheckedManifest {
    pub manifest: Manifest,
    /// Safe components of each file's path, in manifest order.
    pub file_parts: Vec<Vec<String>>,
    /// Safe components of each folder's path.
    pub dir_parts: Vec<Vec<String>>,
    pub layout: Layout,
}

/// Why a manifest from the peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
    #[error("the offer lists {0} entries, more than the {MAX_ENTRIES} accepted")]
    TooMany(usize),
    #[error("the offer lists {0:?} twice, or as both a file and a folder")]
    Duplicate(String),
    #[error("the offer's SHA-256 for {0:?} is malformed")]
    BadDigest(String),
    #[error("the offer's sizes add up to more than any disk holds")]
    TooLarge,
    #[error("the offer is empty")]
    Empty,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Check every path, digest and size from the peer. Files may not sit below another
    /// file, nor share a path with each other or with a folder.
    pub fn check(self) -> Result<CheckedManifest, ManifestError> {
        let count = self.files.len() + self.dirs.len();
        if count > MAX_ENTRIES {
            return Err(ManifestError::TooMany(count));
        }
        if count == 0 {
            return Err(ManifestError::Empty);
        }
        let file_parts = self
            .files
            .iter()
            .map(|f| sanitize_relative_path(&f.path))
            .collect::<Result<Vec<_>, _>>()?;
        let dir_parts = self
            .dirs
            .iter()
            .map(|d| sanitize_relative_path(&d.path))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(f) = self
            .files
            .iter()
            .find(|f| f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ManifestError::BadDigest(f.path.escape_debug().to_string()));
        }
        let mut files = HashSet::new();
        for p in &file_parts {
            if !files.insert(p.as_slice()) {
                return Err(ManifestError::Duplicate(p.join("/").escape_debug().to_string()));
            }
        }
        let mut dirs = HashSet::new();
        for p in &dir_parts {
            if files.contains(p.as_slice()) || !dirs.insert(p.as_slice()) {
                return Err(ManifestError::Duplicate(p.join("/").escape_debug().to_string()));
            }
        }
        // A file cannot also be the folder of another entry.
        for p in file_parts.iter().chain(&dir_parts) {
            if let Some(i) = (1..p.len()).find(|&i| files.contains(&p[..i])) {
                return Err(ManifestError::Duplicate(
                    p[..i].join("/").escape_debug().to_string(),
                ));
            }
        }
        let layout = Layout::new(self.files.iter().map(|f| f.size)).ok_or(ManifestError::TooLarge)?;
        Ok(CheckedManifest {
            manifest: self,
            file_parts,
            dir_parts,
            layout,
        })
    }
}

/// A path from the peer that must not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing unsafe file name {name:?} from the sender: {why}")]
pub struct UnsafePath {
    pub name: String,
    pub why: &'static str,
}

/// Split a peer-supplied relative path into components that are safe to join under an
/// output folder: no absolute paths, no `.`/`..`, no separators or control characters
/// inside a component, no Windows drive or reserved tricks, bounded length and depth.
pub fn sanitize_relative_path(name: &str) -> Result<Vec<String>, UnsafePath> {
    let bad = |why| UnsafePath {
        name: name.escape_debug().to_string(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.starts_with('/') {
        return Err(bad("absolute path"));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(bad("too deeply nested"));
    }
    parts
        .into_iter()
        .map(|p| {
            if p.is_empty() || p == "." || p == ".." {
                return Err(bad("empty, '.' or '..' path component"));
            }
            if p.len() > MAX_COMPONENT_BYTES {
                return Err(bad("path component too long"));
            }
            if p.chars().any(|c| c.is_control() || c == '\\' || c == ':') {
                return Err(bad("control character, backslash or colon in name"));
            }
            Ok(p.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 1,
            sha256: "ab".repeat(32),
            mode: 0o644,
        }
    }

    #[test]
    fn checks_whole_manifests() {
        let ok = Manifest {
            files: vec![file("a/b"), file("a/c"), file("d")],
            dirs: vec![DirEntry {
                path: "a/empty".into(),
                mode: 0o700,
            }],
        };
        let c = ok.check().unwrap();
        assert_eq!(c.layout.total(), 3);
        assert_eq!(c.file_parts[0], vec!["a", "b"]);

        let dup = Manifest {
            files: vec![file("x"), file("x")],
            dirs: vec![],
        };
        assert!(matches!(dup.check(), Err(ManifestError::Duplicate(_))));
        let below_file = Manifest {
            files: vec![file("x"), file("x/y")],
            dirs: vec![],
        };
        assert!(matches!(below_file.check(), Err(ManifestError::Duplicate(_))));
        let file_and_dir = Manifest {
            files: vec![file("x")],
            dirs: vec![DirEntry {
                path: "x".into(),
                mode: 0o755,
            }],
        };
        assert!(file_and_dir.check().is_err());
        let mut bad = file("z");
        bad.sha256 = "zz".into();
        assert!(matches!(
            Manifest {
                files: vec![bad],
                dirs: vec![]
            }
            .check(),
            Err(ManifestError::BadDigest(_))
        ));
        let mut huge = vec![file("p"), file("q")];
        huge[0].size = u64::MAX;
        assert_eq!(
            Manifest {
                files: huge,
                dirs: vec![]
            }
            .check()
            .err(),
            Some(ManifestError::TooLarge)
        );
        assert!(
            Manifest {
                files: vec![file("../evil")],
                dirs: vec![]
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn accepts_ordinary_names() {
        assert_eq!(sanitize_relative_path("a/b.txt").unwrap(), vec!["a", "b.txt"]);
        assert_eq!(
            sanitize_relative_path("résumé ✓.pdf").unwrap(),
            vec!["résumé ✓.pdf"]
        );
    }

    #[test]
    fn refuses_hostile_names() {
        for name in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            ".",
            "a/./b",
            "C:\\x",
            "a\\..\\b",
            "evil\u{1b}[2Jname",
            "nul\0byte",
            "x/",
            &"a".repeat(300),
        ] {
            assert!(sanitize_relative_path(name).is_err(), "{name:?} must be refused");
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(sanitize_relative_path(&deep).is_err());
    }
}
