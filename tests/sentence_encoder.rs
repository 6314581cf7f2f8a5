//! The all-MiniLM-L6-v2 sentence encoder against the reference implementation
//! (sentence-transformers on PyTorch: `data/golden/minilm_golden.py`, output in
//! `data/golden/minilm.json`): token ids exactly, embeddings and their cosines within 1e-4.
//! Skipped, saying so, when `lesion-indexer weights import minilm` has not run.

use std::path::Path;

use lesion_search::embed::{default_cache_dir, minilm_dir, SentenceEncoder};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Golden {
    weights_sha256: String,
    dim: usize,
    phrases: Vec<Phrase>,
    cosines: Vec<Vec<f32>>,
    tokens_only: Vec<Tokens>,
}

#[derive(Deserialize)]
struct Phrase {
    text: String,
    token_ids: Vec<u32>,
    pooled_norm: f32,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Tokens {
    text: String,
    token_ids: Vec<u32>,
}

fn golden() -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/golden/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn imported(test: &str) -> Option<SentenceEncoder> {
    match minilm_dir(&default_cache_dir()) {
        Ok(dir) => Some(SentenceEncoder::load(&dir).unwrap()),
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let Some(encoder) = imported("token_ids_match_the_reference_tokenizer") else {
        return;
    };
    let golden = golden();
    let cases = golden
        .phrases
        .iter()
        .map(|p| (&p.text, &p.token_ids))
        .chain(golden.tokens_only.iter().map(|t| (&t.text, &t.token_ids)));
    let mut checked = 0;
    for (text, ids) in cases {
        assert_eq!(
            &encoder.tokenizer().encode(text),
            ids,
            "{text:?}: pieces {:?}",
            encoder.tokenizer().pieces(text)
        );
        checked += 1;
    }
    assert!(checked >= 16, "{checked}");
    // The 300-word report is cut at the model's 256 tokens.
    assert!(golden
        .phrases
        .iter()
        .any(|p| p.token_ids.len() == encoder.max_tokens()));
}

#[test]
fn embeddings_match_the_reference_within_1e_4() {
    let Some(encoder) = imported("embeddings_match_the_reference_within_1e_4") else {
        return;
    };
    let golden = golden();
    let weights = encoder.dir().join("model.safetensors");
    assert_eq!(
        lesion_search::embed::sha256_file(&weights).unwrap(),
        golden.weights_sha256,
        "the golden values were made from other weights"
    );
    assert_eq!(encoder.dim(), golden.dim);
    let texts: Vec<&str> = golden.phrases.iter().map(|p| p.text.as_str()).collect();

    // All phrases in one call (batched, padded) and one at a time.
    let together = encoder.encode(&texts).unwrap();
    let pooled = encoder.pooled(&texts).unwrap();
    let mut worst = 0f32;
    for (i, phrase) in golden.phrases.iter().enumerate() {
        let alone = encoder.encode(&[phrase.text.as_str()]).unwrap().remove(0);
        for vector in [&together[i], &alone] {
            let diff = max_abs_diff(vector, &phrase.embedding);
            assert!(diff <= TOLERANCE, "{:?}: max abs diff {diff}", phrase.text);
            worst = worst.max(diff);
        }
        let norm = pooled[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - phrase.pooled_norm).abs() <= TOLERANCE * phrase.pooled_norm.max(1.0),
            "{:?}: pooled norm {norm}, reference {}",
            phrase.text,
            phrase.pooled_norm
        );
    }
    for (i, row) in golden.cosines.iter().enumerate() {
        for (j, &reference) in row.iter().enumerate() {
            let cosine: f32 = together[i]
                .iter()
                .zip(&together[j])
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (cosine - reference).abs() <= TOLERANCE,
                "cosine {i},{j}: {cosine}, reference {reference}"
            );
        }
    }
    eprintln!("largest absolute difference from the reference: {worst:.2e}");
}

/// Encoding time per phrase on the 500 LesaNet report phrases, one at a time and 32 at a
/// time: `cargo test -p lesion-search --test sentence_encoder -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn encoding_speed() {
    let Some(encoder) = imported("encoding_speed") else {
        return;
    };
    #[derive(Deserialize)]
    struct Labelled {
        text: String,
    }
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lesanet/hand_labeled_test_set.json");
    let phrases: Vec<Labelled> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let texts: Vec<&str> = phrases.iter().map(|p| p.text.as_str()).collect();
    let tokens: usize = texts
        .iter()
        .map(|t| encoder.tokenizer().encode(t).len())
        .sum();
    encoder.encode(&texts[..32]).unwrap(); // warm-up
    for batch in [1, 32] {
        let start = std::time::Instant::now();
        for chunk in texts.chunks(batch) {
            encoder.encode(chunk).unwrap();
        }
        let per_phrase = start.elapsed().as_secs_f64() * 1e3 / texts.len() as f64;
        eprintln!(
            "batch {batch}: {per_phrase:.2} ms per phrase ({} phrases, {:.1} tokens each)",
            texts.len(),
            tokens as f64 / texts.len() as f64
        );
    }
}
