//! What is offered: names, sizes and digests. Names arrive from the network, so every path
//! is checked here before anything touches the disk.

use serde::{Deserialize, Serialize};

/// Longest accepted file name component, in bytes (common filesystem limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest accepted path.
pub const MAX_DEPTH: usize = 64;

/// One file of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators; check with [`sanitize_relative_path`] before use.
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// The real description of the content, sent only inside the sealed channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
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
