use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};

#[test]
fn smoke() {
    let Some(path) = gemma_tests::test_model() else {
        return;
    };
    let names_s: Vec<String> = (0..18)
        .flat_map(|l| ["attn_norm", "Qcur", "Kcur", "kqv_out", "l_out"].map(|n| format!("{n}-{l}")))
        .collect();
    let names: Vec<&str> = names_s.iter().map(|s| s.as_str()).collect();
    let model = Model::load(
        &path,
        &LoadOptions {
            threads: Some(th()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Session::new(
        &model,
        SessionOptions {
            n_ctx: 1024,
            flash_attn: std::env::var("OURFA").is_ok(),
            ..Default::default()
        },
    )
    .unwrap();
    s.capture_nodes(&names);
    let mut ll = LlamaRunner::load(
        &path,
        LlamaOptions {
            capture: &names,
            n_ctx: 1024,
            n_threads: th() as i32,
            flash_attn: std::env::var("LLFA").is_ok(),
        },
    );
    let toks = ll.tokenize("The capital of France is", true);
    println!("tokens {toks:?}");
    let one = std::env::var("ONE").is_ok();
    let (ours, theirs) = if one {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            a.extend(s.decode(&[*t], Outputs::All).unwrap());
            b.extend(ll.eval(&[*t], true));
            let theirs = ll.take_captured();
            for (name, ours) in s.captured() {
                if let Some((_, th)) = theirs.iter().find(|(n, _)| n == name) {
                    let d = ours
                        .iter()
                        .zip(th)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max);
                    if d > 0.0 || ours.len() != th.len() {
                        println!(
                            "tok {i} {name}: len {} vs {}, max diff {d:e}",
                            ours.len(),
                            th.len()
                        );
                    }
                } else {
                    println!("tok {i} {name}: not captured by llama");
                }
            }
        }
        (a, b)
    } else {
        (s.decode(&toks, Outputs::All).unwrap(), ll.eval(&toks, true))
    };
    let nv = model.n_vocab() as usize;
    for p in 0..toks.len() {
        let a = &ours[p * nv..(p + 1) * nv];
        let b = &theirs[p * nv..(p + 1) * nv];
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let am = a
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0;
        let bm = b
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0;
        println!("pos {p}: max diff {d:e}, argmax ours {am} llama {bm}");
    }
}

fn th() -> usize {
    std::env::var("TH").map(|v| v.parse().unwrap()).unwrap_or(2)
}
