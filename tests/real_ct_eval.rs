//! The real-CT model evaluation (`evaluate-model --real`): on a generated folder in the same
//! format (always), and on the real DeepLesion slices and DLT pairs (skipped when
//! `../shared/data` is absent).

mod common;

use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::eval::read_pairs;
use lesion_search::eval::real_ct::{
    evaluate_real_ct, real_ct_markdown, RealCtInputs, PERTURBATIONS,
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
    assert_eq!(figures.lesions, 16);
    assert_eq!(figures.reidentification.queries, 16 * PERTURBATIONS.len());
    assert!(figures.reidentification.rank_1 <= figures.reidentification.top_5);
    assert!(figures.reidentification.mean_rank >= 1.0);
    assert_eq!(figures.same_lesion_across_studies.queries, 0);
    assert!(figures.patches_per_second_batch_32 > 0.0);
    assert!(real_ct_markdown(&[figures]).contains("| `lesion-cnn` | 16 |"));

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
