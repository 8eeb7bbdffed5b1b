//! Where each plaintext byte of a transfer lives: the files of an offer are concatenated in
//! manifest order into one stream, which is what gets encrypted and described as a torrent.
//! Both sides map stream offsets back to (file, offset) with the same [`Layout`].

/// File boundaries of the concatenated stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `starts[i]` is where file `i` begins; one extra entry holds the total length.
    starts: Vec<u64>,
}

/// A piece of a stream range that falls inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file: usize,
    /// Offset inside that file.
    pub offset: u64,
    pub len: usize,
}

impl Layout {
    /// `None` when the sizes add up to more than `u64::MAX`.
    pub fn new(sizes: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut starts = vec![0];
        let mut at = 0u64;
        for size in sizes {
            at = at.checked_add(size)?;
            starts.push(at);
        }
        Some(Self { starts })
    }

    pub fn total(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    pub fn file_count(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn file_size(&self, file: usize) -> u64 {
        self.starts[file + 1] - self.starts[file]
    }

    /// The files and offsets covering `[offset, offset + len)`, skipping empty files.
    pub fn segments(&self, offset: u64, len: usize) -> impl Iterator<Item = Segment> + '_ {
        // The last file whose start is <= offset (the first non-empty one if several start there).
        let mut file = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let mut pos = offset;
        let end = offset.saturating_add(len as u64).min(self.total());
        std::iter::from_fn(move || {
            while file < self.file_count() && self.starts[file + 1] <= pos {
                file += 1;
            }
            if pos >= end || file >= self.file_count() {
                return None;
            }
            let n = (self.starts[file + 1].min(end) - pos) as usize;
            let seg = Segment {
                file,
                offset: pos - self.starts[file],
                len: n,
            };
            pos += n as u64;
            Some(seg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ranges_across_files_and_skips_empty_ones() {
        let l = Layout::new([3, 0, 5, 0, 2]).unwrap();
        assert_eq!(l.total(), 10);
        let segs: Vec<_> = l.segments(1, 8).map(|s| (s.file, s.offset, s.len)).collect();
        assert_eq!(segs, vec![(0, 1, 2), (2, 0, 5), (4, 0, 1)]);
        let tail: Vec<_> = l.segments(8, 100).map(|s| (s.file, s.offset, s.len)).collect();
        assert_eq!(tail, vec![(4, 0, 2)]);
        assert_eq!(l.segments(3, 1).next().map(|s| s.file), Some(2));
        assert_eq!(l.segments(10, 5).count(), 0);
        assert!(Layout::new([u64::MAX, 1]).is_none());
        assert_eq!(Layout::new([]).unwrap().segments(0, 10).count(), 0);
    }
}
