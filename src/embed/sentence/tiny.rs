//! A tiny sentence encoder in the real on-disk layout (`model.safetensors` with BERT's tensor
//! names, `config.json`, `vocab.txt`, the sentence-transformers settings), its weights drawn
//! from a seed: what tests load through the real [`super::SentenceEncoder::load`] instead of
//! the 90 MB all-MiniLM-L6-v2 import.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::super::weights::candle_error;
use crate::error::{Error, Result};
use crate::util::Rng;

const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const INTERMEDIATE: usize = 64;
const POSITIONS: usize = 128;

/// Report words the generator writes, whole, so that reports share real tokens; any other
/// word is spelt from the letter pieces.
const WORDS: [&str; 40] = [
    "the",
    "a",
    "of",
    "in",
    "and",
    "with",
    "lesion",
    "mass",
    "nodule",
    "cyst",
    "liver",
    "lung",
    "kidney",
    "bone",
    "pelvis",
    "lymph",
    "node",
    "nodes",
    "hepatic",
    "renal",
    "pulmonary",
    "adrenal",
    "enlarged",
    "small",
    "large",
    "left",
    "right",
    "lobe",
    "upper",
    "lower",
    "metastasis",
    "hypodense",
    "soft",
    "tissue",
    "abdomen",
    "mediastinum",
    "mm",
    "cm",
    "is",
    "seen",
];

/// Writes a tiny BERT sentence encoder (32-d, 2 layers) into `dir`, its weights a pure
/// function of `seed`. `dir`'s name becomes the encoder's card name, so a folder called
/// `all-minilm-l6-v2` in a cache stands in for the imported model.
pub fn write_tiny_sentence_encoder(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", ".", ",", "-"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(WORDS.iter().map(|w| w.to_string()));
    for c in ('a'..='z').chain('0'..='9') {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![vocab.len(), HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![POSITIONS, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
    ];
    for i in 0..LAYERS {
        let p = format!("encoder.layer.{i}");
        for (name, out, inp) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", INTERMEDIATE, HIDDEN),
            ("output.dense", HIDDEN, INTERMEDIATE),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{p}.{name}.bias"), vec![out]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{norm}.weight"), vec![HIDDEN]));
            shapes.push((format!("{p}.{norm}.bias"), vec![HIDDEN]));
        }
    }
    let mut rng = Rng::new(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let v = rng.gaussian(0.0, 0.3);
                if name.ends_with("LayerNorm.weight") {
                    1.0 + 0.1 * v
                } else {
                    v
                }
            })
            .collect();
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| candle_error("tiny sentence encoder", e))?;
        tensors.insert(name, tensor);
    }
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| candle_error("tiny sentence encoder", e))?;
    let config = format!(
        r#"{{"vocab_size": {}, "hidden_size": {HIDDEN}, "num_hidden_layers": {LAYERS},
            "num_attention_heads": {HEADS}, "intermediate_size": {INTERMEDIATE},
            "max_position_embeddings": {POSITIONS}, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu"}}"#,
        vocab.len()
    );
    let files = [
        ("config.json", config),
        ("vocab.txt", vocab.join("\n") + "\n"),
        (
            "sentence_bert_config.json",
            format!(r#"{{"max_seq_length": {POSITIONS}}}"#),
        ),
        (
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": true}"#.to_string(),
        ),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
