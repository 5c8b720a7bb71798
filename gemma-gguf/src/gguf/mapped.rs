//! [`MappedFile`]: a read-only memory map whose pages can be given back after use, so a
//! one-pass reader of a file larger than memory (the converter reading safetensors shards,
//! a requantiser reading a GGUF) keeps only what it is working on resident.
use super::error::{GgufError, Result};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A file mapped read-only. Reading its bytes maps pages in; [`release`](Self::release)
/// drops a range of them from this process's resident set again (the file and the page
/// cache are untouched; a later read maps them back in).
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
    path: PathBuf,
}

impl MappedFile {
    /// Maps `path`. The length is fixed at this call; truncating the file while it is
    /// mapped makes later reads fault, as with any memory-mapped reader (the caller's risk,
    /// documented on [`GgufFile::open`](super::GgufFile::open) too).
    #[allow(unsafe_code)]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, e))?.len();
        // An empty file cannot be mapped; it has no bytes to give.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is opened read-only and the map is never written through;
            // every slice handed out is bounded by the map's length, fixed here.
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?)
        };
        Ok(MappedFile { map, path: path.to_owned() })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the pages covering `range` back (`madvise(MADV_DONTNEED)`); a no-op where the
    /// platform has no such call or the range is out of bounds.
    pub fn release(&self, range: Range<usize>) {
        if let Some(map) = &self.map {
            release_pages(map, range);
        }
    }
}

/// Drops the whole pages inside `range` of `map` from the resident set.
#[allow(unsafe_code)]
pub(crate) fn release_pages(map: &memmap2::Mmap, range: Range<usize>) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        // Whole pages only: a partial page may hold bytes still in use around the range.
        let start = range.start.next_multiple_of(PAGE);
        let end = range.end.min(map.len()) / PAGE * PAGE;
        if start < end {
            // SAFETY: the map is a read-only shared file mapping: MADV_DONTNEED only drops
            // the pages from this process, and a later read faults them back in from the
            // file with the same contents. The range lies inside the map (clamped above).
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (map, range);
    }
}
