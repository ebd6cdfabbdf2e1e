//! Which prompts a model answers to: its config's, else its family's convention.

use koembed_embed::{EmbedOptions, Embedder, Prompt};

fn model(name: &str) -> Embedder {
    let dir = koembed_golden::models_dir().join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: build the test models with `cargo xtask models`",
        dir.display()
    );
    Embedder::load(&dir).unwrap()
}

#[test]
fn config_prompts_win_then_the_family_convention() {
    let frony = model("frony-tiny-like");
    assert_eq!(frony.prompts().0["query"], "<Q>");
    let e5 = model("e5-small"); // no prompts in its config: the E5 convention
    assert_eq!(e5.prompts().0["query"], "query: ");
    assert_eq!(e5.prompts().0["passage"], "passage: ");
    let minilm = model("minilm"); // an English WordPiece model: no convention applies
    assert!(minilm.prompts().0.is_empty());
    let err = minilm
        .embed(
            &["x"],
            &EmbedOptions {
                prompt: Prompt::Named("query".into()),
                ..EmbedOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown prompt name \"query\""), "{err}");
}

#[test]
fn named_and_literal_prompts_give_the_same_vectors() {
    let e5 = model("e5-small");
    let named = EmbedOptions {
        prompt: Prompt::Named("query".into()),
        ..EmbedOptions::default()
    };
    let literal = EmbedOptions {
        prompt: Prompt::Literal("query: ".into()),
        ..EmbedOptions::default()
    };
    let texts = ["데비안은 무엇인가요?"];
    assert_eq!(
        e5.embed(&texts, &named).unwrap(),
        e5.embed(&texts, &literal).unwrap()
    );
    let none = e5.embed(&texts, &EmbedOptions::default()).unwrap();
    assert_ne!(none, e5.embed(&texts, &named).unwrap());
}

#[test]
fn matryoshka_cut_is_renormalized_and_bad_dims_are_refused() {
    let frony = model("frony-tiny-like");
    let options = EmbedOptions {
        truncate_dim: Some(192),
        ..EmbedOptions::default()
    };
    let v = frony.embed(&["안녕하세요"], &options).unwrap();
    assert_eq!(v.ncols(), 192);
    let norm: f32 = v.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6, "{norm}");
    for bad in [0, 385] {
        let options = EmbedOptions {
            truncate_dim: Some(bad),
            ..EmbedOptions::default()
        };
        let err = frony.embed(&["x"], &options).unwrap_err().to_string();
        assert!(err.contains("1..=384"), "{err}");
    }
}
