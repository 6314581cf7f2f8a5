//! A BERT encoder (inference only) over the reference's tensor names without a prefix
//! (`embeddings.word_embeddings.weight`, `encoder.layer.3.attention.self.query.weight`).
//!
//! Embeddings (word + absolute position + token type 0, then LayerNorm), then per layer
//! self-attention with a padding mask, residual and LayerNorm, then a GELU (erf) feed-forward,
//! residual and LayerNorm (post-norm, as BERT). The pooler is not used.

use std::path::Path;

use candle_core::{DType, Module, Tensor, D};
use candle_nn::LayerNorm;
use serde::Deserialize;

use crate::embed::weights::{candle_error, TensorFile};
use crate::error::{Error, Result};

/// The fields of `config.json` the encoder uses; the others are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "default_activation")]
    pub hidden_act: String,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_activation() -> String {
    "gelu".into()
}

fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `config.json`: what this encoder cannot run is refused by name.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("not a BERT config: {e}"),
        })?;
        let refuse = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
        };
        if config.hidden_act != "gelu" {
            return Err(refuse(format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                config.hidden_act
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(refuse(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                config.position_embedding_type
            )));
        }
        let heads = config.num_attention_heads;
        if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
            return Err(refuse(format!(
                "hidden_size {} is not a multiple of num_attention_heads {heads}",
                config.hidden_size
            )));
        }
        if config.type_vocab_size == 0 || config.max_position_embeddings == 0 {
            return Err(refuse(
                "type_vocab_size and max_position_embeddings must be positive".into(),
            ));
        }
        Ok(config)
    }
}

/// A dense layer with its weight stored transposed (`[in, out]`, contiguous), so that each
/// call multiplies by it as it lies: a transposed view is repacked by the matrix product on
/// every call, which for a few tokens costs more than the product itself.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    /// `(batch, tokens, in)` to `(batch, tokens, out)`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, width) = x.dims3()?;
        x.reshape((batch * tokens, width))?
            .matmul(&self.weight_t)?
            .broadcast_add(&self.bias)?
            .reshape((batch, tokens, ()))
    }
}

struct SelfAttention {
    /// Query, key and value side by side: one product instead of three.
    qkv: Dense,
    output: Dense,
    norm: LayerNorm,
}

struct Layer {
    attention: SelfAttention,
    intermediate: Dense,
    output: Dense,
    norm: LayerNorm,
}

/// The encoder stack, ready to run.
pub struct Bert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
}

/// The dense layers `names` (each `[out, in]` weights and `[out]` bias) as one layer whose
/// outputs are theirs side by side.
fn dense(file: &TensorFile, names: &[&str], out_dim: usize, in_dim: usize) -> Result<Dense> {
    let mut weights = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for name in names {
        weights.push(file.get(&format!("{name}.weight"), &[out_dim, in_dim])?);
        biases.push(file.get(&format!("{name}.bias"), &[out_dim])?);
    }
    let join = || -> candle_core::Result<Dense> {
        Ok(Dense {
            weight_t: Tensor::cat(&weights, 0)?.t()?.contiguous()?,
            bias: Tensor::cat(&biases, 0)?,
        })
    };
    join().map_err(|e| candle_error(names[0], e))
}

fn layer_norm(file: &TensorFile, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        file.get(&format!("{name}.weight"), &[dim])?,
        file.get(&format!("{name}.bias"), &[dim])?,
        eps,
    ))
}

impl Bert {
    /// Loads every tensor the configuration needs, checked by name and shape.
    pub fn load(file: &TensorFile, config: &BertConfig) -> Result<Self> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let token_type = file.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        // Every token is of type 0 (single sentences): keep that row.
        let token_type = token_type
            .narrow(0, 0, 1)
            .map_err(|e| candle_error("token_type_embeddings", e))?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                attention: SelfAttention {
                    qkv: dense(
                        file,
                        &[
                            &format!("{p}.attention.self.query"),
                            &format!("{p}.attention.self.key"),
                            &format!("{p}.attention.self.value"),
                        ],
                        h,
                        h,
                    )?,
                    output: dense(file, &[&format!("{p}.attention.output.dense")], h, h)?,
                    norm: layer_norm(file, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
                },
                intermediate: dense(
                    file,
                    &[&format!("{p}.intermediate.dense")],
                    config.intermediate_size,
                    h,
                )?,
                output: dense(
                    file,
                    &[&format!("{p}.output.dense")],
                    h,
                    config.intermediate_size,
                )?,
                norm: layer_norm(file, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Bert {
            word: file.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: file.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type,
            embedding_norm: layer_norm(file, "embeddings.LayerNorm", h, eps)?,
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn vocab_size(&self) -> usize {
        self.word.dims()[0]
    }

    pub fn max_positions(&self) -> usize {
        self.position.dims()[0]
    }

    /// `ids` `(batch, tokens)` u32 and `mask` `(batch, tokens)` f32 (1 real, 0 padding) to
    /// the last layer's states `(batch, tokens, hidden)`. Ids must be below the vocabulary
    /// size and `tokens` at most the position table's length (the caller checks both).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        let hidden = self.hidden_size();
        let words = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, tokens, hidden))?;
        let positions = self.position.narrow(0, 0, tokens)?;
        let x = words
            .broadcast_add(&positions)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.embedding_norm.forward(&x)?;
        // Padding gets the lowest score before the softmax, so it weighs nothing.
        let bias =
            ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?.reshape((batch, 1, 1, tokens))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer(&self, layer: &Layer, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let a = &layer.attention;
        let (batch, tokens, hidden) = x.dims3()?;
        let heads = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, tokens, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let qkv = a.qkv.forward(x)?;
        let q = heads(qkv.narrow(2, 0, hidden)?)?;
        let k = heads(qkv.narrow(2, hidden, hidden)?)?;
        let v = heads(qkv.narrow(2, 2 * hidden, hidden)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, tokens, hidden))?;
        let x = a.norm.forward(&(a.output.forward(&context)? + x)?)?;
        let inner = layer.intermediate.forward(&x)?.gelu_erf()?;
        layer.norm.forward(&(layer.output.forward(&inner)? + x)?)
    }
}

/// Mean of `states` `(batch, tokens, hidden)` over the tokens whose `mask` is 1.
pub fn mean_pool(states: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = states.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}
