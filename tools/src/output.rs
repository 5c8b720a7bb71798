//! Where a converted file goes: checks before anything is written, and a sink that makes
//! the file appear under its name only once it is complete and has been read back.
//!
//! - The output must not be the input (same path or same file through a link), and must
//!   not exist unless `force` is given.
//! - Bytes go to `.NAME.tmp-PID` in the output's directory (so the final rename is atomic);
//!   on success the file is flushed, synced, re-opened and checked with the GGUF reader,
//!   then renamed. On any error, and when the conversion is interrupted, the temporary file
//!   is removed and nothing is left under either name.
use crate::error::{Error, Result};
use gemma_gguf::gguf::{GgufError, GgufFile, GgufSink};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Refuses an output that is one of the inputs, or that exists (without `force`).
pub fn check_output(output: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let bad = |what: String| Error::Output { path: output.to_owned(), what };
    if output.file_name().is_none() || output.is_dir() {
        return Err(bad("is a directory; give a file name, e.g. model-q4_k_m.gguf".into()));
    }
    for input in inputs {
        if same_file(output, input) {
            return Err(bad(format!("is the input ({}); write to another file", input.display())));
        }
    }
    if output.exists() && !force {
        return Err(bad("already exists; pass --force to replace it".into()));
    }
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(bad(format!("directory {} does not exist", parent.display())));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) if x == y => return true,
        _ => {}
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// A temporary file next to the target, verified and renamed on completion.
pub struct VerifiedFile {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    target: PathBuf,
    expected_tensors: usize,
}

impl VerifiedFile {
    pub fn create(target: &Path, expected_tensors: usize) -> Result<Self> {
        let name =
            target.file_name().ok_or_else(|| Error::Output { path: target.to_owned(), what: "no file name".into() })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = target.with_file_name(tmp_name);
        let file =
            OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(VerifiedFile {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            target: target.to_owned(),
            expected_tensors,
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file.as_mut().ok_or_else(|| io::Error::other("already closed"))
    }
}

impl Write for VerifiedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl GgufSink for VerifiedFile {
    type Output = PathBuf;

    fn complete(mut self) -> Result<PathBuf, GgufError> {
        let tmp = self.tmp.clone();
        let io_err = |e| GgufError::Io { path: tmp.clone(), source: e };
        let file = self.file.take().ok_or_else(|| io_err(io::Error::other("closed")))?;
        let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        // Read back what was written before it gets its name.
        let back = GgufFile::open(&self.tmp)?;
        if back.tensors().len() != self.expected_tensors {
            return Err(io_err(io::Error::other(format!(
                "read back {} tensors, wrote {}",
                back.tensors().len(),
                self.expected_tensors
            ))));
        }
        drop(back);
        std::fs::rename(&self.tmp, &self.target).map_err(|e| GgufError::Io { path: self.target.clone(), source: e })?;
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.tmp = PathBuf::new();
        Ok(self.target.clone())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.target)
    }
}

impl Drop for VerifiedFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
