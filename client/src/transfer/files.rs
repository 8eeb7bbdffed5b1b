//! Random access to the plaintext stream of an offer, which is the offer's files
//! concatenated ([`Layout`]). The sender reads it from the original files; the receiver
//! writes it into the files of its staging folder. Files are opened on demand and a bounded
//! number stay open, so a folder of a million files never exhausts file descriptors.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io,
    num::NonZeroU64,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use convey_shared::layout::Layout;

/// Most files kept open at once.
const OPEN_FILES: usize = 64;

/// The files behind one plaintext stream.
#[derive(Debug)]
pub struct FileSet {
    paths: RwLock<Vec<PathBuf>>,
    layout: Layout,
    writable: AtomicBool,
    open: Mutex<HashMap<usize, Arc<File>>>,
}

impl FileSet {
    /// `paths[i]` holds file `i` of `layout`.
    pub fn new(paths: Vec<PathBuf>, layout: Layout, writable: bool) -> Self {
        debug_assert_eq!(paths.len(), layout.file_count());
        Self {
            paths: RwLock::new(paths),
            layout,
            writable: AtomicBool::new(writable),
            open: Mutex::default(),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.paths.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The files now live at `paths` (a receiver moved them into place and serves them from
    /// there): read-only from now on.
    pub fn relocate(&self, paths: Vec<PathBuf>) {
        debug_assert_eq!(paths.len(), self.layout.file_count());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        *self.paths.write().unwrap_or_else(|e| e.into_inner()) = paths;
        self.writable.store(false, Ordering::Release);
        open.clear();
    }

    fn path(&self, i: usize) -> PathBuf {
        self.paths.read().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    fn file(&self, i: usize) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(&i) {
            return Ok(f.clone());
        }
        let path = self.path(i);
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(self.writable.load(Ordering::Acquire))
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        );
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        open.insert(i, f.clone());
        Ok(f)
    }

    /// Fill `buf` from stream offset `offset`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut at = 0;
        for seg in self.layout.segments(offset, buf.len()) {
            self.file(seg.file)?
                .read_exact_at(&mut buf[at..at + seg.len], seg.offset)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path(seg.file).display())))?;
            at += seg.len;
        }
        if at != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the content",
            ));
        }
        Ok(())
    }

    /// Write `buf` at stream offset `offset`.
    pub fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut at = 0;
        for seg in self.layout.segments(offset, buf.len()) {
            self.file(seg.file)?
                .write_all_at(&buf[at..at + seg.len], seg.offset)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path(seg.file).display())))?;
            at += seg.len;
        }
        if at != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the content",
            ));
        }
        Ok(())
    }

    /// Start writing `[offset, offset + len)` of the stream back to disk, without waiting,
    /// and let the page cache drop what is already there (the receiver has hashed it).
    pub fn start_writeback(&self, offset: u64, len: u64) {
        for seg in self
            .layout
            .segments(offset, usize::try_from(len).unwrap_or(usize::MAX))
        {
            if let Ok(f) = self.file(seg.file) {
                let len = NonZeroU64::new(seg.len as u64);
                let _ = rustix::fs::fadvise(&*f, seg.offset, len, rustix::fs::Advice::DontNeed);
            }
        }
    }

    /// Close every open file (before the files are moved or removed).
    pub fn close_all(&self) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_across_file_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [3u64, 0, 4];
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("f{i}"))).collect();
        for (p, s) in paths.iter().zip(sizes) {
            File::create(p).unwrap().set_len(s).unwrap();
        }
        let set = FileSet::new(paths.clone(), Layout::new(sizes).unwrap(), true);
        set.write_all_at(1, b"abcde").unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"\0ab");
        assert_eq!(std::fs::read(&paths[2]).unwrap(), b"cde\0");
        let mut buf = [0u8; 4];
        set.read_exact_at(2, &mut buf).unwrap();
        assert_eq!(&buf, b"bcde");
        assert!(set.read_exact_at(5, &mut buf).is_err(), "past the end");
        assert!(set.write_all_at(6, b"xy").is_err(), "past the end");
    }
}
