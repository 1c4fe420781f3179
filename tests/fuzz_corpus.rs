//! The fuzz targets' checks (fuzz/src/lib.rs) on stable Rust, over their
//! seed corpora and over every crash input ever kept: decode never panics,
//! and whatever it accepts satisfies the contract and folds. CI runs this;
//! the fuzzing itself needs nightly (see fuzz/README.md).

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::Path;

/// Every file of `fuzz/<dir>/<target>`, if that directory exists.
fn inputs(dir: &str, target: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.expect("corpus entry").path()).collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect()
}

#[test]
fn the_decode_corpus_passes_the_fuzz_checks() {
    let corpus = inputs("corpus", "decode");
    assert!(
        corpus.len() >= 10,
        "seed corpus fuzz/corpus/decode is missing"
    );
    for input in corpus.iter().chain(&inputs("artifacts", "decode")) {
        fuzz_checks::check(input);
    }
}

#[test]
fn the_structured_corpus_passes_the_fuzz_checks() {
    let corpus = inputs("corpus", "decode_structured");
    assert!(
        corpus.len() >= 5,
        "seed corpus fuzz/corpus/decode_structured is missing"
    );
    let mut records = 0;
    for input in corpus
        .iter()
        .chain(&inputs("artifacts", "decode_structured"))
    {
        if let Some(record) = fuzz_checks::structured(input) {
            fuzz_checks::check(&record);
            records += 1;
        }
    }
    assert!(records >= 5);
}
