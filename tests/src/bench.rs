//! Small helpers shared by the benchmark examples (tests/examples): statistics, and the pause
//! between timed runs.
use std::time::Duration;

/// The pause before each timed run, in milliseconds. After a graph, ggml's pool workers poll
/// for new work (about 0.2 s at the default poll level) before they sleep, and on a 2-core
/// machine a spinning worker of the runtime that just finished slows the next one (without
/// the pause, the second runtime of each pair was 13% slower, whichever it was).
pub const SETTLE_MS: u64 = 500;

/// Sleeps [`SETTLE_MS`].
pub fn settle() {
    std::thread::sleep(Duration::from_millis(SETTLE_MS));
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64 } else { 0.0 };
    (m, var.sqrt())
}

/// The median (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
