//! `lesion-cnn`: a compact residual CNN the project trains itself, fast on a CPU.
//!
//! Stem (3x3, stride 2), then one basic residual block per stage, each stage after the
//! first halving the resolution and doubling the width, global average pooling and a linear
//! projection. At 64x64 px and widths 16-32-64-128 it costs about 30 MFLOP per patch.

use candle_core::{ModuleT, Tensor, D};
use candle_nn::{
    batch_norm, conv2d_no_bias, linear, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear,
    Module, VarBuilder,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LesionCnnConfig {
    pub in_channels: usize,
    pub widths: Vec<usize>,
    pub dim: usize,
}

impl Default for LesionCnnConfig {
    fn default() -> Self {
        LesionCnnConfig {
            in_channels: 3,
            widths: vec![16, 32, 64, 128],
            dim: 128,
        }
    }
}

fn conv(
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    conv2d_no_bias(in_c, out_c, k, cfg, vb)
}

fn bn(c: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    batch_norm(
        c,
        BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        },
        vb,
    )
}

struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(in_c: usize, out_c: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let shortcut = if stride != 1 || in_c != out_c {
            Some((
                conv(in_c, out_c, 1, stride, vb.pp("shortcut.conv"))?,
                bn(out_c, vb.pp("shortcut.bn"))?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: conv(in_c, out_c, 3, stride, vb.pp("conv1"))?,
            bn1: bn(out_c, vb.pp("bn1"))?,
            conv2: conv(out_c, out_c, 3, 1, vb.pp("conv2"))?,
            bn2: bn(out_c, vb.pp("bn2"))?,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let y = self.bn2.forward_t(&self.conv2.forward(&y)?, train)?;
        let shortcut = match &self.shortcut {
            Some((c, b)) => b.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

pub struct LesionCnn {
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    head: Linear,
}

impl LesionCnn {
    pub fn new(config: &LesionCnnConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let w0 = config.widths[0];
        let mut blocks = Vec::new();
        let mut in_c = w0;
        for (i, &w) in config.widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            blocks.push(BasicBlock::new(
                in_c,
                w,
                stride,
                vb.pp(format!("stage{i}")),
            )?);
            in_c = w;
        }
        Ok(LesionCnn {
            stem: conv(config.in_channels, w0, 3, 2, vb.pp("stem.conv"))?,
            stem_bn: bn(w0, vb.pp("stem.bn"))?,
            blocks,
            head: linear(in_c, config.dim, vb.pp("head"))?,
        })
    }

    /// `(batch, channels, h, w)` to `(batch, dim)`, not normalised.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = self
            .stem_bn
            .forward_t(&self.stem.forward(x)?, train)?
            .relu()?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?;
        self.head.forward(&pooled)
    }
}
