# CMake toolchain for cross-building ggml (vendored by llama-cpp-sys-2) for 64-bit Arm Linux
# with Debian's cross compilers (gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu). Used through
# CMAKE_TOOLCHAIN_FILE in .cargo/aarch64-pi5.toml and .cargo/aarch64-pi4.toml.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)

# The -march of ggml's CPU kernels. llama-cpp-sys-2 0.1.161 (build.rs) pins
# GGML_CPU_ARM_ARCH=armv8-a on every non-native aarch64 Linux build, after forwarding our GGML_*
# variables, so a plain GGML_CPU_ARM_ARCH cannot raise it. A toolchain file is read during
# project(), after the command line has filled the cache, so this FORCE wins.
# GGML_CROSS_ARM_ARCH comes from the cargo config's [env] (llama-cpp-sys-2 forwards GGML_*
# variables to CMake and rebuilds when they change).
if(GGML_CROSS_ARM_ARCH)
  set(GGML_CPU_ARM_ARCH "${GGML_CROSS_ARM_ARCH}" CACHE STRING "ggml-cpu -march (cross build)" FORCE)
endif()
