//! `gemma serve --mmproj`: OpenAI chat `content` arrays with `image_url` parts (base64
//! `data:` URLs), on the tiny random Gemma 3 and Gemma 4 vision checkpoints
//! (tests/data/tiny/gemma3-vision, gemma4-vision) over loopback HTTP. The reply must equal the library's generation for the same messages,
//! image (at the place of its part) and seeded sampling (the random model's greedy reply is
//! the same for any image; sampled at temperature 2 it is not: the test checks that two
//! images give two replies), in one session per sequence and in the shared batching cache; every bad image or URL is a 400 naming the part; a server
//! without --mmproj refuses images; a projector for another model stops the server at start.
use gemma_gguf::chat::{ChatFormat, Message, SpecialTokens};
use gemma_gguf::generate::generate_chunks;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::sampler::{Sampler, SamplerParams};
use gemma_gguf::session::{Session, SessionOptions};
use gemma_gguf::vision::preprocess::MAX_IMAGE_PIXELS;
use gemma_gguf::vision::prompt::{chunks, flatten, prompt_chunks};
use gemma_gguf::vision::Projector;
use gemma_tests::serve::ServeProcess;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const N_CTX: u32 = 128;

fn gemma() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemma"))
}

fn tiny(name: &str) -> PathBuf {
    gemma_tests::workspace_root().join("tests/data/tiny").join(name)
}

fn convert(dir: &Path) -> (PathBuf, PathBuf) {
    convert_from(dir, "gemma3-vision")
}

/// [`convert`] of the tiny checkpoint `name`.
fn convert_from(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (model, mmproj) = (dir.join("model.gguf"), dir.join("mmproj.gguf"));
    let out = Command::new(gemma())
        .args(["convert", tiny(name).to_str().unwrap(), "-t", "f32", "-q", "-o"])
        .arg(&model)
        .arg("--mmproj")
        .arg(&mmproj)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (model, mmproj)
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::encode(bytes))
}

/// A one-message chat: text, then the image part with `url`.
fn chat(text: &str, url: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": url}}
        ]}],
        "max_tokens": N_GEN, "temperature": 2.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 7
    })
}

const N_GEN: usize = 8;

/// The sampling the requests of [`chat`] ask for.
fn sampling() -> SamplerParams {
    SamplerParams { temperature: 2.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 7, ..Default::default() }
}

/// The library's reply (sampled as [`sampling`]) to `text<__media__>` (the image after the text, as its part
/// comes after the text part) in the model's chat format, and the prompt's length.
fn reference(model: &Path, mmproj: &Path, text: &str, image: &[u8]) -> (String, usize) {
    let model = Model::load(model, &LoadOptions { threads: Some(1), ..Default::default() }).unwrap();
    let v = Projector::load(mmproj, Some(1)).unwrap();
    let format = ChatFormat::from_gguf(model.gguf()).unwrap();
    let specials = SpecialTokens::from_tokenizer(model.tokenizer());
    let msg = Message::user(format!("{text}<__media__>"));
    let pieces = format.format(&[msg], true, &specials).unwrap();
    let c = chunks(&pieces, v.layout(), 1, model.tokenizer()).unwrap();
    let (n_image, rows) = v.embed_image(image, MAX_IMAGE_PIXELS).unwrap();
    let images = vec![rows];
    let mut s = Session::new(&model, SessionOptions { n_ctx: N_CTX, ..Default::default() }).unwrap();
    let mut sampler = Sampler::new(sampling()).unwrap();
    let mut out = String::new();
    let p = prompt_chunks(&c, &images, model.arch().image_attention().is_none()).unwrap();
    generate_chunks(
        &mut s,
        &mut sampler,
        None,
        &p,
        N_GEN,
        |_, _| {},
        |t| {
            out.push_str(t);
            true
        },
    )
    .unwrap();
    (out, flatten(&c, 0, |_| n_image as usize).len())
}

/// Gemma 4 (tests/data/tiny/gemma4-vision, a gemma4v projector): the server's reply and prompt
/// length equal the library's for images of two sizes (70 and 60 image tokens), in one
/// session per sequence and with `--batching`.
#[test]
fn serve_answers_gemma4_image_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = convert_from(dir.path(), "gemma4-vision");
    let c = N_CTX.to_string();
    let images =
        ["exact-240x168.png", "odd-97x41.png"].map(|n| std::fs::read(tiny("gemma4-vision/images").join(n)).unwrap());
    let want: Vec<(String, usize)> =
        images.iter().map(|png| reference(&model, &mmproj, "What is this?", png)).collect();
    println!("library: {want:?}");
    assert_ne!(want[0], want[1], "the control: another image must give another reply");
    for extra in [&[][..], &["--batching", "-P", "2"][..]] {
        let mut args = vec!["-c", c.as_str(), "--mmproj", mmproj.to_str().unwrap()];
        args.extend(extra);
        let server = ServeProcess::start(&gemma(), &model, &args);
        for (png, (reply, n_prompt)) in images.iter().zip(&want) {
            let r = server.post("/v1/chat/completions", &chat("What is this?", &data_url("image/png", png)));
            assert_eq!(r.status, 200, "{extra:?}: {}", r.body);
            let v = r.json();
            println!(
                "{extra:?}: {:?} ({} prompt tokens)",
                v["choices"][0]["message"]["content"], v["usage"]["prompt_tokens"]
            );
            assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(reply.as_str()), "{extra:?}");
            assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(*n_prompt as u64), "{extra:?}");
        }
    }
}

#[test]
fn serve_answers_image_prompts_and_refuses_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = convert(dir.path());
    let png = std::fs::read(tiny("gemma3-vision/images/exact-64x64.png")).unwrap();
    let (want, n_prompt) = reference(&model, &mmproj, "What is this?", &png);
    let png2 = std::fs::read(tiny("gemma3-vision/images/exact2-64x64.png")).unwrap();
    let (other, _) = reference(&model, &mmproj, "What is this?", &png2);
    println!("library: {want:?}; with another image: {other:?}");
    assert_ne!(want, other, "the control: another image must give another reply");
    let c = N_CTX.to_string();
    for extra in [&[][..], &["--batching", "-P", "2"][..]] {
        let mut args = vec!["-c", c.as_str(), "--mmproj", mmproj.to_str().unwrap()];
        args.extend(extra);
        let server = ServeProcess::start(&gemma(), &model, &args);
        let r = server.post("/v1/chat/completions", &chat("What is this?", &data_url("image/png", &png)));
        assert_eq!(r.status, 200, "{extra:?}: {}", r.body);
        let v = r.json();
        println!(
            "{extra:?}: {:?} ({} prompt tokens)",
            v["choices"][0]["message"]["content"], v["usage"]["prompt_tokens"]
        );
        assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(want.as_str()), "{extra:?}");
        assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(n_prompt as u64), "{extra:?}");
        // Asked again (the cache is not reused across the image), the same answer.
        let r = server.post("/v1/chat/completions", &chat("What is this?", &data_url("image/png", &png)));
        assert_eq!(r.json()["choices"][0]["message"]["content"].as_str(), Some(want.as_str()), "{extra:?} again");
    }
    let server = ServeProcess::start(&gemma(), &model, &["-c", &c, "--mmproj", mmproj.to_str().unwrap()]);
    let part = "messages[0].content[1]";
    let mut truncated = png.clone();
    truncated.truncate(png.len() / 2);
    let two_markers = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "<__media__><__media__>"},
        {"type": "image_url", "image_url": {"url": data_url("image/png", &png)}}]}]});
    // In "two markers, one image" the image part brings a third marker.
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("an http URL", chat("x", "http://example.com/a.png"), part, "http: URLs are not fetched"),
        ("bad base64", chat("x", "data:image/png;base64,@@@@"), part, "base64"),
        ("not base64", chat("x", "data:image/png,abc"), part, "base64"),
        ("a GIF type", chat("x", &data_url("image/gif", b"GIF89a")), part, "image/gif"),
        ("a truncated PNG", chat("x", &data_url("image/png", &truncated)), part, "image (PNG)"),
        ("text as a PNG", chat("x", &data_url("image/png", b"hello")), part, "only PNG, JPEG and WebP"),
        ("two markers, one image", two_markers, "messages", "3 for 1 images"),
    ];
    for (what, body, param, needle) in cases {
        let r = server.post("/v1/chat/completions", &body);
        println!("{what}: {} {}", r.status, r.body);
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        let e = r.json();
        assert_eq!(e["error"]["param"].as_str(), Some(param), "{what}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{what}: {e}");
    }
    // Still serving.
    assert_eq!(server.post("/v1/chat/completions", &chat("x", &data_url("image/png", &png))).status, 200);
    drop(server);

    // Without --mmproj: images are refused, text still served.
    let server = ServeProcess::start(&gemma(), &model, &["-c", &c]);
    let r = server.post("/v1/chat/completions", &chat("x", &data_url("image/png", &png)));
    println!("no --mmproj: {} {}", r.status, r.body);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("--mmproj"), "{}", r.body);
    let text = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    assert_eq!(server.post("/v1/chat/completions", &text).status, 200);
    drop(server);

    // A projector that does not fit the model stops the server before it listens.
    let gemma2 = dir.path().join("gemma2.gguf");
    let out =
        Command::new(gemma()).args(["convert", tiny("gemma2").to_str().unwrap(), "-q", "-o"]).arg(&gemma2).output();
    assert!(out.unwrap().status.success());
    let out = Command::new(gemma())
        .args(["serve", "--port", "0", "-m"])
        .arg(&gemma2)
        .arg("--mmproj")
        .arg(&mmproj)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("mismatched projector: {}", stderr.lines().last().unwrap_or_default());
    assert!(!out.status.success() && stderr.contains("cannot feed a gemma2 model"), "{stderr}");
}
