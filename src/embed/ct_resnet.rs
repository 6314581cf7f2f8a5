//! `ct-resnet`: the Merlin CT ResNet-152 trunk as a 2-D network.
//!
//! Merlin (Stanford MIMI) inflated ResNet-152 to 3-D for chest and abdomen CT. Summing each
//! 3-D kernel over its depth axis gives the 2-D network that equals the 3-D one applied to a
//! slab repeating the slice along z (boundaries aside); `weights import` does that once. The
//! tensor names are torchvision's (`layer3.12.conv2.weight`).
//!
//! The trunk only ever runs in inference, so each batch norm is folded into its convolution
//! at load. It runs in one of two layouts ([`TrunkLayout`]): channels last, where every
//! convolution is one matrix product of the output pixels' neighbourhoods (im2col rows, each
//! `kernel x kernel` runs of contiguous channels) with the folded kernel, accumulated onto
//! the bias and, at the end of a block, the shortcut, then a ReLU in place; or candle's own
//! NCHW convolutions. Channels last is the default: on two cores it ran 2.2 to 3.3 times
//! faster (BENCHMARKS.md, "Bundled CT trunk"); NCHW stays as the oracle it is tested against.

use candle_core::{Device, Module, Tensor, D};
use rayon::prelude::*;

use super::card::ResnetStage;
use super::weights::{candle_error, TensorFile};
use crate::error::Result;

/// Blocks per stage of ResNet-152.
pub const RESNET152_BLOCKS: [usize; 4] = [3, 8, 36, 3];
const EXPANSION: usize = 4;
const BN_EPS: f64 = 1e-5;
/// Patches run through the network at a time: bounds the feature maps' memory for callers
/// that embed hundreds of patches in one call.
const MAX_BATCH: usize = 32;
/// Output pixels per unit of parallel work, at least and at most: each unit repacks the
/// kernel for its matrix product, so units are as large as the threads allow, yet small
/// enough that one patch's layer 2 (64 pixels) still splits across two cores.
const MIN_TILE_ROWS: usize = 16;
const MAX_TILE_ROWS: usize = 128;

fn tile_rows(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1))
        .next_multiple_of(MIN_TILE_ROWS)
        .clamp(MIN_TILE_ROWS, MAX_TILE_ROWS)
}

/// How the trunk lays out its feature maps and kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkLayout {
    /// `(batch, height, width, channels)`, convolutions as matrix products (the default).
    ChannelsLast,
    /// `(batch, channels, height, width)`, candle's `conv2d`.
    CandleNchw,
}

/// A folded kernel laid out for one layout.
trait Kernel: Sized {
    /// From candle's `(out, in, ky, kx)` weight and `(out)` bias, batch norm folded in.
    fn from_folded(weight: Tensor, bias: Tensor) -> candle_core::Result<Self>;
}

/// `(ky, kx, in, out)` row-major, so that an im2col row times it is one output pixel.
struct GemmKernel {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Kernel for GemmKernel {
    fn from_folded(weight: Tensor, bias: Tensor) -> candle_core::Result<Self> {
        Ok(GemmKernel {
            weight: weight.permute((2, 3, 1, 0))?.flatten_all()?.to_vec1()?,
            bias: bias.to_vec1()?,
        })
    }
}

/// candle's layout, the bias shaped `(1, out, 1, 1)` to broadcast.
struct CandleKernel {
    weight: Tensor,
    bias: Tensor,
}

impl Kernel for CandleKernel {
    fn from_folded(weight: Tensor, bias: Tensor) -> candle_core::Result<Self> {
        let out = bias.dims1()?;
        Ok(CandleKernel {
            weight,
            bias: bias.reshape((1, out, 1, 1))?,
        })
    }
}

/// A convolution with its batch norm folded in.
struct FoldedConv<K> {
    kernel: K,
    in_channels: usize,
    out_channels: usize,
    size: usize,
    stride: usize,
    padding: usize,
}

impl<K: Kernel> FoldedConv<K> {
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
        let fold = || -> candle_core::Result<K> {
            let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
            let weight = weight.broadcast_mul(&scale.reshape((out_c, 1, 1, 1))?)?;
            let bias = (beta - mean.mul(&scale)?)?;
            K::from_folded(weight, bias)
        };
        let kernel = fold().map_err(|e| candle_error(conv, e))?;
        Ok(FoldedConv {
            kernel,
            in_channels: in_c,
            out_channels: out_c,
            size: k,
            stride,
            padding: k / 2,
        })
    }

    fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.size) / self.stride + 1
    }
}

/// A batch of feature maps, channels last: `(batch, height, width, channels)`, row-major.
struct FeatureMaps {
    data: Vec<f32>,
    batch: usize,
    height: usize,
    width: usize,
    channels: usize,
}

impl FoldedConv<GemmKernel> {
    /// `relu(conv(x) + bias + shortcut)`, the ReLU and shortcut optional.
    fn forward(&self, x: &FeatureMaps, shortcut: Option<&FeatureMaps>, relu: bool) -> FeatureMaps {
        debug_assert_eq!(x.channels, self.in_channels);
        let (out_h, out_w) = (self.output_size(x.height), self.output_size(x.width));
        let rows = x.batch * out_h * out_w;
        let n = self.out_channels;
        let depth = self.size * self.size * self.in_channels;
        let GemmKernel { weight, bias } = &self.kernel;
        // A 1x1 convolution at stride 1 reads the maps as they are.
        let direct = self.size == 1 && self.stride == 1;
        let mut out = vec![0f32; rows * n];
        let tile_rows = tile_rows(rows);
        out.par_chunks_mut(tile_rows * n)
            .enumerate()
            .for_each(|(tile, dst)| {
                let first = tile * tile_rows;
                let count = dst.len() / n;
                match shortcut {
                    Some(s) => {
                        let from = &s.data[first * n..(first + count) * n];
                        for (values, from) in dst.chunks_exact_mut(n).zip(from.chunks_exact(n)) {
                            for ((v, b), s) in values.iter_mut().zip(bias).zip(from) {
                                *v = b + s;
                            }
                        }
                    }
                    None => {
                        for values in dst.chunks_exact_mut(n) {
                            values.copy_from_slice(bias);
                        }
                    }
                }
                let gathered;
                let lhs = if direct {
                    &x.data[first * depth..(first + count) * depth]
                } else {
                    gathered = self.im2col(x, out_h, out_w, first, count);
                    &gathered[..]
                };
                multiply_accumulate(dst, lhs, weight, count, depth, n);
                if relu {
                    for v in dst.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            });
        FeatureMaps {
            data: out,
            batch: x.batch,
            height: out_h,
            width: out_w,
            channels: n,
        }
    }

    /// The neighbourhoods of output pixels `first..first + count` (counted over the whole
    /// batch), one row each; taps outside the image stay zero (the zero padding).
    fn im2col(
        &self,
        x: &FeatureMaps,
        out_h: usize,
        out_w: usize,
        first: usize,
        count: usize,
    ) -> Vec<f32> {
        let c = x.channels;
        let k = self.size;
        let depth = k * k * c;
        let mut cols = vec![0f32; count * depth];
        for (row, col) in cols.chunks_exact_mut(depth).enumerate() {
            let pixel = first + row;
            let b = pixel / (out_h * out_w);
            let oy = (pixel / out_w) % out_h;
            let ox = pixel % out_w;
            for ky in 0..k {
                let Some(iy) = (oy * self.stride + ky).checked_sub(self.padding) else {
                    continue;
                };
                if iy >= x.height {
                    continue;
                }
                for kx in 0..k {
                    let Some(ix) = (ox * self.stride + kx).checked_sub(self.padding) else {
                        continue;
                    };
                    if ix >= x.width {
                        continue;
                    }
                    let from = ((b * x.height + iy) * x.width + ix) * c;
                    let to = (ky * k + kx) * c;
                    col[to..to + c].copy_from_slice(&x.data[from..from + c]);
                }
            }
        }
        cols
    }
}

impl FoldedConv<CandleKernel> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.kernel.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.kernel.bias)
    }
}

/// `dst (m x n) += lhs (m x k) * rhs (k x n)`, all row-major and contiguous, on this thread
/// (the callers parallelise over tiles of rows).
fn multiply_accumulate(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() == m * n && lhs.len() == m * k && rhs.len() == k * n);
    // SAFETY: the three slices hold exactly the m x n, m x k and k x n row-major matrices
    // the strides describe (checked above), and `dst` is borrowed mutably, so nothing else
    // reads or writes it during the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Max pool 3x3, stride 2, padding 1. Taps outside the image are skipped, which is exact
/// here: the maps come out of a ReLU.
fn max_pool(x: &FeatureMaps) -> FeatureMaps {
    let out_h = (x.height - 1) / 2 + 1;
    let out_w = (x.width - 1) / 2 + 1;
    let c = x.channels;
    let mut out = vec![f32::NEG_INFINITY; x.batch * out_h * out_w * c];
    out.par_chunks_mut(out_w * c)
        .enumerate()
        .for_each(|(line, dst)| {
            let b = line / out_h;
            let oy = line % out_h;
            for ox in 0..out_w {
                let cell = &mut dst[ox * c..(ox + 1) * c];
                for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(x.height) {
                    for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(x.width) {
                        let from = ((b * x.height + iy) * x.width + ix) * c;
                        for (m, v) in cell.iter_mut().zip(&x.data[from..from + c]) {
                            *m = m.max(*v);
                        }
                    }
                }
            }
        });
    FeatureMaps {
        data: out,
        batch: x.batch,
        height: out_h,
        width: out_w,
        channels: c,
    }
}

struct Bottleneck<K> {
    reduce: FoldedConv<K>,
    spatial: FoldedConv<K>,
    expand: FoldedConv<K>,
    downsample: Option<FoldedConv<K>>,
}

impl Bottleneck<GemmKernel> {
    fn forward(&self, x: &FeatureMaps) -> FeatureMaps {
        let y = self.reduce.forward(x, None, true);
        let y = self.spatial.forward(&y, None, true);
        match &self.downsample {
            Some(d) => self
                .expand
                .forward(&y, Some(&d.forward(x, None, false)), true),
            None => self.expand.forward(&y, Some(x), true),
        }
    }
}

impl Bottleneck<CandleKernel> {
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

/// The stem and the stages of one layout.
struct Network<K> {
    stem: FoldedConv<K>,
    stages: Vec<Vec<Bottleneck<K>>>,
}

impl<K: Kernel> Network<K> {
    fn load(file: &TensorFile, stem_width: usize, stage_count: usize) -> Result<Self> {
        let stem = FoldedConv::load(file, "conv1", "bn1", [stem_width, 3, 7], 2)?;
        let mut in_c = stem_width;
        let mut stages = Vec::new();
        for (s, &blocks) in RESNET152_BLOCKS.iter().enumerate().take(stage_count) {
            let planes = stem_width << s;
            let mut layer = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let p = format!("layer{}.{b}", s + 1);
                let downsample = if b == 0 {
                    Some(FoldedConv::load(
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
                    reduce: FoldedConv::load(
                        file,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        [planes, in_c, 1],
                        1,
                    )?,
                    spatial: FoldedConv::load(
                        file,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        [planes, planes, 3],
                        stride,
                    )?,
                    expand: FoldedConv::load(
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
        Ok(Network { stem, stages })
    }
}

impl Network<GemmKernel> {
    /// Features of `batch` patches of `3 x height x width` (NCHW, as patches are laid out),
    /// the last stage's width per patch.
    fn features(&self, input: &[f32], batch: usize, height: usize, width: usize) -> Vec<f32> {
        let channels = self.stem.in_channels;
        let plane = height * width;
        let mut data = vec![0f32; input.len()];
        for (patch, dst) in input
            .chunks_exact(channels * plane)
            .zip(data.chunks_exact_mut(channels * plane))
        {
            for (c, values) in patch.chunks_exact(plane).enumerate() {
                for (p, v) in values.iter().enumerate() {
                    dst[p * channels + c] = *v;
                }
            }
        }
        let x = FeatureMaps {
            data,
            batch,
            height,
            width,
            channels,
        };
        let mut x = max_pool(&self.stem.forward(&x, None, true));
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x);
            }
        }
        let c = x.channels;
        let pixels = x.height * x.width;
        let mut pooled = vec![0f32; batch * c];
        for (sums, maps) in pooled
            .chunks_exact_mut(c)
            .zip(x.data.chunks_exact(pixels * c))
        {
            for pixel in maps.chunks_exact(c) {
                for (s, v) in sums.iter_mut().zip(pixel) {
                    *s += v;
                }
            }
            for s in sums.iter_mut() {
                *s /= pixels as f32;
            }
        }
        pooled
    }
}

impl Network<CandleKernel> {
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

enum Laid {
    ChannelsLast(Network<GemmKernel>),
    CandleNchw(Network<CandleKernel>),
}

/// The trunk up to `stage`, then global average pooling.
pub struct ResnetTrunk {
    network: Laid,
    stem_width: usize,
    stage_count: usize,
}

impl ResnetTrunk {
    /// Loads the stages up to `stage`, channels last; widths follow the stem's (64 in the
    /// real weights, smaller in test checkpoints with the same names).
    pub fn load(file: &TensorFile, stage: ResnetStage) -> Result<Self> {
        Self::load_laid_out(file, stage, TrunkLayout::ChannelsLast)
    }

    /// Loads the stages up to `stage` in `layout`.
    pub fn load_laid_out(
        file: &TensorFile,
        stage: ResnetStage,
        layout: TrunkLayout,
    ) -> Result<Self> {
        let stem_width = file.shape("conv1.weight")?[0];
        let stage_count = match stage {
            ResnetStage::Layer2 => 2,
            ResnetStage::Layer3 => 3,
            ResnetStage::Layer4 => 4,
        };
        let network = match layout {
            TrunkLayout::ChannelsLast => {
                Laid::ChannelsLast(Network::load(file, stem_width, stage_count)?)
            }
            TrunkLayout::CandleNchw => {
                Laid::CandleNchw(Network::load(file, stem_width, stage_count)?)
            }
        };
        Ok(ResnetTrunk {
            network,
            stem_width,
            stage_count,
        })
    }

    pub fn output_dim(&self) -> usize {
        (self.stem_width << (self.stage_count - 1)) * EXPANSION
    }

    pub fn layout(&self) -> TrunkLayout {
        match self.network {
            Laid::ChannelsLast(_) => TrunkLayout::ChannelsLast,
            Laid::CandleNchw(_) => TrunkLayout::CandleNchw,
        }
    }
}

impl Module for ResnetTrunk {
    /// `(batch, 3, h, w)` in 0..1 to `(batch, features)`, before any normalisation.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let network = match &self.network {
            Laid::CandleNchw(network) => return network.forward(x),
            Laid::ChannelsLast(network) => network,
        };
        let (batch, channels, height, width) = x.dims4()?;
        if channels != network.stem.in_channels || height < 2 || width < 2 {
            return Err(candle_core::Error::Msg(format!(
                "ct-resnet takes (batch, {}, h, w) with h, w >= 2, not {:?}",
                network.stem.in_channels,
                x.dims()
            )));
        }
        let input = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let per_patch = channels * height * width;
        let mut features = Vec::with_capacity(batch * self.output_dim());
        for chunk in input.chunks(MAX_BATCH * per_patch) {
            features.extend(network.features(chunk, chunk.len() / per_patch, height, width));
        }
        Tensor::from_vec(features, (batch, self.output_dim()), &Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
    }

    fn tensor(values: Vec<f32>, shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn to_channels_last(t: &Tensor) -> FeatureMaps {
        let (batch, channels, height, width) = t.dims4().unwrap();
        FeatureMaps {
            data: t
                .permute((0, 2, 3, 1))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap(),
            batch,
            height,
            width,
            channels,
        }
    }

    fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn channels_last_convolutions_match_candles() {
        let mut rng = Rng::new(29);
        // (kernel, stride, input channels, output channels, size, batch): the shapes of the
        // stem, the 1x1 and 3x3 convolutions, the strided downsample, odd sizes and edges.
        for (k, stride, i, o, size, batch) in [
            (7, 2, 3, 8, 21, 2),
            (1, 1, 16, 24, 9, 3),
            (3, 1, 8, 8, 7, 1),
            (3, 2, 8, 12, 9, 2),
            (1, 2, 16, 32, 10, 2),
            (3, 1, 5, 7, 64, 1),
        ] {
            let weight = tensor(random(&mut rng, o * i * k * k), (o, i, k, k));
            let bias = Tensor::from_vec(random(&mut rng, o), o, &Device::Cpu).unwrap();
            fn geometry<K>(
                kernel: K,
                k: usize,
                stride: usize,
                i: usize,
                o: usize,
            ) -> FoldedConv<K> {
                FoldedConv {
                    kernel,
                    in_channels: i,
                    out_channels: o,
                    size: k,
                    stride,
                    padding: k / 2,
                }
            }
            let gemm = GemmKernel::from_folded(weight.clone(), bias.clone()).unwrap();
            let gemm = geometry(gemm, k, stride, i, o);
            let candle = geometry(
                CandleKernel::from_folded(weight, bias).unwrap(),
                k,
                stride,
                i,
                o,
            );
            let x = tensor(
                random(&mut rng, batch * i * size * size),
                (batch, i, size, size),
            );
            let out = gemm.output_size(size);
            let s = tensor(
                random(&mut rng, batch * o * out * out),
                (batch, o, out, out),
            );
            let plain = candle.forward(&x).unwrap();
            let summed = (plain.clone() + &s).unwrap().relu().unwrap();
            for (shortcut, relu, expected) in [(None, false, plain), (Some(&s), true, summed)] {
                let got = gemm.forward(
                    &to_channels_last(&x),
                    shortcut.map(to_channels_last).as_ref(),
                    relu,
                );
                assert_eq!(
                    (got.batch, got.height, got.width, got.channels),
                    (batch, out, out, o)
                );
                let worst = largest_difference(&got.data, &to_channels_last(&expected).data);
                assert!(worst < 1e-4, "k {k} stride {stride}: {worst}");
            }
        }
    }

    #[test]
    fn max_pool_matches_candles_padded_pool() {
        let mut rng = Rng::new(3);
        for size in [8, 9, 32] {
            let values: Vec<f32> = random(&mut rng, 2 * 5 * size * size)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect();
            let x = tensor(values, (2, 5, size, size));
            let expected = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap()
                .max_pool2d_with_stride(3, 2)
                .unwrap();
            let got = max_pool(&to_channels_last(&x));
            assert_eq!(
                largest_difference(&got.data, &to_channels_last(&expected).data),
                0.0
            );
        }
    }
}
