//! The real-CT model evaluation (`evaluate-model --real`): on a generated folder in the same
//! format (always), and on the real DeepLesion slices and DLT pairs (skipped when
//! `../shared/data` is absent).

mod common;

use lesion_search::dataset::{DlInfoReader, Split};
use lesion_search::embed::{
    bundled_lesion_cnn, resolve_model, sha256_file, Embedder, DISTILLED_MODEL,
};
use lesion_search::eval::read_pairs;
use lesion_search::eval::real_ct::{
    evaluate_dicom, evaluate_real_ct, load_dicom_slices, real_ct_markdown, RealCtInputs,
    RealCtReport, PERTURBATIONS,
};

#[test]
fn every_lesion_is_queried_under_every_perturbation_and_counted() {
    let archive = common::synth_archive(16, 5, false);
    let model = bundled_lesion_cnn().unwrap();
    let inputs = RealCtInputs {
        deeplesion: archive.path().to_path_buf(),
        pairs: Vec::new(),
    };
    let figures = evaluate_real_ct("lesion-cnn", &model, &inputs).unwrap();
    // Only validation and test patients are judged: the training split is what
    // distillation may read.
    let held_out = DlInfoReader::open(&archive.path().join("DL_info.csv"))
        .unwrap()
        .filter(|row| row.as_ref().unwrap().record.split != Split::Train)
        .count();
    assert!(held_out > 0 && held_out < 16, "{held_out}");
    assert_eq!(figures.lesions, held_out);
    assert_eq!(
        figures.reidentification.queries,
        held_out * PERTURBATIONS.len()
    );
    assert!(figures.reidentification.rank_1 <= figures.reidentification.top_5);
    assert!(figures.reidentification.mean_rank >= 1.0);
    assert_eq!(figures.same_lesion_across_studies.queries, 0);
    assert!(figures.patches_per_second_batch_32 > 0.0);
    assert!(real_ct_markdown(&[figures]).contains(&format!("| `lesion-cnn` | {held_out} |")));

    // A folder without a table is named.
    let empty = tempfile::tempdir().unwrap();
    let err = evaluate_real_ct(
        "lesion-cnn",
        &model,
        &RealCtInputs {
            deeplesion: empty.path().to_path_buf(),
            pairs: Vec::new(),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("DL_info"), "{err}");
}

#[test]
fn the_default_model_finds_real_lesions_again() {
    let Some(shared) = common::shared_data("the_default_model_finds_real_lesions_again") else {
        return;
    };
    let model = bundled_lesion_cnn().unwrap();
    let inputs = RealCtInputs {
        deeplesion: shared.join("deeplesion"),
        pairs: read_pairs(&shared.join("dlt/valid.json")).unwrap(),
    };
    let figures = evaluate_real_ct("lesion-cnn", &model, &inputs).unwrap();
    assert!(figures.lesions >= 30, "{figures:?}");
    let r = figures.reidentification;
    assert!(r.rank_1 as f32 >= 0.9 * r.queries as f32, "{figures:?}");
    // The shared slices hold two DLT pairs, each asked both ways.
    assert_eq!(figures.same_lesion_across_studies.queries, 4, "{figures:?}");
    assert_eq!(figures.same_lesion_across_studies.top_5, 4, "{figures:?}");
}

/// A phantom volume: water body, air outside, a bright sphere as the "tumour" in its mask.
fn phantom(name: &str, centre: [f32; 3]) -> lesion_search::eval::real_ct::MaskedVolume {
    use lesion_search::imaging::{decode_nrrd, encode_nrrd_i16};
    let (w, h, d) = (96usize, 96usize, 12usize);
    let mut image = Vec::with_capacity(w * h * d);
    let mut mask = Vec::with_capacity(w * h * d);
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let body = ((x as f32 - 48.0).powi(2) + (y as f32 - 48.0).powi(2)).sqrt() < 44.0;
                let r = ((x as f32 - centre[0]).powi(2)
                    + (y as f32 - centre[1]).powi(2)
                    + ((z as f32 - centre[2]) * 4.0).powi(2))
                .sqrt();
                let tumour = r < 9.0;
                let texture = ((x * 7 + y * 13 + z * 5) % 11) as i16 * 3;
                image.push(if tumour {
                    120 + texture
                } else if body {
                    30 + texture
                } else {
                    -1000
                });
                mask.push(i16::from(tumour));
            }
        }
    }
    let decode = |v: &[i16]| {
        decode_nrrd(
            &encode_nrrd_i16([w, h, d], [1.0, 1.0, 4.0], v),
            std::path::Path::new(name),
        )
        .unwrap()
    };
    lesion_search::eval::real_ct::MaskedVolume {
        name: name.to_string(),
        image: decode(&image),
        mask: decode(&mask),
    }
}

#[test]
fn masked_volumes_give_tumour_slices_normal_patches_and_an_auc() {
    use lesion_search::eval::real_ct::evaluate_volumes;
    let model = bundled_lesion_cnn().unwrap();
    let volumes = [
        phantom("a", [40.0, 50.0, 6.0]),
        phantom("b", [56.0, 44.0, 5.0]),
    ];
    let figures = evaluate_volumes(&model, &volumes).unwrap();
    assert_eq!(figures.len(), 2);
    for f in &figures {
        assert!(f.tumour_slices >= 3, "{f:?}");
        assert_eq!(f.normal_patches, 4 * f.tumour_slices, "{f:?}");
        assert_eq!(f.neighbouring_slice_found.queries, f.tumour_slices);
        let auc = f.tumour_vs_normal_auc.unwrap();
        assert!((0.0..=1.0).contains(&auc), "{f:?}");
    }
    // A mask of another size than its image is refused, naming the volume.
    let mut odd = phantom("odd", [40.0, 50.0, 6.0]);
    odd.mask.sizes = [2, 2, 2];
    let err = evaluate_volumes(&model, &[odd]).unwrap_err().to_string();
    assert!(err.contains("odd") && err.contains("mask"), "{err}");
}

/// pyradiomics' real chest CT volumes, where `LESION_CT_VOLUMES` names a folder holding them
/// (`.ci/fetch-ct-volumes` puts them in the cache).
#[test]
fn real_chest_ct_volumes_are_read_and_scored() {
    use lesion_search::eval::real_ct::{evaluate_volumes, load_masked_volumes};
    let dir = std::env::var_os("LESION_CT_VOLUMES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| lesion_search::embed::default_cache_dir().join("ct-volumes"));
    let volumes = load_masked_volumes(&dir).unwrap_or_default();
    if volumes.len() < 2 {
        eprintln!(
            "SKIP real_chest_ct_volumes_are_read_and_scored: pyradiomics' lung1/lung2 NRRD files not found in {}",
            dir.display()
        );
        return;
    }
    assert_eq!(volumes[0].image.sizes, [512, 512, 48]);
    let model = bundled_lesion_cnn().unwrap();
    let figures = evaluate_volumes(&model, &volumes).unwrap();
    assert_eq!(figures[0].tumour_slices + figures[1].tumour_slices, 14);
    assert!(figures.iter().all(|f| f.tumour_vs_normal_auc.is_some()));
    // The shipped student, distilled from ct-resnet-l2 on patches that never came from these
    // volumes, tells tumour from normal tissue better than the phantom-trained model on
    // both (BENCHMARKS.md: 0.889 and 0.754 against 0.278 and 0.543).
    let student = lesion_search::embed::bundled_distilled().unwrap();
    let distilled = evaluate_volumes(&student, &volumes).unwrap();
    for (a, b) in distilled.iter().zip(&figures) {
        let (a, b) = (
            a.tumour_vs_normal_auc.unwrap(),
            b.tumour_vs_normal_auc.unwrap(),
        );
        assert!(
            a > b + 0.1,
            "{}: distilled {a:.3}, lesion-cnn {b:.3}",
            figures[0].volume
        );
    }
}

#[test]
fn the_distilled_model_ships_by_name_with_its_card_and_embeds_like_lesion_cnn() {
    let cache = tempfile::tempdir().unwrap();
    let model = resolve_model(DISTILLED_MODEL, cache.path()).unwrap();
    assert_eq!(model.card().name, DISTILLED_MODEL);
    assert_eq!(
        model.card().patch,
        bundled_lesion_cnn().unwrap().card().patch
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/models")
        .join(DISTILLED_MODEL);
    assert_eq!(
        sha256_file(&dir.join("model.safetensors")).unwrap(),
        model.card().weights_sha256
    );
    let archive = common::synth_archive(4, 9, false);
    let dataset = lesion_search::dataset::Dataset::new(archive.path());
    let record = DlInfoReader::open(&dataset.dl_info_path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .record;
    let patch = dataset.lesion_patch(&record, &model.card().patch).unwrap();
    let v = model.embed(&[patch]).unwrap();
    assert_eq!(v[0].len(), 128);
    assert!((v[0].iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn real_dicom_ct_slices_are_read_once_each_and_their_boxes_found_again() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dicom");
    let slices = load_dicom_slices(&dir).unwrap();
    let names: Vec<&str> = slices.iter().map(|(n, _)| n.as_str()).collect();
    // The MR file is left out; CT_small's JPEG-lossless copy has the same pixels.
    assert!(!names.contains(&"examples_overlay.dcm"), "{names:?}");
    assert!(names.contains(&"chest_ct_rle.dcm"), "{names:?}");
    assert!(names.contains(&"abdomen_ct_vr_un.dcm"), "{names:?}");
    assert!(
        !(names.contains(&"CT_small.dcm") && names.contains(&"CT_small_jpeg_lossless.dcm")),
        "{names:?}"
    );
    let model = bundled_lesion_cnn().unwrap();
    let figures = evaluate_dicom("lesion-cnn", &model, &slices).unwrap();
    assert_eq!(figures.files.len(), slices.len());
    assert!(figures.boxes >= 4 * slices.len(), "{figures:?}");
    let r = figures.reidentification;
    assert_eq!(r.queries, figures.boxes * PERTURBATIONS.len());
    assert!(r.rank_1 as f32 >= 0.8 * r.queries as f32, "{figures:?}");
    let report = RealCtReport {
        deeplesion: Vec::new(),
        dicom: vec![figures],
        volumes: Vec::new(),
        bone_lesions: Vec::new(),
    };
    assert!(report.markdown().contains("Real DICOM CT slices"));
}
