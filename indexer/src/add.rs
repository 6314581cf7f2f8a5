//! `lesion-indexer add`: lesions of a DeepLesion-format folder, or one lesion on a slice, join an index.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::archive::{lesion_record, BuildEvent, LesionInput};
use lesion_search::imaging::{load_dicom, load_image};

use lesion_search::service::{model_named, Writer};

use crate::backend_args::{print_mirror, BackendArgs};
use crate::progress::Progress;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["dataset", "image"])))]
pub struct AddArgs {
    /// The index folder (a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    /// A DeepLesion-format folder holding the new lesions (DL_info.csv, Images_png/).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Report sentences (default: DATASET/reports.jsonl when present).
    #[arg(long, requires = "dataset")]
    reports: Option<PathBuf>,
    /// Default: the model that built the index (another one is refused).
    #[arg(long)]
    model: Option<String>,
    /// Instead of --dataset: one lesion on a CT slice (DICOM or 16-bit DeepLesion PNG), with
    /// --box, --patient and --study (what `POST /api/lesions` takes).
    #[arg(long, requires_all = ["bbox", "patient", "study"])]
    image: Option<PathBuf>,
    /// Frame of a multi-frame DICOM file (0-based).
    #[arg(long, default_value_t = 0, requires = "image")]
    frame: u32,
    /// The lesion's box on the slice: x1,y1,x2,y2 in pixels.
    #[arg(long = "box", requires = "image")]
    bbox: Option<String>,
    #[arg(long, requires = "image")]
    patient: Option<u32>,
    #[arg(long, requires = "image")]
    study: Option<u32>,
    #[arg(long, default_value_t = 1, requires = "image")]
    series: u32,
    #[arg(long, default_value_t = 1, requires = "image")]
    slice: u32,
    /// Coarse type (bone, abdomen, mediastinum, liver, lung, kidney, soft_tissue, pelvis).
    #[arg(long = "type", requires = "image")]
    coarse_type: Option<String>,
    /// F or M.
    #[arg(long, requires = "image")]
    sex: Option<String>,
    #[arg(long, requires = "image")]
    age: Option<f32>,
    /// In-plane pixel spacing in mm (needed when the file states none).
    #[arg(long, requires = "image")]
    spacing_mm: Option<f32>,
    #[arg(long, requires = "image")]
    slice_interval_mm: Option<f32>,
    /// Normalised body location x,y,z, each in 0..1.
    #[arg(long, requires = "image")]
    location: Option<String>,
    /// A window preset or low,high in HU (default: the file's own, else soft tissue).
    #[arg(long, requires = "image")]
    window: Option<String>,
    /// train, validation or test.
    #[arg(long, requires = "image")]
    split: Option<String>,
    /// The lesion's report text.
    #[arg(long, requires = "image")]
    report: Option<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

/// The one lesion `--image` names, as the named fields of the server's form, parsed by the
/// core's one parser (so both refuse the same values with the same messages).
fn lesion_input(args: &AddArgs) -> anyhow::Result<LesionInput> {
    let numbers = [
        ("patient", args.patient.map(|v| v.to_string())),
        ("study", args.study.map(|v| v.to_string())),
        ("series", Some(args.series.to_string())),
        ("slice", Some(args.slice.to_string())),
        ("age", args.age.map(|v| v.to_string())),
        ("spacing_mm", args.spacing_mm.map(|v| v.to_string())),
        (
            "slice_interval_mm",
            args.slice_interval_mm.map(|v| v.to_string()),
        ),
    ];
    let texts = [
        ("box", &args.bbox),
        ("type", &args.coarse_type),
        ("sex", &args.sex),
        ("location", &args.location),
        ("window", &args.window),
        ("split", &args.split),
        ("report", &args.report),
    ];
    let fields: Vec<(String, String)> = numbers
        .into_iter()
        .chain(texts.into_iter().map(|(name, value)| (name, value.clone())))
        .filter_map(|(name, value)| Some((name.to_string(), value?)))
        .collect();
    Ok(LesionInput::from_fields(&fields)?)
}

pub fn run(args: AddArgs) -> anyhow::Result<ExitCode> {
    let backend = args.backend.choice()?;
    // The input is judged before the lock is taken and anything is embedded.
    let lesion = match &args.image {
        Some(path) => {
            let input = lesion_input(&args)?;
            let image = if args.frame > 0 {
                load_dicom(path, args.frame)?
            } else {
                load_image(path)?
            };
            image.require_ct(path)?;
            // The row's own checks (box on the slice, spacing, location, age), as the server
            // makes them before it queues the write.
            lesion_record(&image, &input)?;
            Some((path, image, input))
        }
        None => None,
    };
    let mut writer = Writer::open(&args.index, &backend)?;
    if let Some(name) = &args.model {
        writer = writer.with_model(model_named(name)?);
    }
    let written = match lesion {
        Some((path, image, input)) => writer
            .add_lesion(&image, &input)
            .with_context(|| format!("adding the lesion of {}", path.display()))?,
        None => {
            let embedding = Progress::new("embedding lesions");
            let reports = Progress::new("embedding reports");
            writer.add(
                args.dataset.as_deref().unwrap_or(std::path::Path::new("")),
                args.reports.as_deref(),
                &|event| match event {
                    BuildEvent::Embedding { done, total } => embedding.update(done, total),
                    BuildEvent::EmbeddingReports { done, total } => reports.update(done, total),
                    BuildEvent::Writing => eprintln!("writing records, vectors and text"),
                },
            )?
        }
    };
    crate::change_report::print_change("added", &args.index, &written.summary);
    print_mirror(written.mirror.as_ref());
    Ok(ExitCode::SUCCESS)
}
