//! Counters and gauges shared by the handlers and the inference thread, rendered as
//! Prometheus' text format (version 0.0.4) at `GET /metrics`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// The endpoints counted in `gemma_requests_total{endpoint=…}`.
pub const ENDPOINTS: [&str; 5] = ["chat_completions", "completions", "models", "health", "metrics"];

#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; ENDPOINTS.len()],
    errors: Mutex<BTreeMap<&'static str, u64>>,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens found in a sequence's cache and not computed again.
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Requests whose client went away before the end.
    pub cancelled: AtomicU64,
    /// Time the inference thread spent computing, in nanoseconds.
    pub busy_ns: AtomicU64,
    /// Requests accepted and waiting for a sequence.
    pub queued: AtomicUsize,
    /// Sequences generating now.
    pub active: AtomicUsize,
    /// KV cache cells holding a token, over every sequence.
    pub kv_cells_used: AtomicUsize,
    pub kv_cells_total: AtomicUsize,
}

impl Metrics {
    pub fn request(&self, endpoint: &str) {
        if let Some(i) = ENDPOINTS.iter().position(|&e| e == endpoint) {
            self.requests[i].fetch_add(1, Relaxed);
        }
    }

    pub fn error(&self, kind: &'static str) {
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
    }

    pub fn errors(&self, kind: &str) -> u64 {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).get(kind).copied().unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        family(&mut out, "gemma_requests_total", "counter", "HTTP requests received, by endpoint.");
        for (e, n) in ENDPOINTS.iter().zip(&self.requests) {
            let _ = writeln!(out, "gemma_requests_total{{endpoint=\"{e}\"}} {}", n.load(Relaxed));
        }
        family(&mut out, "gemma_errors_total", "counter", "Requests answered with an error, by kind.");
        for (kind, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "gemma_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let busy = self.busy_ns.load(Relaxed) as f64 / 1e9;
        let completion = self.completion_tokens.load(Relaxed);
        let tps = if busy > 0.0 { completion as f64 / busy } else { 0.0 };
        let n = |a: &AtomicU64| a.load(Relaxed).to_string();
        let g = |a: &AtomicUsize| a.load(Relaxed).to_string();
        let scalars: [(&str, &str, &str, String); 10] = [
            ("gemma_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", n(&self.prompt_tokens)),
            (
                "gemma_prompt_tokens_cached_total",
                "counter",
                "Prompt tokens reused from a sequence's cache.",
                n(&self.cached_tokens),
            ),
            ("gemma_completion_tokens_total", "counter", "Tokens generated.", completion.to_string()),
            (
                "gemma_requests_cancelled_total",
                "counter",
                "Requests whose client disconnected before the end.",
                n(&self.cancelled),
            ),
            ("gemma_busy_seconds_total", "counter", "Time the inference thread spent computing.", format!("{busy:.6}")),
            (
                "gemma_tokens_per_second",
                "gauge",
                "Generated tokens per second of inference time, since start.",
                format!("{tps:.3}"),
            ),
            ("gemma_queue_length", "gauge", "Requests waiting for a free sequence.", g(&self.queued)),
            ("gemma_sequences_active", "gauge", "Sequences generating now.", g(&self.active)),
            ("gemma_kv_cells_used", "gauge", "KV cache cells holding a token, all sequences.", g(&self.kv_cells_used)),
            ("gemma_kv_cells_total", "gauge", "KV cache cells, all sequences.", g(&self.kv_cells_total)),
        ];
        for (name, ty, help, value) in scalars {
            family(&mut out, name, ty, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn family(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

/// The value of the sample `name` (with its labels, as written) in a Prometheus text page.
pub fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_every_family_with_its_values() {
        let m = Metrics::default();
        m.request("completions");
        m.request("completions");
        m.request("nope");
        m.error("queue_full");
        m.completion_tokens.store(50, Relaxed);
        m.busy_ns.store(2_000_000_000, Relaxed);
        m.queued.store(3, Relaxed);
        let page = m.render();
        assert_eq!(sample(&page, "gemma_requests_total{endpoint=\"completions\"}"), Some(2.0));
        assert_eq!(sample(&page, "gemma_requests_total{endpoint=\"health\"}"), Some(0.0));
        assert_eq!(sample(&page, "gemma_errors_total{kind=\"queue_full\"}"), Some(1.0));
        assert_eq!(sample(&page, "gemma_tokens_per_second"), Some(25.0));
        assert_eq!(sample(&page, "gemma_queue_length"), Some(3.0));
        // Every sample line belongs to a family declared by # TYPE before it.
        let mut declared = Vec::new();
        for l in page.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let family = l.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(family), "{l}");
            }
        }
    }
}
