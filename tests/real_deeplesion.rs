//! Real DeepLesion rows and slices from `../shared/data/deeplesion/` (skipped when absent;
//! never copied into the repository).

mod common;

use lesion_search::dataset::{Dataset, DlInfoReader, LesionRecord};
use lesion_search::imaging::{
    render_thumbnail, FieldOfView, PatchSpec, ThumbnailSpec, WindowChoice, WindowPreset,
};

fn real_rows(shared: &std::path::Path) -> (Vec<LesionRecord>, Vec<String>) {
    let reader = DlInfoReader::open(&shared.join("deeplesion/DL_info_partial.csv")).unwrap();
    let extra = reader.extra_columns().to_vec();
    let rows = reader
        .map(|r| r.unwrap_or_else(|e| panic!("real row refused: {e}")).record)
        .collect();
    (rows, extra)
}

#[test]
fn every_real_row_parses() {
    let Some(shared) = common::shared_data("every_real_row_parses") else {
        return;
    };
    let (rows, extra) = real_rows(&shared);
    assert_eq!(rows.len(), 10_857);
    assert_eq!(extra, ["sources"]);
    let unknown_age = rows.iter().filter(|r| r.age.is_none()).count();
    assert!(unknown_age > 0, "the real table spells some ages NaN");
    assert!(rows.iter().any(|r| r.possibly_noisy));
}

#[test]
fn every_real_slice_loads_and_yields_a_patch_and_a_thumbnail() {
    let Some(shared) =
        common::shared_data("every_real_slice_loads_and_yields_a_patch_and_a_thumbnail")
    else {
        return;
    };
    let (rows, _) = real_rows(&shared);
    let dataset = Dataset::new(shared.join("deeplesion"));
    let present: Vec<&LesionRecord> = rows
        .iter()
        .filter(|r| r.key_slice_path(dataset.root()).is_file())
        .collect();
    assert!(
        present.len() >= 31,
        "only {} real slices with rows",
        present.len()
    );
    let spec = PatchSpec::neighbour_slices(
        64,
        FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        },
        2.0,
        WindowChoice::Own,
    );
    for r in present {
        let image = dataset.load_key_slice(r).unwrap_or_else(|e| panic!("{e}"));
        let (lo, hi) = image.range();
        assert!(
            lo >= -3100.0 && hi <= 4000.0 && hi - lo > 1000.0,
            "{}: HU {lo}..{hi}",
            r.file_name
        );
        // Most copies hold key slices only, so neighbours fall back to the key slice; a
        // series copied whole (000062_01_01) has its neighbours.
        let patch = dataset
            .lesion_patch(r, &spec)
            .unwrap_or_else(|e| panic!("{}: {e}", r.file_name));
        let series = r
            .key_slice_path(dataset.root())
            .parent()
            .unwrap()
            .to_path_buf();
        let neighbour = |slice: u32| series.join(format!("{slice:03}.png")).is_file();
        let (below, above) = (
            neighbour(r.key_slice.saturating_sub(1)),
            neighbour(r.key_slice + 1),
        );
        if below && above {
            assert!(
                patch.substituted_channels < 2,
                "{}: neighbours unused",
                r.file_name
            );
        } else if !below && !above {
            assert_eq!(patch.substituted_channels, 2, "{}", r.file_name);
        }
        let centre = patch.channel(1);
        let spread = centre.iter().cloned().fold(f32::MIN, f32::max)
            - centre.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.12, "{}: flat patch", r.file_name);
        let thumbnail = render_thumbnail(
            &image,
            &WindowPreset::Liver.window(),
            Some(&r.bbox),
            (r.spacing.x_mm, r.spacing.y_mm),
            &ThumbnailSpec {
                size_px: 128,
                around_box_mm: Some(100.0),
                draw_box: true,
            },
        )
        .unwrap();
        assert_eq!((thumbnail.width, thumbnail.height), (128, 128));
    }
}
