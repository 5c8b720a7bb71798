//! `gemma system` and the text of `gemma --version`.
use anyhow::Result;
use gemma_gguf::ggml::{backend_features, backends, build_info, default_threads, ggml_version, BuildInfo, Device};

#[derive(clap::Args)]
pub struct Args {}

/// `gemma <version>`, ggml's version, commit and build, and the devices available.
pub fn version_text() -> String {
    let (ggml, commit) = ggml_version();
    let devices: Vec<String> = Device::all().iter().map(|d| format!("{} ({})", d.name(), d.description())).collect();
    format!(
        "{}\nggml {ggml} ({commit}), vendored by llama-cpp-sys-2 0.1.161; {}\ndevices: {}",
        env!("CARGO_PKG_VERSION"),
        build_line(&build_info()),
        devices.join(", ")
    )
}

/// `ggml build: Release -O3, OpenMP on`: how the linked ggml was compiled.
fn build_line(b: &BuildInfo) -> String {
    let openmp = match (b.openmp, b.openmp_option) {
        (true, _) => "on".to_owned(),
        (false, "ON") => "off (GGML_OPENMP=ON, but CMake found no OpenMP)".to_owned(),
        (false, option) => format!("off (GGML_OPENMP={option})"),
    };
    format!("ggml build: {} {}, OpenMP {openmp}", b.build_type, b.opt_level.as_deref().unwrap_or("(no -O flag)"))
}

pub fn run(_args: Args) -> Result<()> {
    let (ggml, commit) = ggml_version();
    println!("gemma {}, ggml {ggml} ({commit})", env!("CARGO_PKG_VERSION"));
    println!("{}", build_line(&build_info()));
    println!("threads: {} (default for -t; the logical CPUs this process may use)", default_threads());
    for dev in Device::all() {
        let (free, total) = dev.memory();
        println!(
            "\ndevice {} [{}] {:?}: {} — memory {:.1} GiB free of {:.1} GiB",
            dev.name(),
            dev.backend_name(),
            dev.kind(),
            dev.description(),
            free as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        );
        let feats = backend_features(dev);
        let on: Vec<String> = feats
            .iter()
            .filter(|f| !(f.value.is_empty() || f.value == "0"))
            .map(|f| if f.value == "1" { f.name.clone() } else { format!("{}={}", f.name, f.value) })
            .collect();
        println!("  features: {}", if on.is_empty() { "(none reported)".into() } else { on.join(" ") });
    }
    // A GPU backend built in that registered no device: say so, rather than list nothing.
    for reg in backends().into_iter().filter(|r| r.devices == 0) {
        println!(
            "\nbackend {0}: built in, but no {0} device found on this machine (no GPU, or no driver for it; \
             `gemma -v system` shows ggml's reason)",
            reg.name
        );
    }
    Ok(())
}
