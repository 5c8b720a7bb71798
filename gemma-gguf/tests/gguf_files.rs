//! GGUF on disk: the writer's temporary file and rename, `open` (mapped) versus `read`,
//! and split models (BAD-INPUTS.md §12: a missing shard).

use gemma_gguf::gguf::{GgmlType, GgufError, GgufFile, GgufWriter};
use std::path::Path;

/// Writes a file with one F32 tensor per name, each [8] with every byte `fill + i`.
fn write_model(path: &Path, kvs: &[(&str, u16)], tensors: &[&str], fill: u8) {
    let mut w = GgufWriter::create(path).unwrap();
    w.add_kv("general.architecture", "gemma3").unwrap();
    for &(key, value) in kvs {
        w.add_kv(key, value).unwrap();
    }
    for name in tensors {
        w.add_tensor_info(name, &[8], GgmlType::F32).unwrap();
    }
    for (i, name) in tensors.iter().enumerate() {
        w.write_tensor_data(name, &[fill + i as u8; 32]).unwrap();
    }
    assert_eq!(w.finish().unwrap(), path);
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn create_renames_on_finish_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::create(&path).unwrap();
    w.add_tensor_info("t", &[8], GgmlType::F32).unwrap();
    w.write_tensor_data("t", &[1; 32]).unwrap();
    let tmp = format!(".m.gguf.tmp-{}", std::process::id());
    assert_eq!(dir_entries(dir.path()), [tmp]);
    let written = w.finish().unwrap();
    assert_eq!(written, path);
    assert_eq!(dir_entries(dir.path()), ["m.gguf"]);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor_data(&f.tensors()[0]).unwrap(), &[1; 32][..]);
}

#[test]
fn dropped_or_failed_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    {
        let mut w = GgufWriter::create(&path).unwrap();
        w.add_tensor_info("t", &[8], GgmlType::F32).unwrap();
        w.write_tensor_data("t", &[1; 16]).unwrap_err();
    }
    assert!(dir_entries(dir.path()).is_empty());
    let mut w = GgufWriter::create(&path).unwrap();
    w.add_tensor_info("t", &[8], GgmlType::F32).unwrap();
    assert!(matches!(w.finish(), Err(GgufError::TensorsMissing { .. })));
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn open_and_read_agree_and_save_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path, &[("x.count", 7)], &["a", "b", "c"], 10);
    let mapped = GgufFile::open(&path).unwrap();
    let read = GgufFile::read(&path).unwrap();
    assert_eq!(mapped, read);
    assert_eq!(mapped.get_u32("x.count").unwrap(), 7);
    let copy = dir.path().join("copy.gguf");
    mapped.save(&copy).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.gguf");
    match GgufFile::open(&path) {
        Err(GgufError::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(GgufFile::open(&empty), Err(GgufError::Truncated { .. })));
}

/// Writes `prefix-0000i-of-0000n.gguf` for i in 1..=n, shard i holding tensors
/// `t{i}a`, `t{i}b`.
fn write_split(dir: &Path, n: u16, tensors_count: u16) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|no| {
            let path = dir.join(format!("model-{:05}-of-{:05}.gguf", no + 1, n));
            let kvs = [("split.no", no), ("split.count", n), ("split.tensors.count", tensors_count)];
            let (a, b) = (format!("t{no}a"), format!("t{no}b"));
            write_model(&path, &kvs, &[&a, &b], 16 * no as u8);
            path
        })
        .collect()
}

#[test]
fn split_model_opens_all_shards() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_split(dir.path(), 3, 6);
    for f in [GgufFile::open(&paths[0]).unwrap(), GgufFile::read(&paths[0]).unwrap()] {
        assert_eq!(f.n_shards(), 3);
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t0a", "t0b", "t1a", "t1b", "t2a", "t2b"]);
        let t = f.tensor("t2b").unwrap();
        assert_eq!(t.shard, 2);
        assert_eq!(f.tensor_data(t).unwrap(), &[33; 32][..]);
        // Merged into one file, the split keys go.
        let merged = GgufFile::from_bytes(f.write_to(Vec::new()).unwrap()).unwrap();
        assert_eq!(merged.tensors().len(), 6);
        assert!(merged.get("split.count").is_none());
        assert_eq!(merged.tensor_data(&merged.tensors()[5]).unwrap(), &[33; 32][..]);
    }
}

#[test]
fn split_model_with_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_split(dir.path(), 3, 6);
    std::fs::remove_file(&paths[2]).unwrap();
    match GgufFile::open(&paths[0]) {
        Err(e @ GgufError::MissingShard { .. }) => {
            assert!(e.to_string().contains("model-00003-of-00003.gguf"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn split_model_defects() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_split(dir.path(), 2, 5);
    assert!(matches!(GgufFile::open(&paths[0]), Err(GgufError::ShardTensorCount { expected: 5, actual: 4 })));
    assert!(matches!(GgufFile::open(&paths[1]), Err(GgufError::NotFirstShard { split_no: 1, .. })));
    // A first shard whose name does not say where the others are.
    let renamed = dir.path().join("model.gguf");
    std::fs::copy(&paths[0], &renamed).unwrap();
    assert!(matches!(GgufFile::open(&renamed), Err(GgufError::ShardName { count: 2, .. })));
    // Shard 2 claiming to be shard 1 (split.no 0).
    write_model(&paths[1], &[("split.no", 0), ("split.count", 2)], &["x"], 0);
    assert!(matches!(
        GgufFile::open(&paths[0]),
        Err(GgufError::ShardMismatch { key: "split.no", expected: 1, actual: 0, .. })
    ));
    // The same tensor name in two shards.
    write_model(&paths[1], &[("split.no", 1), ("split.count", 2)], &["t0a"], 0);
    assert!(matches!(GgufFile::open(&paths[0]), Err(GgufError::DuplicateTensor { .. })));
}

#[test]
fn create_in_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/m.gguf");
    match GgufWriter::create(&path) {
        Err(e @ GgufError::Io { .. }) => assert!(e.to_string().contains("no/such/dir"), "{e}"),
        other => panic!("{:?}", other.err()),
    }
}
