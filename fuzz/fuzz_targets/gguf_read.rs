//! Any bytes: the reader returns Ok or Err, never panics, and what it accepts is
//! internally consistent (every tensor's data is in the buffer and has its size).
#![no_main]

use gemma_gguf::gguf::{GgufFile, GgufValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (key, value) in file.metadata() {
        assert!(!key.is_empty());
        assert!(file.get(key) == Some(value));
        if let GgufValue::Array(a) = value {
            let _ = a.len();
        }
    }
    for t in file.tensors() {
        let bytes = file.tensor_data(t).expect("a tensor of this file has data");
        assert_eq!(bytes.len() as u64, t.n_bytes);
        assert_eq!(t.offset % file.alignment(), 0);
        assert!(file.tensor(&t.name) == Some(t));
    }
});
