//! Named tensors from a safetensors file, checked by name and shape with typed errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

enum Source {
    Mapped(MmapedSafetensors),
    Memory(HashMap<String, Tensor>),
}

/// A checkpoint being read; every error names the file and the tensor.
pub struct TensorFile {
    path: PathBuf,
    source: Source,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Model {
                path: path.to_path_buf(),
                message: "weights file not found".into(),
            });
        }
        // SAFETY: the file is opened read-only and the cache folder is ours; nothing
        // truncates it while a model is loaded.
        let mapped = unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            source: Source::Mapped(mapped),
        })
    }

    /// Tensors already in memory (weights bundled into the binary); `label` names them.
    pub fn from_bytes(bytes: &[u8], label: &Path) -> Result<Self> {
        let map = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
            Error::Model {
                path: label.to_path_buf(),
                message: format!("not a readable safetensors buffer: {e}"),
            }
        })?;
        Ok(TensorFile {
            path: label.to_path_buf(),
            source: Source::Memory(map),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> Vec<String> {
        match &self.source {
            Source::Mapped(m) => m.tensors().into_iter().map(|(n, _)| n).collect(),
            Source::Memory(m) => m.keys().cloned().collect(),
        }
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        match &self.source {
            Source::Mapped(m) => m
                .get(name)
                .map(|view| view.shape().to_vec())
                .map_err(|_| self.missing(name)),
            Source::Memory(m) => m
                .get(name)
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| self.missing(name)),
        }
    }

    /// The tensor `name` as f32, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let found = self.shape(name)?;
        if found != shape {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        let tensor = match &self.source {
            Source::Mapped(m) => m
                .load(name, &Device::Cpu)
                .map_err(|e| self.model_error(name, e))?,
            Source::Memory(m) => m[name].clone(),
        };
        tensor
            .to_dtype(DType::F32)
            .map_err(|e| self.model_error(name, e))
    }

    fn missing(&self, name: &str) -> Error {
        Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        }
    }

    fn model_error(&self, name: &str, e: candle_core::Error) -> Error {
        Error::Model {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {e}"),
        }
    }
}

/// Wraps a candle error from running a model.
pub(crate) fn candle_error(context: &str, e: candle_core::Error) -> Error {
    Error::Model {
        path: PathBuf::from(context),
        message: e.to_string(),
    }
}
