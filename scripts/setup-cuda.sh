#!/usr/bin/env bash
# The CUDA toolkit for building ggml's CUDA backend (`--features cuda`), from NVIDIA's wheels on
# PyPI (scripts/requirements-cuda.txt: CUDA 13.0, nvcc, its headers, cudart, cuBLAS), installed
# into .cuda/ at the repository root (ignored by git): no driver, no GPU and no root needed.
#
#   scripts/setup-cuda.sh          # install once (a stamp keeps the requirements' hash), check
#                                  # that nvcc compiles and links, print the CUDA home folder
#   . .cuda/env.sh                 # then: the environment the build and the binary need
#
# The wheels unpack into one CUDA_HOME-like folder, .cuda/site/nvidia/cu13 (bin/nvcc,
# include/, lib/, nvvm/); CMake's FindCUDAToolkit and enable_language(CUDA) accept it once
# three things a full toolkit has are added there:
# - lib64 -> lib, where nvcc.profile's link line looks (-L$(TOP)/lib64);
# - unversioned libcudart.so, libcublas.so, libcublasLt.so, which CMake's find_library wants;
# - lib/stubs/libcublas_static.a and libcublasLt_static.a, empty archives: llama-cpp-sys-2
#   0.1.161 (build.rs) links cuBLAS statically on Linux, but the wheels carry only the shared
#   library; ggml-sys/build.rs links that instead (see link_shared_cublas there).
#   find_cuda_helper, which llama-cpp-sys-2 asks for link folders, adds <base>/lib64/stubs.
#
# .cuda/env.sh exports CUDA_PATH, CUDAToolkit_ROOT, CUDACXX, CMAKE_CUDA_COMPILER (llama-cpp-sys-2
# passes CMAKE_* variables on to CMake), CUDA_LIBRARY_PATH (find_cuda_helper's base folders),
# PATH (nvcc) and LD_LIBRARY_PATH (libcublas.so.13 and libcublasLt.so.13, which a binary built
# this way loads at start; libcudart is linked in statically).
#
# Environment: GEMMA_CUDA_PREFIX, the folder (default: <repo>/.cuda).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${GEMMA_CUDA_PREFIX:-$repo/.cuda}
req=$repo/scripts/requirements-cuda.txt
home=$prefix/site/nvidia/cu13
say() { echo "setup-cuda: $*" >&2; }

stamp=$prefix/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$home/bin/nvcc" ]; then
  py=$("$repo/scripts/venv.sh")
  say "installing $(grep -c '^[a-z]' "$req") wheels of scripts/requirements-cuda.txt into $prefix/site (about 450 MB to download, 850 MB installed)"
  rm -rf "$prefix/site"
  mkdir -p "$prefix"
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$prefix/site" -r "$req" >&2
  echo "$want" >"$stamp"
fi

# The three additions (see above); idempotent.
ln -sfn lib "$home/lib64"
for l in cudart cublas cublasLt; do
  ln -sfn "lib$l.so.13" "$home/lib/lib$l.so"
done
mkdir -p "$home/lib/stubs"
for l in cublas cublasLt; do
  [ -f "$home/lib/stubs/lib${l}_static.a" ] || ar rc "$home/lib/stubs/lib${l}_static.a"
done

cat >"$prefix/env.sh" <<EOF
# Written by scripts/setup-cuda.sh: the environment for building and running with CUDA.
export CUDA_PATH="$home"
export CUDAToolkit_ROOT="$home"
export CUDACXX="$home/bin/nvcc"
export CMAKE_CUDA_COMPILER="$home/bin/nvcc"
export CUDA_LIBRARY_PATH="$home"
export PATH="$home/bin:\$PATH"
export LD_LIBRARY_PATH="$home/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF

# nvcc must compile device code for a real architecture and link it with the static runtime,
# with this machine's host compiler; the program runs here without a GPU and reports none.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
cat >"$check/check.cu" <<'EOF'
#include <cstdio>
#include <cuda_runtime.h>
__global__ void twice(float *x) { x[threadIdx.x] *= 2.0f; }
int main() {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    std::printf("CUDA runtime %d: %d device(s)%s%s\n", CUDART_VERSION, e == cudaSuccess ? n : 0,
                e == cudaSuccess ? "" : ", ", e == cudaSuccess ? "" : cudaGetErrorString(e));
    return 0;
}
EOF
if ! "$home/bin/nvcc" -arch=sm_80 -o "$check/check" "$check/check.cu" >&2; then
  say "nvcc from $home cannot compile a trivial kernel (host compiler: $(c++ --version | head -1))"
  exit 1
fi
say "nvcc $("$home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), host compiler $(c++ --version | head -1); check program: $("$check/check")"
echo "$home"
