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
