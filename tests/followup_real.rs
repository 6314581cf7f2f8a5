//! Follow-up matching and the outlook on real data: DLT's radiologist-matched pairs looked up
//! in DeepLesion's table, and an archive built from the real slices that are shared. Skips
//! (with a message) where `../shared/data` is absent.

mod common;

use std::path::Path;

use lesion_search::archive::{build, BuildOptions};
use lesion_search::dataset::{write_dl_info, DlInfoReader, LesionRecord};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::eval::read_pairs;
use lesion_search::followup::outlook::table_trajectories;
use lesion_search::followup::table::resolve_pairs;
use lesion_search::followup::{
    evaluate, evaluate_outlook, fit_matcher, LesionTable, MatcherModel, OutlookModel,
};
use lesion_search::index::GraphParams;
use lesion_search::search::Engine;

fn real_table(shared: &Path) -> LesionTable {
    let rows = DlInfoReader::open(&shared.join("deeplesion/DL_info_partial.csv")).unwrap();
    LesionTable::new(rows.map(|r| r.unwrap().record).collect())
}

#[test]
fn the_shipped_matcher_is_what_fitting_on_real_pairs_makes_and_meets_its_aims() {
    let Some(shared) =
        common::shared_data("the_shipped_matcher_is_what_fitting_on_real_pairs_makes")
    else {
        return;
    };
    let table = real_table(&shared);
    let pairs = read_pairs(&shared.join("dlt/valid.json")).unwrap();
    let none = Default::default();
    let (fitted, _) = fit_matcher(&table, &pairs, &none, "", "");
    let shipped = MatcherModel::bundled();
    for (a, b) in fitted.weights.iter().zip(&shipped.weights) {
        assert!(
            (a - b).abs() < 1e-6,
            "data/followup/matcher.json is stale: {a} vs {b}"
        );
    }
    assert!((fitted.match_threshold - shipped.match_threshold).abs() < 1e-6);

    let report = evaluate(&table, &pairs, shipped, &none);
    assert_eq!((report.pairs, report.resolved), (906, 906));
    // The aim is for unseen patients: the leave-patient-out figure, not the in-sample one.
    assert!(report.cross_validated_accuracy_at_1 >= 0.92, "{report:?}");
    assert!(report.accuracy_at_1 >= report.nearest_location_accuracy_at_1);
    assert!(report.accuracy_at_3 >= 0.99, "{report:?}");
    let n = &report.no_match;
    assert!(
        n.precision > 0.9 && n.recall > 0.7 && n.false_no_match < 0.06,
        "{n:?}"
    );
    assert!(report.by_type.iter().map(|t| t.pairs).sum::<usize>() == 906);
    // The probabilities mean what they say for unseen patients.
    assert!(
        report.calibration.expected_calibration_error < 0.06,
        "{:?}",
        report.calibration
    );
}

#[test]
fn the_shipped_outlook_figures_are_what_real_pairs_give() {
    let Some(shared) = common::shared_data("the_shipped_outlook_figures_are_what_real_pairs_give")
    else {
        return;
    };
    let table = real_table(&shared);
    let pairs = read_pairs(&shared.join("dlt/valid.json")).unwrap();
    let trajectories = table_trajectories(&table, &pairs, &Default::default());
    let shipped = OutlookModel::bundled();
    let measured = evaluate_outlook(shipped, &trajectories, "");
    let e = shipped
        .evaluation
        .as_ref()
        .expect("the outlook ships its measurement");
    assert_eq!((measured.pairs, measured.patients), (e.pairs, e.patients));
    assert!((measured.brier - e.brier).abs() < 1e-4, "{measured:?}");
    assert!((measured.brier_base_rates - e.brier_base_rates).abs() < 1e-4);
    assert_eq!(measured.beats_base_rates, e.beats_base_rates);
    assert_eq!(
        lesion_search::followup::outlook::choose_prior_weight(shipped, &trajectories),
        shipped.prior_weight
    );
}

/// A DeepLesion folder of the real rows whose key slice is shared.
fn real_slices_dataset(shared: &Path) -> (tempfile::TempDir, Vec<LesionRecord>) {
    let images = shared.join("deeplesion/Images_png");
    let records: Vec<LesionRecord> =
        DlInfoReader::open(&shared.join("deeplesion/DL_info_partial.csv"))
            .unwrap()
            .map(|r| r.unwrap().record)
            .filter(|r| r.key_slice_path(&shared.join("deeplesion")).is_file())
            .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("DL_info.csv")).unwrap();
    write_dl_info(file, &records).unwrap();
    std::os::unix::fs::symlink(&images, dir.path().join("Images_png")).unwrap();
    (dir, records)
}

#[test]
fn every_real_pair_among_the_shared_slices_is_matched_in_the_archive() {
    let Some(shared) =
        common::shared_data("every_real_pair_among_the_shared_slices_is_matched_in_the_archive")
    else {
        return;
    };
    let (dataset, records) = real_slices_dataset(&shared);
    let model = bundled_lesion_cnn().unwrap();
    let index = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        dataset: dataset.path().to_path_buf(),
        reports: None,
        model: &model,
        graph: GraphParams::default(),
        labels: None,
    };
    build(index.path(), &options, &|_| {}).unwrap();
    let engine = Engine::open(index.path(), std::sync::Arc::new(model)).unwrap();

    let table = LesionTable::new(records);
    let pairs = read_pairs(&shared.join("dlt/valid.json")).unwrap();
    let (among, _) = resolve_pairs(&table, &pairs);
    assert!(!among.is_empty(), "the shared slices hold DLT pairs");
    for pair in among {
        let (source, target) = (&table.records[pair.source], &table.records[pair.target]);
        let id_of = |r: &LesionRecord| engine.id_of(&r.file_name).unwrap().unwrap();
        let (source_id, target_id) = (id_of(source), id_of(target));
        let followups = engine.followups(source_id).unwrap();
        let study = followups
            .studies
            .iter()
            .find(|s| s.study == target.study)
            .expect("the target's study is searched");
        assert_eq!(
            study.matched,
            Some(target_id),
            "{} should be found in study {} as {}: {study:?}",
            source.file_name,
            target.study,
            target.file_name
        );
        assert!(followups.series.iter().any(|f| f.id == target_id));

        // The outlook is evidence only: the measurement did not beat the base rates.
        let outlook = engine.outlook(source_id).unwrap();
        assert!(outlook
            .similar
            .iter()
            .all(|s| { engine.facts(s.from).unwrap().patient != source.patient }));
        assert_eq!(
            outlook.prediction.is_some(),
            OutlookModel::bundled()
                .evaluation
                .as_ref()
                .is_some_and(|e| e.beats_base_rates)
        );
    }
}
