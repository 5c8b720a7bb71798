//! What the linked ggml is and what it detected on this machine.
use super::backend::Device;
use super::sys;
use std::ffi::{CStr, CString};

/// ggml's version string and commit (`ggml_version`, `ggml_commit`).
pub fn ggml_version() -> (String, String) {
    // SAFETY: both return static NUL-terminated strings.
    unsafe {
        (
            CStr::from_ptr(sys::ggml_version()).to_string_lossy().into_owned(),
            CStr::from_ptr(sys::ggml_commit()).to_string_lossy().into_owned(),
        )
    }
}

/// One feature a backend reports (`AVX2 = 1`, `NEON = 1`, `CUDA_ARCH = 900`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFeature {
    pub name: String,
    pub value: String,
}

/// The features `device`'s backend reports through `ggml_backend_get_features` (for the
/// CPU backend: the instruction sets it was built with and detected at run time).
pub fn backend_features(device: Device) -> Vec<BackendFeature> {
    let name = CString::new("ggml_backend_get_features").expect("static name");
    // SAFETY: registry lookup of an optional function; null means none.
    let f = unsafe { sys::ggml_backend_reg_get_proc_address(device.reg(), name.as_ptr()) };
    if f.is_null() {
        return Vec::new();
    }
    // SAFETY: ggml documents this symbol with the `ggml_backend_get_features_t` type.
    let f: sys::ggml_backend_get_features_t = unsafe { std::mem::transmute(f) };
    let Some(f) = f else { return Vec::new() };
    let mut out = Vec::new();
    // SAFETY: returns a static array terminated by an entry whose name is null.
    unsafe {
        let mut p = f(device.reg());
        while !p.is_null() && !(*p).name.is_null() {
            out.push(BackendFeature {
                name: CStr::from_ptr((*p).name).to_string_lossy().into_owned(),
                value: if (*p).value.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr((*p).value).to_string_lossy().into_owned()
                },
            });
            p = p.add(1);
        }
    }
    out
}

/// A backend compiled into the linked ggml and the number of devices it found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReg {
    /// The registry's name: `CPU`, `CUDA`, `Vulkan`.
    pub name: String,
    /// Devices it registered: 0 for a GPU backend that is built in but found no device here
    /// (ggml's CUDA backend registers none when the CUDA runtime finds no driver or no GPU).
    pub devices: usize,
}

/// Every backend in ggml's registry (CPU always; CUDA and Vulkan when built in), with its
/// device count (`ggml_backend_reg_count`, `ggml_backend_reg_dev_count`).
pub fn backends() -> Vec<BackendReg> {
    // SAFETY: registry queries; indices in bounds; registries live as long as the process.
    let n = unsafe { sys::ggml_backend_reg_count() };
    (0..n)
        .filter_map(|i| {
            let reg = unsafe { sys::ggml_backend_reg_get(i) };
            if reg.is_null() {
                return None;
            }
            let name = unsafe { sys::ggml_backend_reg_name(reg) };
            let name = if name.is_null() {
                String::new()
            } else {
                unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
            };
            Some(BackendReg { name, devices: unsafe { sys::ggml_backend_reg_dev_count(reg) } })
        })
        .collect()
}

/// What to add to "no such device" for `name`: the backends built in that found no device
/// here, or, for a CUDA/Vulkan name in a build without that backend, the feature to build with.
pub(crate) fn missing_device_hint(name: &str) -> String {
    let regs = backends();
    let empty: Vec<&str> = regs.iter().filter(|r| r.devices == 0).map(|r| r.name.as_str()).collect();
    let mut hint = String::new();
    if !empty.is_empty() {
        hint = format!("; built in but no device found on this machine: {}", empty.join(", "));
    }
    // (the feature, which is also the device names' prefix, and the registry's name)
    for (feature, backend) in [("cuda", "CUDA"), ("vulkan", "Vulkan")] {
        let built_in = regs.iter().any(|r| r.name.eq_ignore_ascii_case(backend));
        if name.to_ascii_lowercase().starts_with(feature) && !built_in {
            hint += &format!("; this build has no {backend} backend (build with --features {feature})");
        }
    }
    hint
}

/// The thread count used when none is given: the logical CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(super::backend::MAX_THREADS)
}

/// How the linked ggml was built: read from llama-cpp-sys-2's CMake cache at build time
/// (ggml-sys/build.rs) and, for OpenMP, from the CPU backend's own feature list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// `CMAKE_BUILD_TYPE`: `Release` in every build the workspace makes (Cargo.toml).
    pub build_type: &'static str,
    /// The C optimisation level in effect: the last `-O…` of the build's C flags.
    pub opt_level: Option<String>,
    /// The `GGML_OPENMP` option as CMake saw it.
    pub openmp_option: &'static str,
    /// Whether the CPU backend was compiled with OpenMP (its `OPENMP` feature): the option
    /// is on *and* CMake found OpenMP.
    pub openmp: bool,
}

/// ggml's build type, optimisation level and OpenMP state.
pub fn build_info() -> BuildInfo {
    let openmp = Device::all()
        .into_iter()
        .filter(|d| d.kind() == super::DeviceKind::Cpu)
        .flat_map(backend_features)
        .any(|f| f.name == "OPENMP" && f.value == "1");
    BuildInfo {
        build_type: sys::BUILD_TYPE,
        opt_level: last_opt_level(sys::C_FLAGS),
        openmp_option: sys::OPENMP_OPTION,
        openmp,
    }
}

/// The last `-O…` flag of a compiler command line, which is the one GCC and Clang obey.
fn last_opt_level(flags: &str) -> Option<String> {
    flags.split_whitespace().rfind(|f| f.starts_with("-O")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "No such device" names what is missing: a GPU backend built in without a device here,
    /// or the feature to build with when the backend is not in this build.
    #[test]
    fn missing_device_hint_names_the_backend() {
        let regs = backends();
        println!("backends: {regs:?}");
        assert!(regs.iter().any(|r| r.name == "CPU" && r.devices >= 1), "{regs:?}");
        let hint = missing_device_hint("cuda0");
        match regs.iter().find(|r| r.name == "CUDA") {
            None => assert!(hint.contains("no CUDA backend (build with --features cuda)"), "{hint}"),
            Some(r) if r.devices == 0 => assert!(hint.contains("no device found on this machine: CUDA"), "{hint}"),
            Some(_) => assert!(!hint.contains("CUDA"), "{hint}"),
        }
        assert_eq!(cfg!(feature = "cuda"), regs.iter().any(|r| r.name == "CUDA"), "{regs:?}");
    }

    #[test]
    fn last_opt_level_is_the_one_that_wins() {
        assert_eq!(last_opt_level("-O2 -g -ffunction-sections -O3 -DNDEBUG").as_deref(), Some("-O3"));
        assert_eq!(last_opt_level("-fPIC -O2 -g -DNDEBUG").as_deref(), Some("-O2"));
        assert_eq!(last_opt_level("-fPIC"), None);
    }

    /// ggml must be built as llama.cpp's releases build it, in this build as in a user's
    /// `cargo build --release` (Cargo.toml turns debug information off for llama-cpp-sys-2 in
    /// both profiles): `Release` at -O3, with OpenMP on Linux, where llama.cpp enables it.
    /// RelWithDebInfo (-O2 -g), the build type before, made prompt processing about 0.72× a
    /// native llama.cpp build's (issue "Speed against llama.cpp as its users build it").
    #[test]
    fn ggml_is_a_release_build_with_openmp() {
        let info = build_info();
        println!("ggml build: {info:?}; C flags: {}", sys::C_FLAGS);
        assert_eq!(info.build_type, "Release", "ggml's CMake build type (C flags: {})", sys::C_FLAGS);
        assert_eq!(info.opt_level.as_deref(), Some("-O3"), "ggml's C flags: {}", sys::C_FLAGS);
        if cfg!(all(target_os = "linux", feature = "openmp")) {
            assert_eq!(info.openmp_option, "ON");
            assert!(info.openmp, "GGML_OPENMP is ON but the CPU backend has no OPENMP feature: was libgomp found?");
        }
    }
}
