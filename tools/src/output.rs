//! Where a converted file goes: checks before anything is written, and a sink that makes
//! the file appear under its name only once it is complete and has been read back.
//!
//! - The output must not be the input (same path or same file through a link), and must
//!   not exist unless `force` is given.
//! - Bytes go to `.NAME.tmp-PID` in the output's directory through gemma-gguf's
//!   [`TempFileSink::verified`](gemma_gguf::gguf::TempFileSink::verified): on success the
//!   file is synced, re-opened and checked with the GGUF reader, then renamed. On any
//!   error, and when the conversion is interrupted, the temporary file is removed and
//!   nothing is left under either name.
use crate::error::{Error, Result};
use std::path::Path;

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
