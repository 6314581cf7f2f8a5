//! One lesion added from a slice and a box: the DeepLesion row it becomes (RECIST axes along
//! the box's sides, the best a box alone says), staged as a one-lesion DeepLesion folder
//! under the index so its image stays readable like any other, then added.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::change::{add_locked, AddOptions};
use super::draft::ChangeSummary;
use super::{WriteLock, ADDED_DIR};
use crate::dataset::{
    write_dl_info, write_reports, CoarseType, LesionRecord, NormalizedLocation, PixelBox, Point,
    Recist, ReportEntry, Sex, SliceRange, Spacing, Split, IMAGES_DIR,
};
use crate::embed::{Embedder, SentenceEncoder};
use crate::error::{Error, Result};
use crate::imaging::{
    check_box, check_file_spacing, check_pixel_spacing, encode_png16, CtImage, PixelUnit,
    WindowChoice, WindowPreset,
};
use crate::index::GraphParams;

/// What a user states about a lesion beside its slice. [`LesionInput::new`] gives the
/// defaults: series and slice 1, type and sex unknown, the body's centre, 5 mm between
/// slices, the file's window (else soft tissue), the training split, no report.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionInput {
    pub bbox: PixelBox,
    pub patient: u32,
    pub study: u32,
    pub series: u32,
    pub slice: u32,
    pub coarse_type: CoarseType,
    pub sex: Sex,
    pub age: Option<f32>,
    /// In-plane pixel spacing in mm; needed when the file states none, and wins over it.
    pub spacing_mm: Option<f32>,
    pub slice_interval_mm: f32,
    pub location: NormalizedLocation,
    pub window: Option<WindowChoice>,
    pub split: Split,
    pub report: String,
}

impl LesionInput {
    pub fn new(bbox: PixelBox, patient: u32, study: u32) -> Self {
        LesionInput {
            bbox,
            patient,
            study,
            series: 1,
            slice: 1,
            coarse_type: CoarseType::Unknown,
            sex: Sex::Unknown,
            age: None,
            spacing_mm: None,
            slice_interval_mm: 5.0,
            location: NormalizedLocation {
                x: 0.5,
                y: 0.5,
                z: 0.5,
            },
            window: None,
            split: Split::Train,
            report: String::new(),
        }
    }
}

/// The DeepLesion row of `input` on `image`; errors name the argument at fault (`image`,
/// `box`, `spacing_mm`, `location`, `age`).
pub fn lesion_record(image: &CtImage, input: &LesionInput) -> Result<LesionRecord> {
    if image.unit != PixelUnit::Hounsfield {
        return Err(Error::invalid_argument(
            "image",
            "a lesion added to the archive needs Hounsfield units (a CT DICOM or a 16-bit DeepLesion PNG), not an 8-bit picture",
        ));
    }
    let bbox = input.bbox;
    check_box(&bbox, image.width, image.height)?;
    let (x_mm, y_mm) = spacing_of(image, input)?;
    check_facts(input)?;
    let (long_axis, short_axis) = box_axes(&bbox);
    let (w, h) = (bbox.width(), bbox.height());
    let window = match input.window {
        Some(choice) => choice.resolve(image.window),
        None => image
            .window
            .unwrap_or_else(|| WindowPreset::SoftTissue.window()),
    };
    Ok(LesionRecord {
        file_name: LesionRecord::canonical_file_name(
            input.patient,
            input.study,
            input.series,
            input.slice,
        ),
        patient: input.patient,
        study: input.study,
        series: input.series,
        key_slice: input.slice,
        recist: Recist {
            long_axis,
            short_axis,
        },
        bbox,
        diameters_px: [w.max(h), w.min(h)],
        location: input.location,
        coarse_type: input.coarse_type,
        possibly_noisy: false,
        slice_range: SliceRange {
            first: input.slice,
            last: input.slice,
        },
        spacing: Spacing {
            x_mm,
            y_mm,
            z_mm: input.slice_interval_mm,
        },
        image_width: image.width as u32,
        image_height: image.height as u32,
        window,
        sex: input.sex,
        age: input.age,
        split: input.split,
    })
}

/// The in-plane spacing: the one given, else the file's, each within CT's range.
fn spacing_of(image: &CtImage, input: &LesionInput) -> Result<(f32, f32)> {
    match (input.spacing_mm, image.spacing_mm) {
        (Some(s), _) => {
            let s = check_pixel_spacing(s, "spacing_mm")?;
            Ok((s, s))
        }
        (None, Some(stated)) => check_file_spacing(stated),
        (None, None) => Err(Error::invalid_argument(
            "spacing_mm",
            "the file states no pixel spacing; give it in mm",
        )),
    }
}

/// Location, age and slice interval within their ranges, each refusal naming its field.
fn check_facts(input: &LesionInput) -> Result<()> {
    let NormalizedLocation { x, y, z } = input.location;
    if ![x, y, z].iter().all(|c| (0.0..=1.0).contains(c)) {
        return Err(Error::invalid_argument(
            "location",
            format!("{x},{y},{z} is not x,y,z each in 0..1"),
        ));
    }
    if input
        .age
        .is_some_and(|a| !a.is_finite() || !(0.0..=130.0).contains(&a))
    {
        return Err(Error::invalid_argument("age", "not an age in years"));
    }
    if !(input.slice_interval_mm.is_finite() && input.slice_interval_mm > 0.0) {
        return Err(Error::invalid_argument(
            "slice_interval_mm",
            "not a positive distance in mm",
        ));
    }
    Ok(())
}

/// RECIST long and short axes through the box's centre, along its longer and shorter side.
fn box_axes(bbox: &PixelBox) -> ([Point; 2], [Point; 2]) {
    let c = bbox.center();
    let across = [Point { x: bbox.x1, y: c.y }, Point { x: bbox.x2, y: c.y }];
    let down = [Point { x: c.x, y: bbox.y1 }, Point { x: c.x, y: bbox.y2 }];
    if bbox.width() >= bbox.height() {
        (across, down)
    } else {
        (down, across)
    }
}

/// Adds one lesion from its slice as a new generation of the index at `index_dir`: the
/// slice is kept as a 16-bit PNG in a one-lesion DeepLesion folder under `index_dir/added/`
/// (removed again when the add fails). A key the index holds is [`Error::AlreadyInIndex`].
pub fn add_lesion(
    index_dir: &Path,
    image: &CtImage,
    input: &LesionInput,
    model: &dyn Embedder,
    graph: GraphParams,
) -> Result<ChangeSummary> {
    add_lesion_locked(
        &WriteLock::acquire(index_dir)?,
        image,
        input,
        (model, None),
        graph,
    )
}

/// [`add_lesion`] for a writer that holds the index's lock already. The slice is staged
/// under the lock, so the writer that sweeps unreferenced `added/` folders never meets one
/// whose add is still on its way. `models` are the image model and, for an index with
/// report vectors, its text encoder.
pub fn add_lesion_locked(
    lock: &WriteLock,
    image: &CtImage,
    input: &LesionInput,
    (model, text_encoder): (&dyn Embedder, Option<&SentenceEncoder>),
    graph: GraphParams,
) -> Result<ChangeSummary> {
    let record = lesion_record(image, input)?;
    let index_dir = lock.dir();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let folder: PathBuf = index_dir.join(ADDED_DIR).join(format!("{stamp}"));
    stage(&folder, image, &record, &input.report).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&folder);
    })?;
    crate::fault::point("slice-staged");
    let options = AddOptions {
        dataset: folder.clone(),
        reports: None,
        model,
        graph,
    };
    add_locked(lock, &options, text_encoder, &|_| {}).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&folder);
    })
}

fn stage(dir: &Path, image: &CtImage, record: &LesionRecord, report: &str) -> Result<()> {
    let series = dir.join(IMAGES_DIR).join(record.series_folder());
    std::fs::create_dir_all(&series).map_err(|e| Error::io(&series, e))?;
    let slice = record.key_slice_path(dir);
    std::fs::write(
        &slice,
        encode_png16(image.width, image.height, &image.pixels),
    )
    .map_err(|e| Error::io(&slice, e))?;
    let table_path = dir.join("DL_info.csv");
    let mut table = std::fs::File::create(&table_path).map_err(|e| Error::io(&table_path, e))?;
    write_dl_info(&mut table, [record])
        .and_then(|()| table.flush())
        .map_err(|e| Error::io(&table_path, e))?;
    let entry = ReportEntry {
        file_name: record.file_name.clone(),
        lesion: 0,
        text: report.to_string(),
    };
    let reports_path = dir.join("reports.jsonl");
    let reports = std::fs::File::create(&reports_path).map_err(|e| Error::io(&reports_path, e))?;
    write_reports(reports, [&entry]).map_err(|e| Error::io(&reports_path, e))?;
    // The generation about to be published reads this slice: it must be on disk before
    // the generation's name is, or a power cut leaves a lesion without its image.
    crate::fsutil::sync_tree(dir)?;
    match dir.parent() {
        Some(added) => crate::fsutil::sync_dir(added),
        None => Ok(()),
    }
}
