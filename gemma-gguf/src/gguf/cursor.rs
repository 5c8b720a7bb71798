//! A bounds-checked little-endian reader over a byte slice. Every read names the field
//! it is reading so that a short file reports where it ended.

use super::error::{GgufError, Result};

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Current position, in bytes from the start of the buffer.
    pub(crate) fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// The next `n` bytes, or [`GgufError::Truncated`] naming `field`.
    pub(crate) fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                field: field(),
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n ≤ remaining ≤ usize::MAX, so the cast and the addition are exact.
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn i64(&mut self, field: &dyn Fn() -> String) -> Result<i64> {
        self.array(field).map(i64::from_le_bytes)
    }

    /// A gguf string: u64 length, then that many UTF-8 bytes. The length is checked
    /// against [`MAX_STRING_LEN`](super::limits::MAX_STRING_LEN) and the bytes left
    /// before anything is allocated.
    pub(crate) fn string(&mut self, field: &dyn Fn() -> String) -> Result<String> {
        let len_field = || format!("the length of {}", field());
        let start = self.offset();
        let len = self.u64(&len_field)?;
        let limit = super::limits::MAX_STRING_LEN;
        if len > limit {
            return Err(GgufError::StringTooLong { field: field(), offset: start, len, limit });
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { field: field(), offset: start }),
        }
    }
}
