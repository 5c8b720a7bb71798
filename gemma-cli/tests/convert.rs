//! `gemma convert` and `gemma quantize` end to end: the summary table, overrides, the
//! requantisation guard, bad arguments, and the memory bound on the real checkpoint.
use gemma_tests::workspace_root;
use std::process::{Command, Output};

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).output().expect("spawn gemma")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tiny(arch: &str) -> String {
    workspace_root().join("tests/data/tiny").join(arch).to_string_lossy().into_owned()
}

#[test]
fn convert_prints_the_choice_per_tensor_and_quantize_guards_low_precision_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let mix = tmp.path().join("mix.gguf");
    let out = gemma(&[
        "convert",
        &tiny("gemma3"),
        "-o",
        mix.to_str().unwrap(),
        "--type",
        "q4_k_m",
        "--tensor-type",
        "ffn_up=q8_0",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), mix.to_str().unwrap());
    for needle in ["why", "tied embedding", "--tensor-type ffn_up=q8_0", "bits per weight", "types:", "peak RSS"] {
        assert!(stderr.contains(needle), "summary lacks {needle:?}");
    }

    // From a 4-bit file: refused without the flag, warned with it.
    let q8 = tmp.path().join("q8.gguf");
    let out = gemma(&["quantize", mix.to_str().unwrap(), q8.to_str().unwrap(), "--type", "q8_0"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--allow-requantize"), "{}", text(&out.stderr));
    assert!(!q8.exists());
    let out = gemma(&["quantize", mix.to_str().unwrap(), q8.to_str().unwrap(), "--type", "q8_0", "--allow-requantize"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: requantising from"), "{}", text(&out.stderr));

    // The output of quantize runs.
    let run = gemma(&["run", "-m", q8.to_str().unwrap(), "-p", "Hello", "-n", "4", "--temp", "0"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
}

#[test]
fn bad_arguments_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("x.gguf");
    let o = o.to_str().unwrap();
    for (args, needle) in [
        (vec!["convert", &tiny("gemma"), "-o", o, "--type", "q7"], "choose one of"),
        (vec!["convert", &tiny("gemma"), "-o", o, "--tensor-type", "nonsense"], "PATTERN=TYPE"),
        (vec!["convert", "/nonexistent", "-o", o], "not a directory"),
        (vec!["quantize", "/nonexistent.gguf", o], "nonexistent"),
    ] {
        let out = gemma(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Peak RSS of a conversion of the real 270M checkpoint stays below twice its largest tensor
/// in f32 (the 262 144 × 640 embedding: 640 MiB) plus 200 MiB.
#[test]
fn converting_the_real_checkpoint_stays_within_the_memory_bound() {
    let Some(dir) = gemma_tests::test_hf_checkpoint() else { return };
    let tmp = tempfile::tempdir_in(workspace_root().join("target")).unwrap();
    let out_path = tmp.path().join("m.gguf");
    let out = gemma(&["convert", dir.to_str().unwrap(), "-o", out_path.to_str().unwrap(), "--type", "q4_k_m"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let peak: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak RSS ")?.strip_suffix(" MiB")?.parse().ok())
        .expect("peak RSS line");
    let largest_f32 = 262144.0 * 640.0 * 4.0 / 1048576.0;
    let bound = 2.0 * largest_f32 + 200.0;
    println!("peak RSS {peak:.1} MiB, bound {bound:.0} MiB (2 × {largest_f32:.0} + 200)");
    assert!(peak < bound);
}

/// Gemma 1 and 2 through every command: converted from transformers' tiny checkpoints,
/// then `info`, `run`, `chat`, `bench` and `perplexity` on the result.
#[test]
fn gemma_1_and_2_work_in_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let text = workspace_root().join("tests/data/text/alice.txt");
    for arch in ["gemma", "gemma2"] {
        let m = tmp.path().join(format!("{arch}.gguf"));
        let m = m.to_str().unwrap();
        let ok = |args: &[&str], needle: &str| {
            let out = gemma(args);
            let all = format!("{}{}", text_of(&out.stdout), text_of(&out.stderr));
            assert!(out.status.success(), "{args:?}: {all}");
            assert!(all.contains(needle), "{args:?} lacks {needle:?}: {all}");
        };
        ok(&["convert", &tiny(arch), "-o", m, "--type", "q8_0", "-q"], m);
        ok(&["info", m], arch);
        ok(&["run", "-m", m, "-p", "Hello", "-n", "4", "--temp", "0"], "tokens/s");
        ok(&["bench", "-m", m, "-p", "16", "-n", "4", "-r", "1", "-t", "1"], "tg4");
        ok(&["perplexity", "-m", m, "-f", text.to_str().unwrap(), "-c", "64", "--chunks", "2"], "PPL = ");
        let out = Command::new(env!("CARGO_BIN_EXE_gemma"))
            .args(["chat", "-m", m, "-n", "4"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"Hi\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "chat on {arch}: {}", text_of(&out.stderr));
    }
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
