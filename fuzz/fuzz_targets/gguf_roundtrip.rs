//! Whatever the reader accepts, the writer writes, the reader reads back equal, and
//! writing again gives the same bytes.
#![no_main]

use gemma_gguf::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let bytes = file
        .write_to(Vec::new())
        .expect("the writer accepts everything the reader accepts");
    let again = GgufFile::from_bytes(bytes.clone())
        .expect("the reader accepts everything the writer writes");
    assert_eq!(file, again);
    assert_eq!(again.write_to(Vec::new()).unwrap(), bytes);
});
