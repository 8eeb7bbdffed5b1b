//! Several files arrive in the browser as one download: a POSIX tar archive (ustar, with a
//! PAX record for a long path or a large size), written as the content streams in, so the
//! page holds no file in memory. Paths are the checked ones from the manifest.

use convey_shared::manifest::{CheckedManifest, MODE_MASK};

const BLOCK: usize = 512;
/// Largest size the ustar header's 11 octal digits hold.
const USTAR_MAX_SIZE: u64 = 0o777_7777_7777;

#[derive(Debug)]
struct FileEntry {
    path: String,
    size: u64,
    mode: u32,
}

/// A tar archive of one offer, written as its bytes arrive in order.
#[derive(Debug)]
pub(crate) struct Archive {
    dirs: Vec<(String, u32)>,
    files: Vec<FileEntry>,
    mtime: u64,
    started: bool,
    /// The file whose header is written next.
    next_file: usize,
    /// The file being written, if its header is out.
    current: Option<usize>,
}

impl Archive {
    pub(crate) fn new(content: &CheckedManifest, mtime: u64) -> Self {
        let dirs = content
            .dir_parts
            .iter()
            .zip(&content.manifest.dirs)
            .map(|(parts, d)| (parts.join("/"), d.mode & MODE_MASK))
            .collect();
        let files = content
            .file_parts
            .iter()
            .zip(&content.manifest.files)
            .map(|(parts, f)| FileEntry {
                path: parts.join("/"),
                size: f.size,
                mode: f.mode & MODE_MASK,
            })
            .collect();
        Self {
            dirs,
            files,
            mtime,
            started: false,
            next_file: 0,
            current: None,
        }
    }

    /// The next bytes of file `file` (files come in manifest order).
    pub(crate) fn data(&mut self, file: usize, part: &[u8], out: &mut Vec<u8>) {
        self.advance_to(file + 1, out);
        out.extend_from_slice(part);
    }

    /// Every byte is in: the headers of trailing empty files, then the end of the archive.
    pub(crate) fn end(&mut self, out: &mut Vec<u8>) {
        self.advance_to(self.files.len(), out);
        self.close_current(out);
        out.resize(out.len() + 2 * BLOCK, 0);
    }

    /// Write every header before file `upto` (exclusive), closing files on the way.
    fn advance_to(&mut self, upto: usize, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            for (path, mode) in &self.dirs {
                header(out, &format!("{path}/"), 0, *mode, b'5', self.mtime);
            }
        }
        while self.next_file < upto {
            self.close_current(out);
            let f = &self.files[self.next_file];
            header(out, &f.path, f.size, f.mode, b'0', self.mtime);
            self.current = Some(self.next_file);
            self.next_file += 1;
        }
    }

    fn close_current(&mut self, out: &mut Vec<u8>) {
        if let Some(c) = self.current.take() {
            pad(out, self.files[c].size);
        }
    }
}

fn pad(out: &mut Vec<u8>, len: u64) {
    let rest = (len % BLOCK as u64) as usize;
    if rest != 0 {
        out.resize(out.len() + BLOCK - rest, 0);
    }
}

/// One entry's header, behind a PAX record when the path or size does not fit ustar.
fn header(out: &mut Vec<u8>, path: &str, size: u64, mode: u32, kind: u8, mtime: u64) {
    let long_path = path.len() > 100;
    let big = size > USTAR_MAX_SIZE;
    if long_path || big {
        let mut records = String::new();
        if long_path {
            records.push_str(&pax_record("path", path));
        }
        if big {
            records.push_str(&pax_record("size", &size.to_string()));
        }
        ustar(out, "PaxHeader", records.len() as u64, 0o644, b'x', mtime);
        out.extend_from_slice(records.as_bytes());
        pad(out, records.len() as u64);
    }
    let mut short = path;
    while short.len() > 100 {
        let mut cut = 100;
        while !short.is_char_boundary(cut) {
            cut -= 1;
        }
        short = &short[..cut];
    }
    ustar(out, short, if big { 0 } else { size }, mode, kind, mtime);
}

/// `"<len> key=value\n"`, where `<len>` counts the whole record, its own digits too.
fn pax_record(key: &str, value: &str) -> String {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

fn ustar(out: &mut Vec<u8>, name: &str, size: u64, mode: u32, kind: u8, mtime: u64) {
    let mut h = [0u8; BLOCK];
    let put = |h: &mut [u8; BLOCK], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(
        &mut h,
        136,
        format!("{:011o}\0", mtime.min(USTAR_MAX_SIZE)).as_bytes(),
    );
    put(&mut h, 148, b"        ");
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for value in ["a", &"x".repeat(93), &"y".repeat(994), &"z".repeat(200)] {
            let r = pax_record("path", value);
            let (len, _) = r.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{r:?}");
        }
    }

    #[test]
    fn header_checksum_is_the_sum_with_spaces() {
        let mut out = Vec::new();
        ustar(&mut out, "a.txt", 5, 0o644, b'0', 0);
        assert_eq!(out.len(), BLOCK);
        let mut h = out.clone();
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let field = std::str::from_utf8(&out[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
    }
}
