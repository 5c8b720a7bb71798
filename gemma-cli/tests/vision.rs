//! `gemma run --mmproj --image` and `gemma chat --mmproj` with `/image`, end to end on the tiny
//! random Gemma 3 and Gemma 4 vision checkpoints (tests/data/tiny/gemma3-vision,
//! tests/data/tiny/gemma4-vision) converted by `gemma convert --mmproj`, and their bad inputs.
//! The logits themselves are checked against transformers and libmtmd in
//! tests/tests/vision_lm.rs and vision_lm_gemma4.rs; here: the image reaches the model
//! (another image, or the image elsewhere, changes the top logits), markers place images,
//! and every bad input is a one-line error.
use std::path::{Path, PathBuf};
use std::process::Output;

fn gemma(args: &[&str], stdin: Option<&[u8]>) -> Output {
    gemma_tests::cli::run(Path::new(env!("CARGO_BIN_EXE_gemma")), args, stdin.unwrap_or_default())
}

use gemma_tests::cli::text;

fn tiny(name: &str) -> PathBuf {
    gemma_tests::workspace_root().join("tests/data/tiny").join(name)
}

fn image(name: &str) -> String {
    tiny("gemma3-vision/images").join(name).to_str().unwrap().to_string()
}

/// The tiny vision checkpoint as a text GGUF (f32) and a projector (f16), by the CLI.
struct Files {
    dir: tempfile::TempDir,
    model: String,
    mmproj: String,
}

fn convert() -> Files {
    convert_from("gemma3-vision")
}

/// [`convert`] of the tiny checkpoint `name`.
fn convert_from(name: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf").to_str().unwrap().to_string();
    let mmproj = dir.path().join("mmproj.gguf").to_str().unwrap().to_string();
    let src = tiny(name);
    let out = gemma(&["convert", src.to_str().unwrap(), "-o", &model, "-t", "f32", "--mmproj", &mmproj, "-q"], None);
    assert!(out.status.success(), "convert: {}", text(&out.stderr));
    Files { dir, model, mmproj }
}

/// `gemma run` greedy on the tiny model with `extra` flags; (success, the `top` lines, stderr).
fn run(f: &Files, prompt: &str, extra: &[&str]) -> (bool, Vec<String>, String) {
    let mut args = vec!["run", "-m", &f.model, "--mmproj", &f.mmproj, "-p", prompt, "-n", "3", "--temp", "0"];
    args.extend(["-t", "2", "--no-echo", "--show-top", "5"]);
    args.extend(extra);
    let out = gemma(&args, None);
    let stderr = text(&out.stderr);
    let top = stderr.lines().filter(|l| l.starts_with("top ")).map(str::to_string).collect();
    (out.status.success(), top, stderr)
}

#[test]
fn run_feeds_images_where_the_prompt_says() {
    let f = convert();
    let (a, b) = (image("exact-64x64.png"), image("exact2-64x64.png"));
    let (ok, base, stderr) = run(&f, "What is this?", &["--image", &a]);
    println!("{stderr}");
    assert!(ok && stderr.contains("images: 1 encoded"), "{stderr}");
    assert_eq!(base.len(), 3);
    // The encoder's f32-score attention instead of the fused kernel runs too; a bad value is named.
    let (ok, plain_attn, stderr) = run(&f, "What is this?", &["--image", &a, "--mmproj-flash-attn", "off"]);
    assert!(ok && plain_attn.len() == 3, "{stderr}");
    let (ok, _, stderr) = run(&f, "What is this?", &["--image", &a, "--mmproj-flash-attn", "maybe"]);
    assert!(!ok && stderr.contains("--mmproj-flash-attn"), "{stderr}");
    // No marker: the image goes first, as with the marker first.
    let (ok, first, _) = run(&f, "<__media__>What is this?", &["--image", &a]);
    assert!(ok);
    assert_eq!(first, base, "no marker = images before the text");
    // Another image, or the image after the text, changes what the model sees.
    let (ok, other, _) = run(&f, "What is this?", &["--image", &b]);
    assert!(ok);
    assert_ne!(other, base, "another image gives the same logits");
    let (ok, after, _) = run(&f, "What is this?<__media__>", &["--image", &a]);
    assert!(ok);
    assert_ne!(after, base, "the marker does not move the image");
    // Two images, in the order given.
    let (ok, ab, stderr) = run(&f, "<__media__> and <__media__>?", &["--image", &a, "--image", &b]);
    assert!(ok, "{stderr}");
    let (ok, ba, _) = run(&f, "<__media__> and <__media__>?", &["--image", &b, "--image", &a]);
    assert!(ok);
    assert_ne!(ab, ba, "the images' order does not matter");
    // Without images, --mmproj changes nothing.
    let plain =
        gemma(&["run", "-m", &f.model, "-p", "Hi", "-n", "3", "--temp", "0", "-t", "2", "--show-top", "5"], None);
    let (ok, with_mmproj, _) = run(&f, "Hi", &[]);
    assert!(ok && plain.status.success());
    let plain_top: Vec<String> =
        text(&plain.stderr).lines().filter(|l| l.starts_with("top ")).map(str::to_string).collect();
    assert_eq!(with_mmproj, plain_top);
}

#[test]
fn run_refuses_bad_images_and_projectors() {
    let f = convert();
    let d = f.dir.path();
    let png = std::fs::read(image("exact-64x64.png")).unwrap();
    let write = |name: &str, bytes: &[u8]| -> String {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let truncated = write("cut.png", &png[..png.len() / 2]);
    let gif = write("x.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let good = image("exact-64x64.png");
    // Another family's model for the projector: the tiny Gemma 2.
    let gemma2 = d.join("gemma2.gguf").to_str().unwrap().to_string();
    let out = gemma(&["convert", tiny("gemma2").to_str().unwrap(), "-o", &gemma2, "-q"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = f.model.as_str();
    let p = f.mmproj.as_str();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("--image without --mmproj", vec!["run", "-m", m, "-p", "x", "--image", &good], "--mmproj"),
        ("a truncated PNG", vec!["run", "-m", m, "--mmproj", p, "-p", "x", "--image", &truncated], "image (PNG)"),
        ("a GIF", vec!["run", "-m", m, "--mmproj", p, "-p", "x", "--image", &gif], "a GIF: only PNG, JPEG and WebP"),
        (
            "too many pixels",
            vec!["run", "-m", m, "--mmproj", p, "-p", "x", "--image", &good, "--image-max-pixels", "1000"],
            "64×64 = 4096 pixels; the limit is 1000",
        ),
        (
            "a missing file",
            vec!["run", "-m", m, "--mmproj", p, "-p", "x", "--image", "/nonexistent.png"],
            "/nonexistent.png",
        ),
        (
            "two markers, one image",
            vec!["run", "-m", m, "--mmproj", p, "-p", "<__media__><__media__>", "--image", &good],
            "2 for 1 images",
        ),
        (
            "a text model as projector",
            vec!["run", "-m", m, "--mmproj", m, "-p", "x", "--image", &good],
            "clip.projector_type",
        ),
        (
            "a Gemma 2 model",
            vec!["run", "-m", &gemma2, "--mmproj", p, "-p", "x", "--image", &good],
            "cannot feed a gemma2 model",
        ),
    ];
    let mut all = cases;
    let real = gemma_tests::test_model().map(|r| r.to_str().unwrap().to_string());
    if let Some(r) = &real {
        // Gemma 3 270M is 640 wide; the tiny projector projects to 256.
        all.push((
            "another width",
            vec!["run", "-m", r, "--mmproj", p, "-p", "x", "--image", &good],
            "projects to 256",
        ));
    }
    for (what, args, needle) in all {
        let out = gemma(&args, None);
        let stderr = text(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        println!("{what}: {last}");
        assert!(!out.status.success(), "{what}: succeeded");
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(last.starts_with("error:") && last.contains(needle), "{what}: {stderr}");
    }
}

#[test]
fn chat_takes_images_with_the_image_command() {
    let f = convert();
    let a = image("exact-64x64.png");
    let input = format!(
        "/image {a}\nWhat is it?\n/image /nonexistent.png\n/image {a}\nthis <__media__>, that <__media__>\nbye\n"
    );
    let args = ["chat", "-m", &f.model, "--mmproj", &f.mmproj, "-n", "2", "--temp", "0", "-t", "2"];
    let out = gemma(&args, Some(input.as_bytes()));
    let stderr = text(&out.stderr);
    println!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("added to the next message").count(), 2, "{stderr}");
    assert!(stderr.contains("(no image added: reading the image /nonexistent.png"), "{stderr}");
    assert!(stderr.contains("(message not sent:") && stderr.contains("2 for 1 images"), "{stderr}");
    // Without --mmproj, /image explains what is missing and the chat goes on.
    let out = gemma(&["chat", "-m", &f.model, "-n", "1", "-t", "2"], Some(format!("/image {a}\nhi\n").as_bytes()));
    let stderr = text(&out.stderr);
    assert!(out.status.success() && stderr.contains("--mmproj"), "{stderr}");
    assert!(Path::new(&f.mmproj).is_file());
}

/// A copy of the GGUF at `src` with `tokenizer.chat_template` set to `template`.
fn with_template(src: &Path, dst: &Path, template: &str) {
    use gemma_gguf::gguf::{GgufFile, GgufValue, GgufWriter};
    let f = GgufFile::read(src).unwrap();
    let mut w = GgufWriter::create(dst).unwrap();
    for (k, v) in f.metadata() {
        w.add_kv(k, v.clone()).unwrap();
    }
    w.add_kv("tokenizer.chat_template", GgufValue::String(template.into())).unwrap();
    for t in f.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    for t in f.tensors() {
        w.write_tensor_data(&t.name, f.tensor_data(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

/// With a GGUF chat template the conversation is re-rendered each turn and only what the
/// cache lacks is fed (images as runs of their ids). Images in two turns are fed; the first
/// reply must be the built-in format's (a template writing Gemma's turn format). Later replies
/// may differ, with images or without: the template path re-tokenizes the replies' text,
/// which need not give the sampled tokens back.
#[test]
fn chat_images_with_a_gguf_template_match_the_builtin_format() {
    let f = convert();
    let templ = f.dir.path().join("templated.gguf");
    let template = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role in ['model', 'assistant'] else m.role }}\n{{ m.content | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";
    with_template(Path::new(&f.model), &templ, template);
    let (a, b) = (image("exact-64x64.png"), image("exact2-64x64.png"));
    let input = format!("/image {a}\nWhat is it?\nAnd now?\n/image {b}\n/image {a}\n<__media__> or <__media__>?\n");
    let chat = |model: &str| {
        let args = [
            "chat", "-m", model, "--mmproj", &f.mmproj, "-n", "4", "--temp", "2", "--seed", "3", "--top-k", "0",
            "--min-p", "0", "--top-p", "1", "-t", "2",
        ];
        let out = gemma(&args, Some(input.as_bytes()));
        let stderr = text(&out.stderr);
        assert!(out.status.success() && !stderr.contains("not sent"), "{stderr}");
        text(&out.stdout)
    };
    let (builtin, templated) = (chat(&f.model), chat(templ.to_str().unwrap()));
    println!("built-in: {builtin:?}\ntemplate: {templated:?}");
    let first = |s: &str| s.split('\n').next().unwrap_or_default().to_string();
    assert!(!first(&builtin).is_empty());
    assert_eq!(first(&builtin), first(&templated));
}

/// Gemma 4: `gemma run --image` and `gemma chat` `/image` with a gemma4v projector (images of
/// any size: the 97×41 one takes 60 tokens), another image changes the top logits, and the
/// two families' projectors refuse each other's models with a one-line error.
#[test]
fn gemma4_images_in_run_and_chat() {
    let f = convert_from("gemma4-vision");
    let g4 = |n: &str| tiny("gemma4-vision/images").join(n).to_str().unwrap().to_string();
    let (a, b, odd) = (g4("exact-240x168.png"), g4("exact-168x240.png"), g4("odd-97x41.png"));
    let (ok, base, stderr) = run(&f, "What is this?", &["--image", &a]);
    println!("{stderr}");
    assert!(ok && stderr.contains("images: 1 encoded"), "{stderr}");
    assert_eq!(base.len(), 3);
    // The encoder's f32-score attention instead of the fused kernel runs too; a bad value is named.
    let (ok, plain_attn, stderr) = run(&f, "What is this?", &["--image", &a, "--mmproj-flash-attn", "off"]);
    assert!(ok && plain_attn.len() == 3, "{stderr}");
    let (ok, _, stderr) = run(&f, "What is this?", &["--image", &a, "--mmproj-flash-attn", "maybe"]);
    assert!(!ok && stderr.contains("--mmproj-flash-attn"), "{stderr}");
    let (ok, other, _) = run(&f, "What is this?", &["--image", &b]);
    assert!(ok);
    assert_ne!(other, base, "another image gives the same logits");
    let (ok, _, stderr) = run(&f, "<__media__> and <__media__>?", &["--image", &odd, "--image", &a]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&f, "x", &["--image", &a, "-c", "64"]);
    assert!(!ok && stderr.contains("(70 in its images)"), "{stderr}");
    let input = format!("/image {a}\nWhat is it?\n/image {odd}\nand <__media__>?\nbye\n");
    let args = ["chat", "-m", &f.model, "--mmproj", &f.mmproj, "-n", "2", "--temp", "0", "-t", "2"];
    let out = gemma(&args, Some(input.as_bytes()));
    let stderr = text(&out.stderr);
    println!("{stderr}");
    assert!(out.status.success() && !stderr.contains("not sent"), "{stderr}");
    assert_eq!(stderr.matches("added to the next message").count(), 2, "{stderr}");
    // Each family's projector with the other's model.
    let g3 = convert();
    for (what, model, mmproj, needle) in [
        ("Gemma 3 projector", &f.model, &g3.mmproj, "cannot feed a gemma4 model"),
        ("Gemma 4 projector", &g3.model, &f.mmproj, "cannot feed a gemma3 model"),
    ] {
        let out = gemma(&["run", "-m", model, "--mmproj", mmproj, "-p", "x", "--image", &a], None);
        let stderr = text(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        println!("{what}: {last}");
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(last.starts_with("error:") && last.contains(needle), "{what}: {stderr}");
    }
}
