//! llama.cpp's quantiser (`llama_model_quantize` from libllama) as a command, for the
//! converter benchmark (scripts/bench-convert.sh): the second step of the route llama.cpp
//! users take (HF → f16 GGUF → quantised GGUF).
//!
//!     cargo run --release -p gemma-tests --example llama_quantize -- IN.gguf OUT.gguf FTYPE [THREADS]
//!
//! FTYPE is llama.cpp's `llama_ftype` number: 7 = Q8_0, 15 = Q4_K_M, 17 = Q5_K_M.
use gemma_tests::llama_quantize::{llama_quantize, QuantizeRequest};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: llama_quantize IN.gguf OUT.gguf FTYPE [THREADS]");
        std::process::exit(2);
    }
    let ftype: u32 = args[3].parse().expect("FTYPE is a number");
    let threads: i32 = args.get(4).map_or(0, |t| t.parse().expect("THREADS is a number"));
    if let Err(e) =
        llama_quantize(Path::new(&args[1]), Path::new(&args[2]), QuantizeRequest { ftype, pure: false, threads })
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
