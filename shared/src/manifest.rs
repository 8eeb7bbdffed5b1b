//! What is offered: names, sizes, modes and digests. Names arrive from the network, so every
//! path is checked here before anything touches the disk.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Longest accepted file name component, in bytes (common filesystem limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest accepted path.
pub const MAX_DEPTH: usize = 64;
/// Longest accepted relative path, in bytes: with the receiver's `--out` in front it must
/// stay within the kernel's 4096-byte `PATH_MAX`, which the receiver checks too.
pub const MAX_PATH_BYTES: usize = 3072;
/// Most files and folders in one offer. Both sides enforce it: the sender before hashing,
/// the receiver before asking. At this count an offer of ordinary names still fits in one
/// rendezvous message ([`crate::protocol::MAX_MESSAGE_BYTES`]); more files go as a stream
/// (`tar c DIR | convey send -`).
pub const MAX_ENTRIES: usize = 20_000;
/// Largest total size accepted (64 PiB): far beyond any disk, and small enough that the
/// ciphertext length (plaintext plus a tag per chunk) can never overflow.
pub const MAX_TOTAL_BYTES: u64 = 1 << 56;
/// Prefix and suffix of the receiver's staging folders; no entry may be called that.
const STAGING_PREFIX: &str = ".convey-";
const STAGING_SUFFIX: &str = ".partial";

/// Is `first` (a top-level name) reserved for a receiver's staging folder? Compared without
/// regard to case, as a case-folding file system would.
pub fn is_reserved_name(first: &str) -> bool {
    let lower = first.to_lowercase();
    lower.starts_with(STAGING_PREFIX) && lower.ends_with(STAGING_SUFFIX)
}
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    #[error("the offer names {0:?}, a name reserved for convey's staging folders")]
    Reserved(String),
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
        if let Some(p) = file_parts
            .iter()
            .chain(&dir_parts)
            .find(|p| p.first().is_some_and(|f| is_reserved_name(f)))
        {
            return Err(ManifestError::Reserved(p[0].escape_debug().to_string()));
        }
        let layout = Layout::new(self.files.iter().map(|f| f.size))
            .filter(|l| l.total() <= MAX_TOTAL_BYTES)
            .ok_or(ManifestError::TooLarge)?;
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
    if name.len() > MAX_PATH_BYTES {
        return Err(bad("path too long"));
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

    /// Names that would address a receiver's staging folder, in any case, and totals whose
    /// ciphertext length would overflow are refused; so is a path too long for `PATH_MAX`.
    #[test]
    fn refuses_staging_names_huge_totals_and_long_paths() {
        for name in [
            ".convey-0011223344556677889a.partial/x",
            ".CONVEY-ab.PARTIAL",
            ".Convey-.Partial/y/z",
        ] {
            let m = Manifest {
                files: vec![file(name)],
                dirs: vec![],
            };
            assert!(matches!(m.check(), Err(ManifestError::Reserved(_))), "{name}");
        }
        assert!(
            Manifest {
                files: vec![file("a/.convey-x.partial")],
                dirs: vec![]
            }
            .check()
            .is_ok()
        );
        let mut big = vec![file("a"), file("b")];
        big[0].size = 16368 * ((1 << 50) + 1);
        assert_eq!(
            Manifest {
                files: big,
                dirs: vec![]
            }
            .check()
            .err(),
            Some(ManifestError::TooLarge)
        );
        let long = vec!["c".repeat(200); 50].join("/");
        assert!(sanitize_relative_path(&long).is_err());
        let fits = vec!["c".repeat(200); 15].join("/");
        assert!(sanitize_relative_path(&fits).is_ok());
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
