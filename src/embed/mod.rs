//! Embedding models: batches of patches in, L2-normalised vectors out.
//!
//! [`Embedder`] is the one interface the index and search use; every model is described by
//! a [`ModelCard`] that travels with its weights and with every index it builds. Two kinds
//! of model: `ct-resnet`, real CT-pretrained features of the Merlin ResNet-152, whose layer-2
//! trunk (`ct-resnet-l2`) ships inside the library and whose deeper stages are imported
//! ([`import_ct_resnet`]), and `lesion-cnn`, a compact network trained by [`train`].
//! candle is named in this module only.

mod card;
mod ct_resnet;
mod import;
mod lesion_cnn;
mod sentence;
pub mod train;
mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

pub use crate::util::{hex_digest, l2_normalised, sha256_file};
pub use card::{Architecture, ModelCard, ResnetStage, TrunkWeights};
pub use ct_resnet::{ResnetTrunk, TrunkLayout, RESNET152_BLOCKS};
pub use import::{
    ct_resnet_l2_card, ct_resnet_model_name, derive_ct_resnet_l2, existing_ct_resnet_import,
    existing_minilm_import, import_ct_resnet, import_minilm, write_card, ImportOutcome,
    CT_RESNET_SOURCE, CT_RESNET_TRUNK_FILE, CT_RESNET_WEIGHTS, MINILM_SOURCE,
};
pub use lesion_cnn::{LesionCnn, LesionCnnConfig};
pub use sentence::{
    load_minilm, load_text_encoder, minilm_dir, write_tiny_sentence_encoder, BertConfig,
    SentenceEncoder, TextEncoderCard, WordPieceTokenizer, MINILM_MODEL, SENTENCE_FILES,
    SENTENCE_MAX_TOKENS, TEXT_ENCODERS,
};
// Distillation lives with the other trainer under `train/`; its path stays `embed::distill`.
pub use train::distill;
pub use weights::TensorFile;

use crate::error::{Error, Result};
use crate::imaging::{ChannelSpec, FieldOfView, Patch, PatchSpec, Window, WindowChoice};
use weights::candle_error;

/// The model used when none is named. On real CT the distilled student beats it on most
/// measures, but not on generated archives (the demo's), and it does not yet match its
/// teacher everywhere on real CT, which the default must (BENCHMARKS.md, "Which model is
/// the default").
pub const DEFAULT_MODEL: &str = "lesion-cnn";

/// The trained `lesion-cnn` shipped inside the library (`data/models/lesion-cnn/`, rebuilt by
/// the command in its card's provenance).
const BUNDLED_LESION_CNN_WEIGHTS: &[u8] =
    include_bytes!("../../data/models/lesion-cnn/model.safetensors");
const BUNDLED_LESION_CNN_CARD: &str = include_str!("../../data/models/lesion-cnn/card.json");

/// `lesion-cnn` distilled without labels from `ct-resnet-l2` on real and generated CT
/// (`data/models/lesion-cnn-distilled-l2/`; BENCHMARKS.md "Distillation on real CT").
pub const DISTILLED_MODEL: &str = "lesion-cnn-distilled-l2";
const BUNDLED_DISTILLED_WEIGHTS: &[u8] =
    include_bytes!("../../data/models/lesion-cnn-distilled-l2/model.safetensors");
const BUNDLED_DISTILLED_CARD: &str =
    include_str!("../../data/models/lesion-cnn-distilled-l2/card.json");

/// `ct-resnet-l2`: conv1 to layer 2 of the Merlin CT ResNet-152 (2.6 M parameters, f32),
/// derived from the imported checkpoint by `weights import`, which reproduces this file bit
/// for bit (`data/models/ct-resnet-l2/`, README.md there for its provenance and licence).
pub const CT_RESNET_L2_MODEL: &str = "ct-resnet-l2";
const BUNDLED_CT_RESNET_L2_WEIGHTS: &[u8] =
    include_bytes!("../../data/models/ct-resnet-l2/model.safetensors");
const BUNDLED_CT_RESNET_L2_CARD: &str = include_str!("../../data/models/ct-resnet-l2/card.json");

/// A bundled model's card and weights, labelled by their folder under `data/models`.
fn bundled_files(folder: &str, card: &str, weights: &[u8]) -> Result<(ModelCard, TensorFile)> {
    let label = Path::new("data/models").join(folder);
    let card: ModelCard = serde_json::from_str(card).map_err(|e| Error::Model {
        path: label.join(CARD_FILE),
        message: format!("not a model card: {e}"),
    })?;
    let file = TensorFile::from_bytes(weights, &label.join(&card.weights_file))?;
    Ok((card, file))
}

fn bundled(folder: &str, card: &str, weights: &[u8]) -> Result<LesionCnnEmbedder> {
    let (card, file) = bundled_files(folder, card, weights)?;
    LesionCnnEmbedder::from_file(&file, card)
}

/// The bundled `ct-resnet-l2`: needs no import, no cache folder and no network.
pub fn bundled_ct_resnet_l2() -> Result<CtResnetEmbedder> {
    bundled_ct_resnet_l2_laid_out(TrunkLayout::ChannelsLast)
}

/// The bundled `ct-resnet-l2` in a chosen layout (the benchmark measures both).
pub fn bundled_ct_resnet_l2_laid_out(layout: TrunkLayout) -> Result<CtResnetEmbedder> {
    let (card, file) = bundled_files(
        CT_RESNET_L2_MODEL,
        BUNDLED_CT_RESNET_L2_CARD,
        BUNDLED_CT_RESNET_L2_WEIGHTS,
    )?;
    CtResnetEmbedder::from_trunk(&file, None, card, layout)
}

/// The bundled `lesion-cnn`.
pub fn bundled_lesion_cnn() -> Result<LesionCnnEmbedder> {
    bundled(
        "lesion-cnn",
        BUNDLED_LESION_CNN_CARD,
        BUNDLED_LESION_CNN_WEIGHTS,
    )
}

/// The bundled `lesion-cnn-distilled-l2`.
pub fn bundled_distilled() -> Result<LesionCnnEmbedder> {
    bundled(
        DISTILLED_MODEL,
        BUNDLED_DISTILLED_CARD,
        BUNDLED_DISTILLED_WEIGHTS,
    )
}

/// The bundled `lesion-cnn`'s weights, as a starting point for fine-tuning.
pub fn bundled_lesion_cnn_weights() -> Result<TensorFile> {
    TensorFile::from_bytes(
        BUNDLED_LESION_CNN_WEIGHTS,
        Path::new("data/models/lesion-cnn/model.safetensors"),
    )
}

/// Name of the card file beside a model's weights.
pub const CARD_FILE: &str = "card.json";

/// Turns patches into unit vectors. Implementations are deterministic.
pub trait Embedder: Send + Sync {
    fn card(&self) -> &ModelCard;

    /// One L2-normalised vector per patch; patches must match the card's spec.
    fn embed(&self, patches: &[Patch]) -> Result<Vec<Vec<f32>>>;
}

/// The patch spec `ct-resnet` was validated with: the key slice on all three channels, HU
/// clipped to [-1000, 1000] and scaled to 0..1 (MODELS.md).
pub fn ct_resnet_patch_spec(size_px: usize) -> PatchSpec {
    let window = WindowChoice::Custom(Window {
        low: -1000.0,
        high: 1000.0,
    });
    PatchSpec {
        size_px,
        field_of_view: FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        },
        channels: vec![
            ChannelSpec {
                slice_offset_mm: 0.0,
                window
            };
            3
        ],
    }
}

/// Stacks patches into a `(batch, channels, size, size)` tensor, checking them against `spec`.
pub(crate) fn batch_tensor(patches: &[Patch], spec: &PatchSpec) -> Result<Tensor> {
    let n = spec.size_px;
    let c = spec.channels.len();
    let mut data = Vec::with_capacity(patches.len() * c * n * n);
    for (i, p) in patches.iter().enumerate() {
        if p.size_px != n || p.channels != c {
            return Err(Error::invalid_argument(
                "patch",
                format!(
                    "patch {i} is {}x{} px with {} channels; the model takes {n}x{n} px with {c}",
                    p.size_px, p.size_px, p.channels
                ),
            ));
        }
        data.extend_from_slice(&p.data);
    }
    Tensor::from_vec(data, (patches.len(), c, n, n), &Device::Cpu)
        .map_err(|e| candle_error("patch batch", e))
}

pub(crate) fn normalised_rows(features: &Tensor) -> Result<Vec<Vec<f32>>> {
    let rows = features
        .to_vec2::<f32>()
        .map_err(|e| candle_error("features", e))?;
    Ok(rows.into_iter().map(l2_normalised).collect())
}

/// `ct-resnet`, optionally with a trained projection head.
pub struct CtResnetEmbedder {
    trunk: ResnetTrunk,
    projection: Option<(Tensor, Tensor)>,
    card: ModelCard,
}

impl CtResnetEmbedder {
    pub fn load(dir: &Path, card: ModelCard) -> Result<Self> {
        if !matches!(card.architecture, Architecture::CtResnet { .. }) {
            return Err(Error::Model {
                path: dir.to_path_buf(),
                message: "card is not a ct-resnet card".into(),
            });
        }
        let own = TensorFile::open(&dir.join(&card.weights_file))?;
        match &card.trunk {
            Some(t) => {
                let trunk_file = TensorFile::open(&dir.join(&t.file))?;
                Self::from_trunk(&trunk_file, Some(&own), card, TrunkLayout::ChannelsLast)
            }
            None => Self::from_trunk(&own, None, card, TrunkLayout::ChannelsLast),
        }
    }

    /// From the trunk's weights and, for a card with a projection, the file holding it
    /// (`None`: the trunk's file).
    fn from_trunk(
        trunk_file: &TensorFile,
        own: Option<&TensorFile>,
        card: ModelCard,
        layout: TrunkLayout,
    ) -> Result<Self> {
        let Architecture::CtResnet { stage, projection } = card.architecture else {
            return Err(Error::Model {
                path: trunk_file.path().to_path_buf(),
                message: "card is not a ct-resnet card".into(),
            });
        };
        let own = own.unwrap_or(trunk_file);
        let trunk = ResnetTrunk::load_laid_out(trunk_file, stage, layout)?;
        let projection = match projection {
            Some(dim) => Some((
                own.get("projection.weight", &[dim, trunk.output_dim()])?,
                own.get("projection.bias", &[dim])?,
            )),
            None => None,
        };
        Ok(CtResnetEmbedder {
            trunk,
            projection,
            card,
        })
    }

    /// Width of the trunk's features.
    pub fn trunk_dim(&self) -> usize {
        self.trunk.output_dim()
    }

    /// Trunk features before normalisation (training a head caches these).
    pub fn features(&self, patches: &[Patch]) -> Result<Tensor> {
        let x = batch_tensor(patches, &self.card.patch)?;
        self.trunk
            .forward(&x)
            .map_err(|e| candle_error("ct-resnet", e))
    }
}

impl Embedder for CtResnetEmbedder {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn embed(&self, patches: &[Patch]) -> Result<Vec<Vec<f32>>> {
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let features = self.features(patches)?;
        let features = match &self.projection {
            Some((w, b)) => features
                .matmul(&w.t().map_err(|e| candle_error("projection", e))?)
                .and_then(|f| f.broadcast_add(b))
                .map_err(|e| candle_error("projection", e))?,
            None => features,
        };
        normalised_rows(&features)
    }
}

/// `lesion-cnn`.
pub struct LesionCnnEmbedder {
    model: LesionCnn,
    card: ModelCard,
}

impl LesionCnnEmbedder {
    /// Loads from a weights file, checking every tensor the network needs by name and shape.
    pub fn from_file(file: &TensorFile, card: ModelCard) -> Result<Self> {
        let Architecture::LesionCnn { widths, dim } = &card.architecture else {
            return Err(Error::Model {
                path: file.path().to_path_buf(),
                message: "card is not a lesion-cnn card".into(),
            });
        };
        let config = LesionCnnConfig {
            in_channels: card.patch.channels.len(),
            widths: widths.clone(),
            dim: *dim,
        };
        // Build once on a scratch map to learn the names and shapes the network needs.
        let scratch = candle_nn::VarMap::new();
        LesionCnn::new(
            &config,
            VarBuilder::from_varmap(&scratch, DType::F32, &Device::Cpu),
        )
        .map_err(|e| candle_error("lesion-cnn", e))?;
        let mut tensors = std::collections::HashMap::new();
        let mut needed: Vec<(String, Vec<usize>)> = scratch
            .data()
            .lock()
            .expect("var map lock")
            .iter()
            .map(|(name, var)| (name.clone(), var.dims().to_vec()))
            .collect();
        needed.sort();
        for (name, shape) in needed {
            tensors.insert(name.clone(), file.get(&name, &shape)?);
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = LesionCnn::new(&config, vb).map_err(|e| candle_error("lesion-cnn", e))?;
        Ok(LesionCnnEmbedder { model, card })
    }

    pub fn new(model: LesionCnn, card: ModelCard) -> Self {
        LesionCnnEmbedder { model, card }
    }
}

impl Embedder for LesionCnnEmbedder {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn embed(&self, patches: &[Patch]) -> Result<Vec<Vec<f32>>> {
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let x = batch_tensor(patches, &self.card.patch)?;
        let features = self
            .model
            .forward_t(&x, false)
            .map_err(|e| candle_error("lesion-cnn", e))?;
        normalised_rows(&features)
    }
}

/// Reads a model folder: `card.json` and the weights it names.
pub fn load_model_dir(dir: &Path) -> Result<Box<dyn Embedder>> {
    let card = read_card(dir)?;
    load_with_card(dir, card)
}

pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let path = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Model {
        path,
        message: format!("not a model card: {e}"),
    })
}

fn load_with_card(dir: &Path, card: ModelCard) -> Result<Box<dyn Embedder>> {
    match card.architecture {
        Architecture::CtResnet { .. } => Ok(Box::new(CtResnetEmbedder::load(dir, card)?)),
        Architecture::LesionCnn { .. } => {
            let file = TensorFile::open(&dir.join(&card.weights_file))?;
            Ok(Box::new(LesionCnnEmbedder::from_file(&file, card)?))
        }
    }
}

/// The user's cache folder for imported weights: `$LESION_SEARCH_CACHE`, else
/// `$XDG_CACHE_HOME/lesion-search`, else `~/.cache/lesion-search`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LESION_SEARCH_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lesion-search");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/lesion-search"))
        .unwrap_or_else(|| PathBuf::from(".cache/lesion-search"))
}

/// The model that `--model` names: a folder holding `card.json`, `lesion-cnn`,
/// `lesion-cnn-distilled-l2` or `ct-resnet-l2` (bundled), or the name of an imported model
/// in the cache (`ct-resnet-l3`, `ct-resnet-l4`).
pub fn resolve_model(name_or_dir: &str, cache: &Path) -> Result<Box<dyn Embedder>> {
    let as_dir = Path::new(name_or_dir);
    if as_dir.join(CARD_FILE).is_file() {
        return load_model_dir(as_dir);
    }
    if name_or_dir == "lesion-cnn" {
        return Ok(Box::new(bundled_lesion_cnn()?));
    }
    if name_or_dir == DISTILLED_MODEL {
        return Ok(Box::new(bundled_distilled()?));
    }
    // Bundled before the cache: an import's copy is the same file.
    if name_or_dir == CT_RESNET_L2_MODEL {
        return Ok(Box::new(bundled_ct_resnet_l2()?));
    }
    let cached = cache.join(name_or_dir);
    if cached.join(CARD_FILE).is_file() {
        return load_model_dir(&cached);
    }
    let hint = if name_or_dir.starts_with("ct-resnet") {
        format!(
            "; run `lesion-indexer weights import` to put the CT weights in {}",
            cache.display()
        )
    } else {
        String::new()
    };
    Err(Error::invalid_argument(
        "model",
        format!(
            "`{name_or_dir}` is neither a model folder (with {CARD_FILE}) nor a model in {}{hint}",
            cache.display()
        ),
    ))
}
