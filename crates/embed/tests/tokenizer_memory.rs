//! Memory held by the XLM-R tokenizer (250,002 Unigram pieces) once loaded, and at its peak
//! while loading. The crate's own `Unigram` holds ~290 MB here; `CompactUnigram` must stay far
//! below. This file has a single test so that no other test's allocations share the process.

use koembed_embed::TextTokenizer;

/// `VmRSS` and `VmHWM` of this process, in kB.
fn rss_and_peak_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"));
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn xlmr_tokenizer_stays_under_60_mb() {
    let path = koembed_golden::testdata_dir().join("xlmr-tokenizer/tokenizer.json");
    let (rss_before, peak_before) = rss_and_peak_kb();
    let tokenizer = TextTokenizer::load(&path, 512, false).unwrap();
    // Use it once, so that lazily built state (if any) is counted.
    let ids = tokenizer
        .encode("데비안 패키지를 설치하는 방법", 0)
        .unwrap()
        .ids;
    let (rss_after, peak_after) = rss_and_peak_kb();
    let rss_growth_mb = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0;
    let peak_mb = peak_after as f64 / 1024.0;
    println!(
        "XLM-R tokenizer: VmRSS {:.1} -> {:.1} MB (+{rss_growth_mb:.1} MB), \
         VmHWM {:.1} -> {peak_mb:.1} MB (+{:.1} MB), {} ids",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        peak_before as f64 / 1024.0,
        (peak_after.saturating_sub(peak_before)) as f64 / 1024.0,
        ids.len()
    );
    assert!(tokenizer.uses_compact_unigram());
    assert!(
        rss_growth_mb < 60.0,
        "the loaded tokenizer grew VmRSS by {rss_growth_mb:.1} MB (limit 60 MB)"
    );
    // The peak while loading: tokenizer.json's text (17 MB) and the vocabulary being sorted
    // are alive together for a moment (the crate's own load peaks near 300 MB).
    let peak_growth_mb = (peak_after.saturating_sub(peak_before)) as f64 / 1024.0;
    assert!(
        peak_growth_mb < 60.0,
        "loading the tokenizer raised VmHWM by {peak_growth_mb:.1} MB (limit 60 MB)"
    );
}
