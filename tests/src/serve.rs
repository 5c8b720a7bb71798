//! Helpers for the `gemma serve` tests: start the binary on a free loopback port, and a
//! minimal HTTP/1.1 client over `TcpStream` (whole answers, chunked bodies, server-sent
//! events), so a test can also drop a connection in the middle of a stream.
use gemma_gguf::generate::generate;
use gemma_gguf::model::Model;
use gemma_gguf::sampler::{Sampler, SamplerParams};
use gemma_gguf::session::{Session, SessionOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// For a server test: a guard that runs the test binary's server tests one at a time (each
/// starts a server; the machine may have 2 cores), and the real model; `None`: skip.
pub fn setup() -> Option<(MutexGuard<'static, ()>, PathBuf)> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    Some((one, crate::test_model()?))
}

/// Load options for a reference model in a test: one compute thread, as the test servers run
/// (see [`ServeProcess::start`]; ggml's results do not depend on the thread count).
pub fn one_thread() -> gemma_gguf::model::LoadOptions {
    gemma_gguf::model::LoadOptions { threads: Some(1), ..Default::default() }
}

/// Short text prompts of the server tests, each with a clear greedy continuation.
pub const PROMPTS: [&str; 6] = [
    "The capital of France is",
    "Water boils at a temperature of",
    "def fibonacci(n):",
    "The three primary colours are",
    "Once upon a time, in a small village,",
    "The largest planet in the solar system is",
];

/// A text prompt's tokens as the server makes them (BOS where the model adds one).
pub fn text_ids(model: &Model, prompt: &str) -> Vec<u32> {
    let tok = model.tokenizer();
    tok.encode(prompt, tok.adds_bos())
}

/// The library's greedy continuation of `ids` from an empty cache of `n_ctx` tokens: what
/// the server must answer for the same prompt.
pub fn greedy(model: &Model, n_ctx: u32, ids: &[u32], max_tokens: usize) -> String {
    let mut session = Session::new(model, SessionOptions { n_ctx, ..SessionOptions::default() }).unwrap();
    let mut sampler = Sampler::new(SamplerParams::greedy()).unwrap();
    let mut text = String::new();
    generate(&mut session, &mut sampler, ids, max_tokens, |t| {
        text.push_str(t);
        true
    })
    .unwrap();
    text
}

/// The project's Python with the `openai` package (for the client scripts), or `None` with
/// a notice; under CI a failure.
pub fn python_with_openai() -> Option<PathBuf> {
    let py =
        crate::python().filter(|p| Command::new(p).args(["-c", "import openai"]).status().is_ok_and(|s| s.success()));
    if py.is_none() {
        assert!(!crate::in_ci(), "CI=true: no Python with `openai` (python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt)");
        eprintln!("notice: no Python with the openai package (.venv or $GEMMA_PYTHON); skipping");
    }
    py
}

/// A running `gemma serve`, killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// What the server wrote to stderr after the address line, collected by a thread.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    /// Starts `gemma serve -m MODEL --port 0 ARGS…` and waits for its address. One compute
    /// thread unless ARGS say `-t`: on a shared 2-core machine ggml's second thread spins at a
    /// barrier whenever another process holds a core, and a step then takes several times
    /// longer (measured: 6 instead of 27 tokens/s), which would make the timings flaky.
    pub fn start(gemma: &Path, model: &Path, args: &[&str]) -> ServeProcess {
        let threads: &[&str] = if args.contains(&"-t") { &[] } else { &["-t", "1"] };
        let mut child = Command::new(gemma)
            .args(["serve", "-m"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(threads)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting gemma serve");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = String::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(a) = line.strip_prefix("listening on http://") {
                        break a.parse::<SocketAddr>().expect("an address after `listening on`");
                    }
                }
                _ => {
                    let status = child.wait();
                    panic!("gemma serve ended before listening ({status:?}):\n{seen}");
                }
            }
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        ServeProcess { child, addr, log }
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Reply {
        request(self.addr, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    /// A sample of `GET /metrics` (e.g. `gemma_sequences_active`), `NaN` when absent.
    pub fn metric(&self, name: &str) -> f64 {
        let page = self.get("/metrics").body;
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// The server process's resident memory (`VmRSS` of /proc/PID/status) in KiB; `None`
    /// where /proc is missing or the process has ended.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Polls `name` until it equals `want` (5 s at most); returns the last value seen.
    pub fn wait_metric(&self, name: &str, want: f64) -> f64 {
        let start = Instant::now();
        loop {
            let v = self.metric(name);
            if v == want || start.elapsed() > Duration::from_secs(5) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `data:` payloads of a server-sent-events body.
    pub fn events(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
            .map(String::from)
            .collect()
    }
}

/// Sends one greedy `/v1/completions` request per prompt, all at once from their own threads,
/// and returns the replies in the prompts' order.
pub fn parallel_completions(addr: SocketAddr, prompts: &[&str], max_tokens: u32) -> Vec<Reply> {
    let threads: Vec<_> = prompts
        .iter()
        .map(|p| {
            let body = serde_json::json!({ "prompt": p, "max_tokens": max_tokens, "temperature": 0 }).to_string();
            std::thread::spawn(move || request(addr, "POST", "/v1/completions", &[], body.as_bytes()))
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a request thread")).collect()
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connecting to the server");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

/// Parses a whole HTTP/1.1 answer, undoing chunked transfer encoding.
pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Reply { status, headers, body: String::from_utf8(body).expect("a UTF-8 body") }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// Opens a streamed request and returns the connection after the response head, for a
/// test that reads part of the stream and then hangs up.
pub fn open_stream(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> (u16, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).expect("connecting to the server");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.to_string();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
    }
    (status, r)
}
