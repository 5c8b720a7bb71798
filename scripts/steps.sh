# Step timing for the check scripts (scripts/ci-vulkan.sh, scripts/ci-cuda.sh), sourced after
# setting `steps_name`: `step_done WHAT` prints how long the step took and the total so far;
# `steps_total` prints the whole time.
t_all=$(date +%s)
t_step=$t_all
step_done() {
  local now
  now=$(date +%s)
  echo "$steps_name: $1 took $((now - t_step)) s (total $((now - t_all)) s)" >&2
  t_step=$now
}
steps_total() {
  echo "$steps_name: done in $(($(date +%s) - t_all)) s" >&2
}
# `release_ggml_check WHAT SYSTEM`: fails (exit 1) unless SYSTEM, the output of `gemma system`,
# says that ggml was built as llama.cpp's releases build it: Release at -O3, OpenMP on
# (issue 23; .ci/run checks the demo's build the same way).
release_ggml_check() {
  local line
  line=$(grep '^ggml build:' <<<"$2" || true)
  if [ "$line" != "ggml build: Release -O3, OpenMP on" ]; then
    echo "$steps_name: FAILED: $1: ggml is not built as llama.cpp's releases build it (${line:-no 'ggml build:' line}; want 'Release -O3, OpenMP on')" >&2
    exit 1
  fi
}
