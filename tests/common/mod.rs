//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lesion_search::embed::RESNET152_BLOCKS;

use lesion_search::synth::{generate, SynthOptions};

/// `../shared/data` beside the checkout, or `None` with a message saying the test skips.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.join("deeplesion/DL_info_partial.csv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: real DeepLesion data not found at {}",
            dir.display()
        );
        None
    }
}

/// A generated archive in a fresh temporary folder.
pub fn synth_archive(lesions: usize, seed: u64, label_train: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let options = SynthOptions {
        lesions,
        seed,
        label_train,
        ..Default::default()
    };
    generate(dir.path(), &options, &|_, _| {}).unwrap();
    dir
}

/// Every tensor name and shape of torchvision's ResNet-152 trunk, at a given stem width.
pub fn resnet152_shapes(stem: usize) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut conv_bn = |conv: String, bn: String, shape: Vec<usize>| {
        let c = shape[0];
        out.push((format!("{conv}.weight"), shape));
        for p in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{bn}.{p}"), vec![c]));
        }
    };
    conv_bn("conv1".into(), "bn1".into(), vec![stem, 3, 7, 7]);
    let mut in_c = stem;
    for (s, &blocks) in RESNET152_BLOCKS.iter().enumerate() {
        let planes = stem << s;
        for b in 0..blocks {
            let p = format!("layer{}.{b}", s + 1);
            conv_bn(
                format!("{p}.conv1"),
                format!("{p}.bn1"),
                vec![planes, in_c, 1, 1],
            );
            conv_bn(
                format!("{p}.conv2"),
                format!("{p}.bn2"),
                vec![planes, planes, 3, 3],
            );
            conv_bn(
                format!("{p}.conv3"),
                format!("{p}.bn3"),
                vec![planes * 4, planes, 1, 1],
            );
            if b == 0 {
                conv_bn(
                    format!("{p}.downsample.0"),
                    format!("{p}.downsample.1"),
                    vec![planes * 4, in_c, 1, 1],
                );
            }
            in_c = planes * 4;
        }
    }
    out
}

pub fn small_checkpoint(dir: &Path, skip: Option<&str>, reshape: Option<&str>) -> PathBuf {
    let mut tensors = HashMap::new();
    for (i, (name, shape)) in resnet152_shapes(4).into_iter().enumerate() {
        if Some(name.as_str()) == skip {
            continue;
        }
        let shape = if Some(name.as_str()) == reshape {
            vec![shape[0] + 1]
        } else {
            shape
        };
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|k| {
                if name.ends_with("running_var") {
                    1.0
                } else {
                    ((k * 31 + i * 7) % 17) as f32 / 40.0 - 0.2
                }
            })
            .collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    }
    let path = dir.join("small.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// Splits a generated archive into two DeepLesion folders over the same slices: the first
/// `first` rows, and the rest.
pub fn split_archive(
    archive: &std::path::Path,
    first: usize,
) -> (tempfile::TempDir, tempfile::TempDir) {
    let table = std::fs::read_to_string(archive.join("DL_info.csv")).unwrap();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let part = |rows: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(dir.path().join("DL_info.csv"), format!("{header}\n{body}")).unwrap();
        std::os::unix::fs::symlink(archive.join("Images_png"), dir.path().join("Images_png"))
            .unwrap();
        std::fs::copy(
            archive.join("reports.jsonl"),
            dir.path().join("reports.jsonl"),
        )
        .unwrap();
        dir
    };
    (part(&rows[..first]), part(&rows[first..]))
}
