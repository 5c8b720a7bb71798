//! `gemma run` / `gemma chat` with `--json-schema`, `--grammar`, `--regex` on the real model,
//! and each bad constraint as a clear error.
use std::process::Output;

fn gemma(args: &[&str], stdin: &[u8]) -> Output {
    gemma_tests::cli::run(std::path::Path::new(env!("CARGO_BIN_EXE_gemma")), args, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_and_chat_follow_the_constraint() {
    let Some(m) = gemma_tests::test_model() else { return };
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":16},
        "age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}"#;
    let schema_file = dir.path().join("person.json");
    std::fs::write(&schema_file, schema).unwrap();
    let grammar = dir.path().join("answer.lark");
    std::fs::write(&grammar, "start: (\"yes\" | \"no\") \".\"\n").unwrap();
    let common = ["-m", m, "-t", "1", "--temp", "1", "--seed", "3", "--no-echo"];
    for flag in [["--json-schema", schema], ["--json-schema", schema_file.to_str().unwrap()]] {
        let out = gemma(
            &[&["run"], &common[..], &["-n", "64", "--chat-format", "-p", "A person as JSON"], &flag].concat(),
            b"",
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout:?}: {e}"));
        assert!(v["name"].is_string() && v["age"].as_u64().is_some_and(|a| a <= 120), "{v}");
        assert!(text(&out.stderr).contains("stop: end of generation"), "stopped when complete");
    }
    let out = gemma(&[&["run"], &common[..], &["-n", "8", "-p", "Is water wet?", "--regex", "(yes|no)"]].concat(), b"");
    assert!(out.status.success());
    assert!(["yes", "no"].contains(&text(&out.stdout).trim()), "{:?}", text(&out.stdout));
    let out =
        gemma(&["chat", "-m", m, "-t", "1", "-n", "8", "--grammar", grammar.to_str().unwrap()], b"Hi\nIs fire hot?\n");
    let replies: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies.iter().all(|r| r == "yes." || r == "no."), "{replies:?}");
}

#[test]
fn bad_constraints_are_clear_errors() {
    let Some(m) = gemma_tests::test_model() else { return };
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("{{\"enum\": [{}]}}", vec!["\"xxxxxxxx\""; 40_000].join(","))).unwrap();
    let deep = format!("{}{}{}", "{\"type\":\"array\",\"items\":".repeat(100), "{}", "}".repeat(100));
    let base = ["run", "-m", m, "-p", "x", "-n", "4"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--json-schema", "{not json"], "not JSON"),
        (vec!["--json-schema", "/nonexistent/schema.json"], "/nonexistent/schema.json"),
        (vec!["--json-schema", big.to_str().unwrap()], "at most"),
        (vec!["--json-schema", &deep], "nested"),
        (vec!["--json-schema", r#"{"type":"integer","minimum":3,"maximum":1}"#], "JSON schema"),
        (vec!["--json-schema", r##"{"$ref":"#"}"##], "no output"),
        (vec!["--grammar", "/nonexistent.lark"], "/nonexistent.lark"),
        (vec!["--regex", "a("], "regex"),
        (vec!["--regex", "a", "--json-schema", "{}"], "cannot be used with"),
    ];
    for (flags, needle) in cases {
        let args = [&base[..], &flags].concat();
        let out = gemma(&args, b"");
        let stderr = text(&out.stderr);
        let last = stderr.lines().last().unwrap_or("");
        println!("{:?} → {}", &flags[..1], &last[..last.len().min(200)]);
        assert!(!out.status.success() && !stderr.contains("panicked"), "{flags:?}: {stderr}");
        assert!(stderr.contains(needle), "{flags:?}: {stderr} lacks {needle}");
    }
}
