//! `lesion-cnn`: training is reproducible, its files load back, bad files are named.

mod common;

use std::collections::HashMap;

use lesion_search::dataset::{Dataset, DlInfoReader};
use lesion_search::embed::train::{train, TrainOptions};
use lesion_search::embed::{load_model_dir, read_card, sha256_file, LesionCnnConfig, TensorFile};
use lesion_search::Error;

fn tiny_options(dataset: &std::path::Path, out: &std::path::Path) -> TrainOptions {
    let mut o = TrainOptions::new(dataset.to_path_buf(), out.to_path_buf());
    o.config = LesionCnnConfig {
        in_channels: 3,
        widths: vec![4, 8, 8, 8],
        dim: 8,
    };
    o.epochs = 2;
    o.views = 2;
    o.batch_lesions = 8;
    o.max_lesions = Some(16);
    o
}

#[test]
fn training_is_reproducible_and_writes_model_card_and_report() {
    let archive = common::synth_archive(40, 21, true);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let report = train(&tiny_options(archive.path(), a.path()), &|_| {}).unwrap();
    train(&tiny_options(archive.path(), b.path()), &|_| {}).unwrap();
    assert_eq!(report.epochs.len(), 2);
    assert!(report.epochs.iter().all(|e| e.mean_loss.is_finite()));
    for file in [
        "model.safetensors",
        "card.json",
        "training_report.json",
        "training_report.md",
    ] {
        assert!(a.path().join(file).is_file(), "{file} missing");
    }
    let sha = sha256_file(&a.path().join("model.safetensors")).unwrap();
    assert_eq!(
        sha,
        sha256_file(&b.path().join("model.safetensors")).unwrap(),
        "same seed, different weights"
    );
    assert_eq!(read_card(a.path()).unwrap().weights_sha256, sha);
    let md = std::fs::read_to_string(a.path().join("training_report.md")).unwrap();
    assert!(md.contains("| epoch | mean loss | P@5 |"), "{md}");
}

#[test]
fn a_trained_model_loads_back_and_embeds_deterministically() {
    let archive = common::synth_archive(30, 22, true);
    let out = tempfile::tempdir().unwrap();
    train(&tiny_options(archive.path(), out.path()), &|_| {}).unwrap();
    let model = load_model_dir(out.path()).unwrap();
    let dataset = Dataset::new(archive.path());
    let records: Vec<_> = DlInfoReader::open(&dataset.dl_info_path())
        .unwrap()
        .map(|r| r.unwrap().record)
        .collect();
    let patches: Vec<_> = records
        .iter()
        .take(5)
        .map(|r| dataset.lesion_patch(r, &model.card().patch).unwrap())
        .collect();
    let first = model.embed(&patches).unwrap();
    assert_eq!(first, model.embed(&patches).unwrap());
    // Batch composition does not change a vector (inference uses running statistics) beyond
    // the last bits of float rounding.
    let alone = model.embed(&patches[2..3]).unwrap().remove(0);
    assert!(
        first[2]
            .iter()
            .zip(&alone)
            .all(|(a, b)| (a - b).abs() < 1e-5),
        "{:?} vs {alone:?}",
        first[2]
    );
    for v in &first {
        assert_eq!(v.len(), 8);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // A patch of the wrong size is refused by name.
    let mut wrong = patches[0].clone();
    wrong.size_px = 32;
    assert!(model
        .embed(&[wrong])
        .unwrap_err()
        .to_string()
        .contains("patch 0 is 32x32"));
}

#[test]
fn missing_tensor_in_a_lesion_cnn_file_is_named() {
    let archive = common::synth_archive(30, 23, true);
    let out = tempfile::tempdir().unwrap();
    train(&tiny_options(archive.path(), out.path()), &|_| {}).unwrap();
    let weights = out.path().join("model.safetensors");
    let file = TensorFile::open(&weights).unwrap();
    let mut tensors = HashMap::new();
    for name in file.names() {
        if name != "stage2.bn1.running_var" {
            let shape = file.shape(&name).unwrap();
            tensors.insert(name.clone(), file.get(&name, &shape).unwrap());
        }
    }
    drop(file);
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let err = load_model_dir(out.path()).err().unwrap();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("`stage2.bn1.running_var`"),
        "{err}"
    );
}

/// A cache holding a small CT ResNet with the real tensor names, as `weights import` lays it out.
fn fake_ct_resnet_cache() -> tempfile::TempDir {
    use lesion_search::embed::{
        ct_resnet_model_name, ct_resnet_patch_spec, write_card, Architecture, ModelCard,
        ResnetStage, CT_RESNET_WEIGHTS,
    };
    let cache = tempfile::tempdir().unwrap();
    let weights = common::small_checkpoint(cache.path(), None, None);
    std::fs::rename(&weights, cache.path().join(CT_RESNET_WEIGHTS)).unwrap();
    let dir = cache.path().join(ct_resnet_model_name(ResnetStage::Layer2));
    std::fs::create_dir_all(&dir).unwrap();
    let card = ModelCard {
        name: "ct-resnet-l2".into(),
        architecture: Architecture::CtResnet {
            stage: ResnetStage::Layer2,
            projection: None,
        },
        patch: ct_resnet_patch_spec(64),
        output_dim: 32,
        weights_file: format!("../{CT_RESNET_WEIGHTS}"),
        weights_sha256: sha256_file(&cache.path().join(CT_RESNET_WEIGHTS)).unwrap(),
        provenance: "test".into(),
        trunk: None,
    };
    write_card(&dir, &card).unwrap();
    cache
}

#[test]
fn a_head_on_frozen_ct_resnet_features_trains_and_loads_with_its_trunk() {
    use lesion_search::embed::train::Encoder;
    use lesion_search::embed::ResnetStage;
    let archive = common::synth_archive(30, 24, true);
    let cache = fake_ct_resnet_cache();
    let out = tempfile::tempdir().unwrap();
    let mut options = tiny_options(archive.path(), out.path());
    options.encoder = Encoder::CtResnetHead(ResnetStage::Layer2);
    options.cache = cache.path().to_path_buf();
    let report = train(&options, &|_| {}).unwrap();
    assert_eq!(report.model, "ct-resnet-l2-head");
    let card = read_card(out.path()).unwrap();
    assert_eq!(card.weights_file, "head.safetensors");
    assert!(card.trunk.is_some());
    let model = load_model_dir(out.path()).unwrap();
    let dataset = Dataset::new(archive.path());
    let record = DlInfoReader::open(&dataset.dl_info_path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .record;
    let patch = dataset.lesion_patch(&record, &model.card().patch).unwrap();
    assert_eq!(model.embed(&[patch]).unwrap()[0].len(), 8);
}

#[test]
fn distillation_needs_no_labels_reads_only_the_training_split_and_loads_without_its_teacher() {
    use lesion_search::embed::distill::{distill, DistillOptions};
    let archive = common::synth_archive(30, 25, true);
    let cache = fake_ct_resnet_cache();
    let out = tempfile::tempdir().unwrap();
    let mut options = DistillOptions::new(vec![archive.path().to_path_buf()], out.path().into());
    options.cache = cache.path().to_path_buf();
    options.config = LesionCnnConfig {
        in_channels: 3,
        widths: vec![4, 8, 8, 8],
        dim: 8,
    };
    options.from_scratch = true;
    options.epochs = 2;
    options.batch = 8;
    options.body_patches_per_slice = 2;
    let report = distill(&options, &|_| {}).unwrap();
    drop(cache);

    let records: Vec<_> = DlInfoReader::open(&archive.path().join("DL_info.csv"))
        .unwrap()
        .map(|r| r.unwrap().record)
        .collect();
    let training = records
        .iter()
        .filter(|r| r.split == lesion_search::dataset::Split::Train)
        .count();
    let source = &report.sources[0];
    assert_eq!(source.lesion_patches, training, "{report:?}");
    assert_eq!(source.held_out_lesions, records.len() - training);
    assert!(
        source.body_patches > 0 && source.body_slices > 0,
        "{report:?}"
    );
    assert_eq!(
        report.patches,
        source.lesion_patches + source.body_patches,
        "{report:?}"
    );
    assert_eq!(report.epochs.len(), 2);
    assert!(report.epochs.iter().all(|e| e.mean_loss.is_finite()));
    for file in [
        "model.safetensors",
        "card.json",
        "distill_report.json",
        "distill_report.md",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    let model = load_model_dir(out.path()).unwrap();
    assert_eq!(model.card().name, "lesion-cnn-distilled-l2");
    let dataset = Dataset::new(archive.path());
    let patch = dataset
        .lesion_patch(&records[0], &model.card().patch)
        .unwrap();
    assert_eq!(model.embed(&[patch]).unwrap()[0].len(), 8);

    // The bundled lesion-cnn is the default start; a student of another shape is refused.
    let mut mismatched = options.clone();
    mismatched.from_scratch = false;
    mismatched.out = tempfile::tempdir().unwrap().path().join("m");
    let cache = fake_ct_resnet_cache();
    mismatched.cache = cache.path().to_path_buf();
    let err = distill(&mismatched, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("widths"), "{err}");
}
