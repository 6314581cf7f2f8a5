//! The trained variables: drawn from the seed, copied for inference, published by rename.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::embed::lesion_cnn::{LesionCnn, LesionCnnConfig};
use crate::embed::sha256_file;
use crate::embed::weights::candle_error;
use crate::error::{Error, Result};
use crate::util::Rng;

/// Overwrites every parameter with values drawn from the seed (candle's own initialisation
/// is not seedable): He-normal weights, zero biases, unit batch-norm scales.
pub(super) fn seed_parameters(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("var map lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::derive(seed, &[0x1417]);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let sd = (2.0 / fan_in as f32).sqrt();
            (0..count).map(|_| rng.normal() * sd).collect()
        } else if name.ends_with("running_var") || (name.contains("bn") && name.ends_with("weight"))
        {
            vec![1.0; count]
        } else {
            vec![0.0; count]
        };
        let tensor =
            Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| candle_error(name, e))?;
        var.set(&tensor).map_err(|e| candle_error(name, e))?;
    }
    Ok(())
}

/// An inference copy of the network with the current parameters.
pub(super) fn rebuild(varmap: &VarMap, config: &LesionCnnConfig) -> Result<LesionCnn> {
    let tensors = varmap
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().expect("copy")))
        .collect();
    LesionCnn::new(
        config,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )
    .map_err(|e| candle_error("lesion-cnn", e))
}

/// Writes the kept variables to `path` by rename (a reader never sees half a file) and
/// returns the file's sha256.
pub(super) fn publish_weights(
    varmap: &VarMap,
    path: &Path,
    keep: fn(&str) -> bool,
) -> Result<String> {
    let tmp = path.with_extension("safetensors.tmp");
    save_sorted(varmap, &tmp, keep)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sha256_file(path)
}

fn save_sorted(varmap: &VarMap, path: &Path, keep: fn(&str) -> bool) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| candle_error(&path.display().to_string(), e))
}
