//! `ct-resnet`: the Merlin CT ResNet-152 trunk as a 2-D network.
//!
//! Merlin (Stanford MIMI) inflated ResNet-152 to 3-D for chest and abdomen CT. Summing each
//! 3-D kernel over its depth axis gives the 2-D network that equals the 3-D one applied to a
//! slab repeating the slice along z (boundaries aside); `weights import` does that once. The
//! tensor names are torchvision's (`layer3.12.conv2.weight`). Batch norms are folded into
//! the convolutions at load, since the trunk only ever runs in inference.

use candle_core::{Module, Tensor, D};

use super::card::ResnetStage;
use super::weights::{candle_error, TensorFile};
use crate::error::Result;

/// Blocks per stage of ResNet-152.
pub const RESNET152_BLOCKS: [usize; 4] = [3, 8, 36, 3];
const EXPANSION: usize = 4;
const BN_EPS: f64 = 1e-5;

/// A convolution with its batch norm folded in.
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    fn load(
        file: &TensorFile,
        conv: &str,
        bn: &str,
        [out_c, in_c, k]: [usize; 3],
        stride: usize,
    ) -> Result<Self> {
        let weight = file.get(&format!("{conv}.weight"), &[out_c, in_c, k, k])?;
        let gamma = file.get(&format!("{bn}.weight"), &[out_c])?;
        let beta = file.get(&format!("{bn}.bias"), &[out_c])?;
        let mean = file.get(&format!("{bn}.running_mean"), &[out_c])?;
        let var = file.get(&format!("{bn}.running_var"), &[out_c])?;
        let fold = || -> candle_core::Result<(Tensor, Tensor)> {
            let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
            let weight = weight.broadcast_mul(&scale.reshape((out_c, 1, 1, 1))?)?;
            let bias = (beta - mean.mul(&scale)?)?;
            Ok((weight, bias.reshape((1, out_c, 1, 1))?))
        };
        let (weight, bias) = fold().map_err(|e| candle_error(conv, e))?;
        Ok(ConvBn {
            weight,
            bias,
            stride,
            padding: k / 2,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

struct Bottleneck {
    reduce: ConvBn,
    spatial: ConvBn,
    expand: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.reduce.forward(x)?.relu()?;
        let y = self.spatial.forward(&y)?.relu()?;
        let y = self.expand.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

/// The trunk up to `stage`, then global average pooling.
pub struct ResnetTrunk {
    stem: ConvBn,
    stages: Vec<Vec<Bottleneck>>,
    stem_width: usize,
}

impl ResnetTrunk {
    /// Loads the stages up to `stage`; widths follow the stem's (64 in the real weights,
    /// smaller in test checkpoints with the same names).
    pub fn load(file: &TensorFile, stage: ResnetStage) -> Result<Self> {
        let stem_shape = file.shape("conv1.weight")?;
        let stem_width = stem_shape[0];
        let stem = ConvBn::load(file, "conv1", "bn1", [stem_width, 3, 7], 2)?;
        let stage_count = match stage {
            ResnetStage::Layer2 => 2,
            ResnetStage::Layer3 => 3,
            ResnetStage::Layer4 => 4,
        };
        let mut in_c = stem_width;
        let mut stages = Vec::new();
        for (s, &blocks) in RESNET152_BLOCKS.iter().enumerate().take(stage_count) {
            let planes = stem_width << s;
            let mut layer = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let p = format!("layer{}.{b}", s + 1);
                let downsample = if b == 0 {
                    Some(ConvBn::load(
                        file,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        [planes * EXPANSION, in_c, 1],
                        stride,
                    )?)
                } else {
                    None
                };
                layer.push(Bottleneck {
                    reduce: ConvBn::load(
                        file,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        [planes, in_c, 1],
                        1,
                    )?,
                    spatial: ConvBn::load(
                        file,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        [planes, planes, 3],
                        stride,
                    )?,
                    expand: ConvBn::load(
                        file,
                        &format!("{p}.conv3"),
                        &format!("{p}.bn3"),
                        [planes * EXPANSION, planes, 1],
                        1,
                    )?,
                    downsample,
                });
                in_c = planes * EXPANSION;
            }
            stages.push(layer);
        }
        Ok(ResnetTrunk {
            stem,
            stages,
            stem_width,
        })
    }

    pub fn output_dim(&self) -> usize {
        (self.stem_width << (self.stages.len() - 1)) * EXPANSION
    }
}

impl Module for ResnetTrunk {
    /// `(batch, 3, h, w)` in 0..1 to `(batch, features)`, before any normalisation.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?;
        // Max pool 3x3, stride 2, padding 1; zero padding is exact after a ReLU.
        let mut x = x
            .pad_with_zeros(2, 1, 1)?
            .pad_with_zeros(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x)?;
            }
        }
        x.mean(D::Minus1)?.mean(D::Minus1)
    }
}
