//! Running the `gemma` binary in the command-line tests (gemma-cli/tests/): the command with
//! its standard input written and closed, so a `chat` session ends at end of input.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `gemma ARGS…` with `stdin` as its standard input and waits for it.
pub fn run(gemma: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(gemma)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gemma");
    let mut input = child.stdin.take().expect("piped stdin");
    // A command that exits before reading its input (a bad argument) closes the pipe.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait for gemma")
}

/// Output bytes as text (lossy, for messages and searches).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `gemma ARGS…` (no input), prints the command and its output, requires success;
/// returns (stdout, stderr).
pub fn ok(gemma: &Path, args: &[&str]) -> (String, String) {
    let out = run(gemma, args, b"");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("$ gemma {}\n{stdout}{stderr}", args.join(" "));
    assert!(out.status.success(), "gemma {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// A path as a command-line argument (the tests' paths are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `gemma sweep` on the tiny checkpoint folder `hf` (named `name`): converted to f16 and
/// q8_0 in a temporary folder, compared on a short text, and, within a generous KL budget,
/// the smaller file recommended with the f16 one as the base. Returns the sweep's folder.
pub fn sweep_recommends_q8(gemma: &Path, hf: &Path, name: &str, dir: &Path) -> std::path::PathBuf {
    let text = crate::workspace_root().join("tests/data/text/alice.txt");
    let out_dir = dir.join("sweep");
    let args = [
        "sweep",
        arg(hf),
        "--types",
        "f16,q8_0",
        "-f",
        arg(&text),
        "-o",
        arg(&out_dir),
        "-c",
        "32",
        "--chunks",
        "2",
        "-t",
        "1",
        "--kl-budget",
        "1000",
    ];
    let (stdout, _) = ok(gemma, &args);
    assert!(stdout.contains(&format!("base {name}-f16.gguf")), "the highest-precision file is the base");
    assert!(stdout.contains(&format!("recommended: {name}-q8_0.gguf")), "within a generous budget: the smaller");
    out_dir
}
