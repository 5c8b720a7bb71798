#!/usr/bin/env bash
# Installs what the `vulkan` feature build and its tests need, on Debian 12 and newer Debian or
# Ubuntu, and prints the folder to export as VULKAN_SDK (nothing when the system's own headers
# are new enough).
#
#   export VULKAN_SDK=$(scripts/setup-vulkan.sh)   # then: cargo build --release -p gemma-cli --features vulkan
#   scripts/setup-vulkan.sh --dry-run              # say what would be installed or fetched; change nothing
#
# Its standard output is that folder alone (or nothing); everything else goes to stderr.
#
# What ggml's Vulkan backend needs (llama-cpp-sys-2 0.1.161, llama.cpp/ggml/src/ggml-vulkan/
# CMakeLists.txt and ggml-vulkan.cpp):
#   - glslc, the shader compiler (`find_package(Vulkan COMPONENTS glslc)`): Debian's `glslc`;
#   - the Vulkan headers with `VK_EXT_layer_settings` (ggml-vulkan.cpp uses its structures),
#     which Debian 12's libvulkan-dev 1.3.239 lacks (added in 1.3.261);
#   - SPIRV-Headers with their CMake package (`find_package(SPIRV-Headers CONFIG)`);
#   - the loader, libvulkan.so.1 (`libvulkan1`), linked as -lvulkan (llama-cpp-sys-2's build.rs,
#     which also adds $VULKAN_SDK/lib to the link search path);
#   - a Vulkan driver to run on. Without a GPU: Mesa's lavapipe (`mesa-vulkan-drivers`), a
#     conforming Vulkan implementation on the CPU; its device is called `llvmpipe`.
#
# When the system headers lack VK_EXT_layer_settings (Debian 12), the newer headers are taken
# from Debian 13 ("trixie"), the same Debian archive: `apt-get download` with a private sources
# list fetches the two header packages (libvulkan-dev, spirv-headers; headers and CMake files only)
# into target/vulkan-sdk/ (git-ignored), `dpkg-deb -x` unpacks them there, and nothing is
# installed into the system from trixie. FindVulkan and ggml's CMake read $VULKAN_SDK
# (include/, lib/ and the CMake prefix), so the build needs only that one variable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry_run=false
[ "${1:-}" = "--dry-run" ] && dry_run=true
say() { echo "setup-vulkan: $*" >&2; }

# The first header version with VK_EXT_layer_settings (Vulkan-Headers' registry, vk.xml).
min_header=261
sdk=$PWD/target/vulkan-sdk

# 1. Packages from the system's own release: glslc, the loader, lavapipe.
need=()
command -v glslc >/dev/null 2>&1 || need+=(glslc)
ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 ' || need+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
if [ ${#need[@]} -gt 0 ]; then
  if $dry_run; then
    printf 'install %s\n' "${need[@]}"
  else
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null 2>&1 || { say "run as root, or install sudo, to install: ${need[*]}"; exit 1; }
      sudo="sudo"
    fi
    say "installing ${need[*]}"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
  fi
fi

# The VK_HEADER_VERSION of the vulkan_core.h in $1 (0 when absent).
header_version() {
  local h=$1/vulkan/vulkan_core.h
  [ -f "$h" ] || { echo 0; return; }
  sed -n 's/^#define VK_HEADER_VERSION \([0-9]*\)$/\1/p' "$h"
}

# 2. Headers: the system's when new enough and SPIRV-Headers' CMake package is there too.
spirv_cmake() { ls "$1"/share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake >/dev/null 2>&1; }
if [ "$(header_version /usr/include)" -ge $min_header ] && spirv_cmake /usr; then
  say "system Vulkan headers 1.x.$(header_version /usr/include) are new enough; no VULKAN_SDK needed"
  exit 0
fi
if [ "$(header_version "$sdk/usr/include")" -ge $min_header ] && spirv_cmake "$sdk/usr" \
   && [ -e "$sdk/usr/lib/libvulkan.so" ]; then
  say "using $sdk/usr (Vulkan headers 1.x.$(header_version "$sdk/usr/include"), from Debian 13)"
  echo "$sdk/usr"
  exit 0
fi
if $dry_run; then
  echo "fetch libvulkan-dev spirv-headers from Debian 13 (trixie) into $sdk"
  exit 0
fi

# 3. Fetch Debian 13's header packages into the private prefix (no system change).
say "system Vulkan headers are 1.x.$(header_version /usr/include) (need >= 1.3.$min_header):" \
    "fetching Debian 13's libvulkan-dev and spirv-headers into $sdk"
rm -rf "$sdk"
apt_dir=$sdk/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
cat > "$apt_dir/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOF
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
          -o "APT::Architecture=amd64" -o "APT::Architectures=amd64" -o "Debug::NoLocking=1"
          -o "APT::Sandbox::User=root")
# stdout carries only the folder printed at the end: apt's own lines ("Get:1 …") go to stderr.
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download libvulkan-dev spirv-headers >&2)
for deb in "$apt_dir"/debs/*.deb; do
  say "unpacking $(basename "$deb")"
  dpkg-deb -x "$deb" "$sdk"
done
# The loader itself is the system's libvulkan.so.1 (the headers only describe the API; the
# loader negotiates versions at run time). FindVulkan and build.rs look in $VULKAN_SDK/lib.
mkdir -p "$sdk/usr/lib"
loader=$(ldconfig -p | sed -n 's/.*libvulkan\.so\.1 (libc6,x86-64) => \(.*\)$/\1/p' | head -1)
[ -n "$loader" ] || loader=$(ldconfig -p | sed -n 's/.*libvulkan\.so\.1 .*=> \(.*\)$/\1/p' | head -1)
[ -n "$loader" ] || { say "no libvulkan.so.1 found (install libvulkan1)"; exit 1; }
ln -sf "$loader" "$sdk/usr/lib/libvulkan.so"
v=$(header_version "$sdk/usr/include")
[ "$v" -ge $min_header ] || { say "Debian 13's headers are 1.x.$v, still too old"; exit 1; }
spirv_cmake "$sdk/usr" || { say "spirv-headers has no CMake package in $sdk/usr/share/cmake"; exit 1; }
say "Vulkan headers 1.x.$v in $sdk/usr"
echo "$sdk/usr"
