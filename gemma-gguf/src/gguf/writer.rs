//! [`GgufWriter`]: a streaming GGUF writer.
//!
//! Usage: declare everything (version, alignment, key/value pairs, tensor infos), then
//! give each tensor's bytes in declared order, then [`finish`](GgufWriter::finish). The
//! header is written when the first tensor's data arrives (or at `finish`); the writer
//! computes every offset, so only one tensor needs to be in memory at a time.
//!
//! The output is laid out exactly as ggml's `gguf_write_out` lays it out: KVs and tensor
//! infos in the order given, zero padding to the alignment after the tensor infos (even
//! with no tensors) and after each tensor's data (including the last). A file llama.cpp
//! wrote therefore comes back byte for byte from [`GgufFile::write_to`].
//!
//! The writer runs the reader's checks on every name, key, value and shape, so it never
//! emits a file that [`GgufFile`] rejects.

use super::error::{GgufError, Result};
use super::reader::{GgufFile, TensorInfo};
use super::types::GgmlType;
use super::validate;
use super::value::{GgufArray, GgufValue};
use super::{pad_to, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT};
use super::{KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where a [`GgufWriter`] writes, and what it does once the file is complete.
pub trait GgufSink: Write {
    /// What [`GgufWriter::finish`] returns.
    type Output;
    /// Called once after the last byte: flush, and make the result durable or visible.
    fn complete(self) -> Result<Self::Output>;

    /// The file being written, if any, so that errors can name it.
    fn path(&self) -> Option<&Path> {
        None
    }
}

/// Any [`Write`]; `finish` flushes it and gives it back.
pub struct StreamSink<W: Write>(W);

impl<W: Write> Write for StreamSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> GgufSink for StreamSink<W> {
    type Output = W;
    fn complete(mut self) -> Result<W> {
        self.0.flush().map_err(GgufError::Write)?;
        Ok(self.0)
    }
}

/// A temporary file `.NAME.tmp-PID` next to the target `NAME`. `complete` fsyncs it and
/// renames it over the target; dropping it before that removes it, so an interrupted
/// write never leaves a partial file under the target name.
pub struct TempFileSink {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    target: PathBuf,
    /// Read the file back with [`GgufFile::open`] before renaming it: it must hold this
    /// many tensors.
    verify_tensors: Option<usize>,
}

impl TempFileSink {
    /// Like [`GgufWriter::create`]'s sink, but `complete` also re-opens the finished
    /// temporary file with the reader (every length and offset checked) and requires
    /// `n_tensors` tensors in it before giving it its name (the converter's output).
    pub fn verified(target: &Path, n_tensors: usize) -> Result<Self> {
        let mut sink = Self::create(target)?;
        sink.verify_tensors = Some(n_tensors);
        Ok(sink)
    }

    fn create(target: &Path) -> Result<Self> {
        let name = target.file_name().ok_or_else(|| {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "path has no file name");
            GgufError::io(target, e)
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = target.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| GgufError::io(&tmp, e))?;
        Ok(TempFileSink {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            target: target.to_owned(),
            verify_tensors: None,
        })
    }

    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file.as_mut().ok_or_else(|| io::Error::other("temporary file already closed"))
    }
}

impl Write for TempFileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl GgufSink for TempFileSink {
    type Output = PathBuf;
    fn complete(mut self) -> Result<PathBuf> {
        let tmp_err = |e| GgufError::io(&self.tmp, e);
        let file = self.file.take().ok_or_else(|| tmp_err(io::Error::other("closed")))?;
        let file = file.into_inner().map_err(|e| tmp_err(e.into_error()))?;
        file.sync_all().map_err(tmp_err)?;
        drop(file);
        if let Some(n) = self.verify_tensors {
            let back = GgufFile::open(&self.tmp)?;
            if back.tensors().len() != n {
                let what = format!("read back {} tensors, wrote {n}", back.tensors().len());
                return Err(tmp_err(io::Error::other(what)));
            }
        }
        std::fs::rename(&self.tmp, &self.target).map_err(|e| GgufError::io(&self.target, e))?;
        // Make the rename itself durable; not every platform can open a directory.
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Renamed: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        Ok(self.target.clone())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.target)
    }
}

impl Drop for TempFileSink {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Accepting version, alignment, KVs and tensor infos.
    Declaring,
    /// Header written; `next` tensor's data is expected, `done` bytes of it written.
    Data { next: usize, done: u64 },
    /// A write failed; the output is unusable.
    Failed,
}

/// A streaming GGUF writer over a [`GgufSink`].
pub struct GgufWriter<S: GgufSink> {
    sink: S,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    state: State,
    /// Bytes written so far (padding is relative to the start of the file).
    written: u64,
}

impl GgufWriter<TempFileSink> {
    /// Writes to a temporary file next to `path`, renamed to `path` by
    /// [`finish`](Self::finish). Dropping the writer earlier removes the temporary file.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::with_sink(TempFileSink::create(path.as_ref())?))
    }
}

impl<W: Write> GgufWriter<StreamSink<W>> {
    /// Writes to any [`Write`] (a `Vec<u8>`, a socket, …); `finish` returns it.
    pub fn from_writer(writer: W) -> Self {
        Self::with_sink(StreamSink(writer))
    }
}

impl<S: GgufSink> GgufWriter<S> {
    /// Writes to `sink`.
    pub fn with_sink(sink: S) -> Self {
        GgufWriter {
            sink,
            version: GGUF_VERSION,
            alignment: DEFAULT_ALIGNMENT.into(),
            metadata: Vec::new(),
            keys: HashMap::new(),
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
            state: State::Declaring,
            written: 0,
        }
    }

    fn declaring(&self) -> Result<()> {
        match self.state {
            State::Declaring => Ok(()),
            State::Data { .. } => {
                Err(GgufError::WriterState("the header is already written; declare everything before tensor data"))
            }
            State::Failed => Err(GgufError::WriterState("a previous write failed")),
        }
    }

    /// The format version to write: 3 (default) or 2, which share one layout.
    pub fn set_version(&mut self, version: u32) -> Result<()> {
        self.declaring()?;
        if version != 2 && version != 3 {
            return Err(GgufError::WriteVersion { version });
        }
        self.version = version;
        Ok(())
    }

    /// Sets `general.alignment` (replacing its value where it already is in the KV list,
    /// appending it otherwise). Must be a power of two ≤ [`MAX_ALIGNMENT`](super::MAX_ALIGNMENT).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        self.declaring()?;
        self.alignment = validate::check_alignment(alignment)?;
        match self.keys.get(KEY_ALIGNMENT) {
            Some(&i) => self.metadata[i].1 = GgufValue::U32(alignment),
            None => self.push_kv(KEY_ALIGNMENT.to_owned(), GgufValue::U32(alignment)),
        }
        self.recompute_offsets()
    }

    /// Appends a key/value pair. Keys must be non-empty and unique; `general.alignment`
    /// must be a valid u32 alignment and takes effect for all tensors.
    pub fn add_kv(&mut self, key: &str, value: impl Into<GgufValue>) -> Result<()> {
        self.declaring()?;
        let value = value.into();
        validate::check_key(key, self.metadata.len() as u64)?;
        if self.keys.contains_key(key) {
            return Err(GgufError::DuplicateKey { key: key.to_owned() });
        }
        validate::check_value(key, &value)?;
        let is_alignment = key == KEY_ALIGNMENT;
        if is_alignment {
            self.alignment = validate::alignment_from_value(Some(&value))?;
        }
        self.push_kv(key.to_owned(), value);
        if is_alignment {
            self.recompute_offsets()?;
        }
        Ok(())
    }

    fn push_kv(&mut self, key: String, value: GgufValue) {
        self.keys.insert(key.clone(), self.metadata.len());
        self.metadata.push((key, value));
    }

    /// Declares the next tensor: `dims` in ggml order (ne0 first, at most 4). Returns its
    /// info with the computed offset and size.
    pub fn add_tensor_info(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<&TensorInfo> {
        self.declaring()?;
        let index = self.tensors.len() as u64;
        validate::check_tensor_name(name, index, 0)?;
        if self.tensor_index.contains_key(name) {
            return Err(GgufError::DuplicateTensor { name: name.to_owned() });
        }
        let n_bytes = validate::tensor_n_bytes(name, dims, ggml_type)?;
        let offset = self.next_offset(name)?;
        self.tensor_index.insert(name.to_owned(), self.tensors.len());
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            offset,
            n_bytes,
            shard: 0,
        });
        Ok(&self.tensors[self.tensors.len() - 1])
    }

    /// The tensors declared so far, with their offsets.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Where the next tensor goes: the end of the last one, padded to the alignment.
    fn next_offset(&self, name: &str) -> Result<u64> {
        let Some(last) = self.tensors.last() else {
            return Ok(0);
        };
        last.offset
            .checked_add(last.n_bytes)
            .and_then(|end| pad_to(end, self.alignment))
            .filter(|&off| off <= i64::MAX as u64)
            .ok_or_else(|| GgufError::ShapeOverflow { tensor: name.to_owned(), dims: Vec::new() })
    }

    fn recompute_offsets(&mut self) -> Result<()> {
        let tensors = std::mem::take(&mut self.tensors);
        let mut result = Ok(());
        for mut t in tensors {
            if result.is_ok() {
                match self.next_offset(&t.name) {
                    Ok(offset) => t.offset = offset,
                    Err(e) => result = Err(e),
                }
            }
            self.tensors.push(t);
        }
        result
    }
}

/// Output.
impl<S: GgufSink> GgufWriter<S> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.sink.write_all(bytes) {
            self.state = State::Failed;
            return Err(match self.sink.path() {
                Some(path) => GgufError::io(path, e),
                None => GgufError::Write(e),
            });
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_str(&mut self, s: &str) -> Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    /// Zero bytes up to the next multiple of the alignment.
    fn pad(&mut self) -> Result<()> {
        const ZEROS: [u8; 256] = [0; 256];
        let target = pad_to(self.written, self.alignment).unwrap_or(self.written);
        let mut missing = target - self.written;
        while missing > 0 {
            let n = missing.min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..n])?;
            missing -= n as u64;
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<()> {
        self.put(&GGUF_MAGIC)?;
        self.put(&self.version.to_le_bytes())?;
        self.put(&(self.tensors.len() as u64).to_le_bytes())?;
        self.put(&(self.metadata.len() as u64).to_le_bytes())?;
        let metadata = std::mem::take(&mut self.metadata);
        let result = metadata.iter().try_for_each(|(key, value)| self.put_kv(key, value));
        self.metadata = metadata;
        result?;
        let tensors = std::mem::take(&mut self.tensors);
        let result = tensors.iter().try_for_each(|t| self.put_tensor_info(t));
        self.tensors = tensors;
        result?;
        self.pad()?;
        self.state = State::Data { next: 0, done: 0 };
        Ok(())
    }

    fn put_kv(&mut self, key: &str, value: &GgufValue) -> Result<()> {
        self.put_str(key)?;
        self.put(&value.value_type().id().to_le_bytes())?;
        match value {
            GgufValue::Array(a) => self.put_array(a),
            scalar => self.put_scalar(scalar),
        }
    }

    fn put_scalar(&mut self, value: &GgufValue) -> Result<()> {
        match value {
            GgufValue::U8(v) => self.put(&v.to_le_bytes()),
            GgufValue::I8(v) => self.put(&v.to_le_bytes()),
            GgufValue::U16(v) => self.put(&v.to_le_bytes()),
            GgufValue::I16(v) => self.put(&v.to_le_bytes()),
            GgufValue::U32(v) => self.put(&v.to_le_bytes()),
            GgufValue::I32(v) => self.put(&v.to_le_bytes()),
            GgufValue::F32(v) => self.put(&v.to_le_bytes()),
            GgufValue::Bool(v) => self.put(&[u8::from(*v)]),
            GgufValue::String(v) => self.put_str(v),
            GgufValue::Array(a) => self.put_array(a),
            GgufValue::U64(v) => self.put(&v.to_le_bytes()),
            GgufValue::I64(v) => self.put(&v.to_le_bytes()),
            GgufValue::F64(v) => self.put(&v.to_le_bytes()),
        }
    }

    fn put_array(&mut self, a: &GgufArray) -> Result<()> {
        self.put(&a.element_type().id().to_le_bytes())?;
        self.put(&(a.len() as u64).to_le_bytes())?;
        match a {
            GgufArray::U8(v) => self.put(v),
            GgufArray::I8(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::U16(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::I16(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::U32(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::I32(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::F32(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::Bool(v) => v.iter().try_for_each(|&x| self.put(&[u8::from(x)])),
            GgufArray::String(v) => v.iter().try_for_each(|x| self.put_str(x)),
            GgufArray::U64(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::I64(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
            GgufArray::F64(v) => v.iter().try_for_each(|x| self.put(&x.to_le_bytes())),
        }
    }

    fn put_tensor_info(&mut self, t: &TensorInfo) -> Result<()> {
        self.put_str(&t.name)?;
        self.put(&(t.dims.len() as u32).to_le_bytes())?;
        for &ne in &t.dims {
            self.put(&ne.to_le_bytes())?; // ≤ i64::MAX (validated): same bytes as i64
        }
        self.put(&t.ggml_type.id().to_le_bytes())?;
        self.put(&t.offset.to_le_bytes())
    }
}

/// Tensor data and completion.
impl<S: GgufSink> GgufWriter<S> {
    /// Writes the whole data of tensor `name`, which must be the next declared tensor;
    /// `data` must be exactly its size.
    pub fn write_tensor_data(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let (next, done) = self.expect_tensor(name)?;
        let expected = self.tensors[next].n_bytes;
        if done != 0 || data.len() as u64 != expected {
            return Err(GgufError::TensorDataSize {
                tensor: name.to_owned(),
                expected,
                actual: done + data.len() as u64,
            });
        }
        self.write_tensor_part(name, data)
    }

    /// Writes the next part of tensor `name`'s data. The tensor is complete (and
    /// padded) once its parts add up to its size; more than that is an error.
    pub fn write_tensor_part(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let (next, done) = self.expect_tensor(name)?;
        let expected = self.tensors[next].n_bytes;
        let total = done.saturating_add(data.len() as u64);
        if total > expected {
            return Err(GgufError::TensorDataSize { tensor: name.to_owned(), expected, actual: total });
        }
        self.put(data)?;
        if total == expected {
            self.pad()?;
            self.state = State::Data { next: next + 1, done: 0 };
        } else {
            self.state = State::Data { next, done: total };
        }
        Ok(())
    }

    /// Writes the header if needed and checks that `name` is the tensor due next.
    fn expect_tensor(&mut self, name: &str) -> Result<(usize, u64)> {
        if self.state == State::Declaring {
            self.write_header()?;
        }
        let State::Data { next, done } = self.state else {
            return Err(GgufError::WriterState("a previous write failed"));
        };
        let Some(due) = self.tensors.get(next) else {
            return Err(GgufError::UnknownTensor { tensor: name.to_owned() });
        };
        if due.name != name {
            if !self.tensor_index.contains_key(name) {
                return Err(GgufError::UnknownTensor { tensor: name.to_owned() });
            }
            return Err(GgufError::TensorOrder { expected: due.name.clone(), got: name.to_owned() });
        }
        Ok((next, done))
    }

    /// Checks that every declared tensor got its data, then completes the sink (for a
    /// file: fsync and rename into place).
    pub fn finish(mut self) -> Result<S::Output> {
        if self.state == State::Declaring {
            self.write_header()?;
        }
        let State::Data { next, .. } = self.state else {
            return Err(GgufError::WriterState("a previous write failed"));
        };
        if next < self.tensors.len() {
            return Err(GgufError::TensorsMissing {
                missing: self.tensors.len() - next,
                first: self.tensors[next].name.clone(),
            });
        }
        self.sink.complete()
    }
}

/// Writing a parsed file back out.
impl GgufFile {
    /// Writes this file to `writer`, preserving the version and the order of keys and
    /// tensors. For a file written by llama.cpp the output is byte-identical to the
    /// input (up to any bytes after its data). A split model is merged into one file
    /// and its `split.*` keys are dropped, as llama-quantize does.
    pub fn write_to<W: Write>(&self, writer: W) -> Result<W> {
        self.copy_into(GgufWriter::from_writer(writer))
    }

    /// Writes this file to `path` through a temporary file (see [`GgufWriter::create`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        self.copy_into(GgufWriter::create(path)?)
    }

    fn copy_into<S: GgufSink>(&self, mut w: GgufWriter<S>) -> Result<S::Output> {
        w.set_version(self.version())?;
        let merging = self.n_shards() > 1;
        let split_keys = [KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT];
        for (key, value) in self.metadata() {
            if merging && split_keys.contains(&key) {
                continue;
            }
            w.add_kv(key, value.clone())?;
        }
        for t in self.tensors() {
            w.add_tensor_info(&t.name, &t.dims, t.ggml_type)?;
        }
        for t in self.tensors() {
            w.write_tensor_data(&t.name, self.tensor_data(t)?)?;
        }
        w.finish()
    }
}
