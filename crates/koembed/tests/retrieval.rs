//! Retrieval on the Korean Debian FAQ set with e5-small equals the pinned reference's figures
//! (shared/docs/assets.md: sentence-transformers 4.1.0 on the same dequantized weights).

mod common;

use koembed_embed::Embedder;

#[test]
fn e5_small_on_debian_faq_ko_matches_the_reference_to_3_decimals() {
    let embedder = Embedder::load(&common::built_model("e5-small")).unwrap();
    let m = common::faq_metrics(&embedder);
    let expected = [
        ("nDCG@10", m.ndcg_at_10, 0.5957),
        ("MRR@10", m.mrr_at_10, 0.5425),
        ("Recall@1", m.recall_at_1, 0.4464),
        ("Recall@10", m.recall_at_10, 0.7679),
    ];
    for (name, got, want) in expected {
        assert!(
            (got - want).abs() < 0.0005,
            "{name}: {got:.4}, the reference gives {want}"
        );
    }
    assert_eq!(m.queries, 112);
}
