//! Split models: `prefix-00001-of-00003.gguf`, `prefix-00002-of-00003.gguf`, …
//!
//! Shard names follow llama.cpp's `llama_split_path` ("%s-%05d-of-%05d.gguf", shards
//! counted from 1 in the name and from 0 in `split.no`). Like llama.cpp's model loader,
//! the metadata is the first shard's, every shard must carry `split.no` equal to its
//! index and the same `split.count`, tensor names are unique over all shards, and
//! `split.tensors.count` (when present) equals the number of tensors found.

use super::error::{GgufError, Result};
use super::reader::{GgufFile, Storage};
use super::{KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};
use std::path::{Path, PathBuf};

/// Opens `path` with `load` and, if it is the first shard of a split model, the other
/// shards next to it.
pub(crate) fn load(path: &Path, load: fn(&Path) -> Result<Storage>) -> Result<GgufFile> {
    let mut file = GgufFile::from_storage(load(path)?, Some(path.to_owned()))?;
    let count = split_key(&file, KEY_SPLIT_COUNT)?.unwrap_or(1);
    if count <= 1 {
        return Ok(file);
    }
    let split_no = split_key(&file, KEY_SPLIT_NO)?.unwrap_or(0);
    if split_no != 0 {
        return Err(GgufError::NotFirstShard { path: path.to_owned(), split_no });
    }
    let prefix = split_prefix(path, count).ok_or_else(|| GgufError::ShardName { path: path.to_owned(), count })?;
    for no in 1..count {
        let shard_path = shard_path(&prefix, no, count);
        let storage = load(&shard_path).map_err(|e| match e {
            GgufError::Io { path, source } => GgufError::MissingShard { path, source },
            other => other,
        })?;
        let shard = GgufFile::from_storage(storage, Some(shard_path.clone()))?;
        check_shard(&shard, &shard_path, no, count)?;
        file.push_shard(shard)?;
    }
    if let Some(expected) = split_key(&file, KEY_SPLIT_TENSORS_COUNT)? {
        let actual = file.tensors().len() as u64;
        if expected != actual {
            return Err(GgufError::ShardTensorCount { expected, actual });
        }
    }
    Ok(file)
}

/// A split key as u64, `None` when absent. Any integer type is accepted (llama.cpp
/// writes `split.no` and `split.count` as u16 and `split.tensors.count` as i32), but
/// not a negative value.
fn split_key(file: &GgufFile, key: &'static str) -> Result<Option<u64>> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    match value.as_integer().map(u64::try_from) {
        Some(Ok(n)) => Ok(Some(n)),
        _ => Err(GgufError::InvalidValue {
            key: key.to_owned(),
            reason: format!("must be a non-negative integer, found {value:?}"),
        }),
    }
}

fn check_shard(shard: &GgufFile, path: &Path, no: u64, count: u64) -> Result<()> {
    for (key, expected) in [(KEY_SPLIT_NO, no), (KEY_SPLIT_COUNT, count)] {
        let actual = split_key(shard, key)?
            .ok_or_else(|| GgufError::MissingKey { key: format!("{key} (in {})", path.display()) })?;
        if actual != expected {
            return Err(GgufError::ShardMismatch { path: path.to_owned(), key, expected, actual });
        }
    }
    Ok(())
}

/// `dir/name` from `dir/name-00001-of-NNNNN.gguf`, or `None` when `path` does not end
/// that way for this `count`.
fn split_prefix(path: &Path, count: u64) -> Option<PathBuf> {
    let file_name = path.file_name()?.to_str()?;
    let postfix = format!("-{:05}-of-{:05}.gguf", 1, count);
    let stem = file_name.strip_suffix(&postfix)?;
    if stem.is_empty() {
        return None;
    }
    Some(path.with_file_name(stem))
}

/// The path of shard `no` (from 0) of `count`.
fn shard_path(prefix: &Path, no: u64, count: u64) -> PathBuf {
    let mut name = prefix.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-{:05}-of-{:05}.gguf", no + 1, count));
    prefix.with_file_name(name)
}
