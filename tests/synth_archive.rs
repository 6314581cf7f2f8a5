//! The generated archive: reproducible, valid DeepLesion format, lesions where the table says.

mod common;

use std::collections::HashMap;
use std::path::Path;

use lesion_search::dataset::{
    inspect, lesion_keys, read_reports, CoarseType, Dataset, DlInfoReader, InspectOptions,
    LesionRecord,
};
use lesion_search::imaging::{FieldOfView, PatchSpec, WindowChoice, WindowPreset};

fn records(root: &Path) -> Vec<LesionRecord> {
    DlInfoReader::open(&root.join("DL_info.csv"))
        .unwrap()
        .map(|r| r.unwrap().record)
        .collect()
}

fn all_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let a = common::synth_archive(10, 42, false);
    let b = common::synth_archive(10, 42, false);
    let c = common::synth_archive(10, 43, false);
    let (fa, fb, fc) = (
        all_bytes(a.path()),
        all_bytes(b.path()),
        all_bytes(c.path()),
    );
    assert!(fa.len() > 20, "only {} files", fa.len());
    assert!(fa == fb, "same seed, different output");
    assert!(fa != fc, "different seeds, same output");
}

#[test]
fn archive_is_valid_and_every_lesion_is_visible_in_its_box() {
    let dir = common::synth_archive(60, 7, true);
    let options = InspectOptions {
        decode_images: true,
        ..Default::default()
    };
    let report = inspect(dir.path(), &options).unwrap();
    assert!(report.issues.is_empty(), "{:#?}", report.issues);
    assert_eq!(report.lesions, 60);
    assert_eq!(report.missing_neighbour_slices, 0);

    let dataset = Dataset::new(dir.path());
    let records = records(dir.path());
    let spec = PatchSpec::neighbour_slices(
        48,
        FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        },
        2.0,
        WindowChoice::Preset(WindowPreset::SoftTissue),
    );
    let mut visible = 0;
    for r in &records {
        let patch = dataset.lesion_patch(r, &spec).unwrap();
        assert_eq!(patch.substituted_channels, 0, "{}", r.file_name);
        assert!(patch.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // The lesion differs from the tissue around it: compare the box's inner half with
        // a ring just outside the box.
        let image = dataset.load_key_slice(r).unwrap();
        let c = r.bbox.center();
        let (hw, hh) = (r.bbox.width() / 2.0, r.bbox.height() / 2.0);
        let mean = |inside: &dyn Fn(f32, f32) -> bool| {
            let (mut sum, mut n) = (0.0, 0);
            for y in 0..image.height {
                for x in 0..image.width {
                    if inside(x as f32, y as f32) {
                        sum += image.get(x, y);
                        n += 1;
                    }
                }
            }
            sum / n.max(1) as f32
        };
        let core = mean(&|x, y| {
            (x - c.x).abs() < (hw - 5.0).max(1.0) * 0.5
                && (y - c.y).abs() < (hh - 5.0).max(1.0) * 0.5
        });
        let ring = mean(&|x, y| {
            let (dx, dy) = ((x - c.x).abs(), (y - c.y).abs());
            (dx < hw + 6.0 && dy < hh + 6.0) && !(dx < hw && dy < hh)
        });
        if (core - ring).abs() > 20.0 {
            visible += 1;
        }
    }
    assert!(
        visible >= records.len() * 9 / 10,
        "only {visible} of {} lesions stand out",
        records.len()
    );
}

#[test]
fn reports_name_the_lesion_site_and_follow_ups_say_what_changed() {
    let dir = common::synth_archive(120, 11, true);
    let records = records(dir.path());
    let reports = read_reports(&dir.path().join("reports.jsonl")).unwrap();
    let keys = lesion_keys(&records);
    let words: HashMap<CoarseType, &[&str]> = HashMap::from([
        (CoarseType::Lung, &["lobe", "lung"][..]),
        (CoarseType::Liver, &["liver"][..]),
        (CoarseType::Kidney, &["kidney"][..]),
        (
            CoarseType::Bone,
            &["spine", "vertebral", "rib", "iliac"][..],
        ),
        (CoarseType::Mediastinum, &["lymph node"][..]),
        (
            CoarseType::Abdomen,
            &["lymph node", "paraaortic", "adrenal", "pancreas"][..],
        ),
        (CoarseType::SoftTissue, &["wall", "gluteal", "axilla"][..]),
        (CoarseType::Pelvis, &["pelvis", "adnexa", "iliac"][..]),
    ]);
    let mut follow_ups = 0;
    for (r, key) in records.iter().zip(&keys) {
        let text = &reports[&(key.file_name.clone(), key.ordinal)];
        let lower = text.to_lowercase();
        assert!(
            words[&r.coarse_type].iter().any(|w| lower.contains(w)),
            "{key} ({}): `{text}`",
            r.coarse_type
        );
        assert!(
            lower.contains(&format!("{:.0} x", r.long_diameter_mm())),
            "{key}: `{text}` vs {} mm",
            r.long_diameter_mm()
        );
        if ["increased", "decreased", "stable"]
            .iter()
            .any(|w| lower.contains(w))
        {
            follow_ups += 1;
        }
    }
    assert!(follow_ups > 10, "only {follow_ups} follow-up sentences");
}

#[test]
fn training_rows_are_untyped_unless_asked() {
    let dir = common::synth_archive(40, 3, false);
    for r in records(dir.path()) {
        match r.split {
            lesion_search::dataset::Split::Train => assert_eq!(r.coarse_type, CoarseType::Unknown),
            _ => assert!(r.coarse_type.is_known()),
        }
    }
}

#[test]
fn like_draws_metadata_from_a_real_table() {
    let Some(shared) = common::shared_data("like_draws_metadata_from_a_real_table") else {
        return;
    };
    let like = shared.join("deeplesion/DL_info_partial.csv");
    let real: Vec<LesionRecord> = DlInfoReader::open(&like)
        .unwrap()
        .filter_map(|r| r.ok())
        .map(|r| r.record)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let options = lesion_search::synth::SynthOptions {
        lesions: 30,
        seed: 5,
        like: Some(like),
        label_train: true,
        ..Default::default()
    };
    lesion_search::synth::generate(dir.path(), &options, &|_, _| {}).unwrap();
    for r in records(dir.path()) {
        assert!(
            real.iter().any(|x| x.spacing.x_mm == r.spacing.x_mm),
            "spacing {}",
            r.spacing.x_mm
        );
        assert!(
            real.iter().any(|x| x.window == r.window),
            "window {}",
            r.window
        );
        assert!(real.iter().any(|x| x
            .age
            .map(|a| (a - r.age.unwrap()).abs() < 12.0)
            .unwrap_or(false)));
    }
}
