//! `lesion-indexer add`: lesions of a DeepLesion-format folder, or one lesion on a slice, join an index.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use lesion_search::archive::{add, add_lesion, AddOptions, Archive, BuildEvent, LesionInput};
use lesion_search::dataset::{NormalizedLocation, PixelBox};
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::imaging::{load_dicom, load_image, WindowChoice};
use lesion_search::index::GraphParams;
use lesion_search::search::{parse_sex, parse_split, parse_type};

use crate::backend_args::BackendArgs;
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

/// The one lesion `--image` names, checked as the server checks a form.
fn lesion_input(args: &AddArgs) -> anyhow::Result<LesionInput> {
    let bbox = args.bbox.as_deref().unwrap_or_default();
    let bbox = PixelBox::parse(bbox).map_err(|e| anyhow!("box: {e}"))?;
    let mut input = LesionInput::new(
        bbox,
        args.patient.unwrap_or_default(),
        args.study.unwrap_or_default(),
    );
    input.series = args.series;
    input.slice = args.slice;
    if let Some(t) = &args.coarse_type {
        input.coarse_type = parse_type(t, "type")?;
    }
    if let Some(t) = &args.sex {
        input.sex = parse_sex(t, "sex")?;
    }
    input.age = args.age;
    input.spacing_mm = args.spacing_mm;
    if let Some(interval) = args.slice_interval_mm {
        input.slice_interval_mm = interval;
    }
    if let Some(t) = &args.location {
        let v: Vec<f32> = t
            .split(',')
            .map(|p| p.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow!("location: `{t}` is not x,y,z"))?;
        let [x, y, z] = v[..] else {
            bail!("location: `{t}` is not x,y,z");
        };
        input.location = NormalizedLocation { x, y, z };
    }
    if let Some(t) = &args.window {
        input.window = Some(WindowChoice::parse(t).map_err(|e| anyhow!("window: {e}"))?);
    }
    if let Some(t) = &args.split {
        input.split = parse_split(t, "split")?;
    }
    input.report = args.report.clone().unwrap_or_default();
    Ok(input)
}

pub fn run(args: AddArgs) -> anyhow::Result<ExitCode> {
    let name = match &args.model {
        Some(name) => name.clone(),
        None => Archive::current_manifest(&args.index)?.model.name,
    };
    let model = resolve_model(&name, &default_cache_dir())?;
    if let Some(path) = &args.image {
        let input = lesion_input(&args)?;
        let image = if args.frame > 0 {
            load_dicom(path, args.frame)?
        } else {
            load_image(path)?
        };
        image.require_ct(path)?;
        let summary = add_lesion(
            &args.index,
            &image,
            &input,
            model.as_ref(),
            GraphParams::default(),
        )
        .with_context(|| format!("adding the lesion of {}", path.display()))?;
        crate::change_report::print_change("added", &args.index, &summary);
        args.backend.publish(&args.index)?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = AddOptions {
        dataset: args.dataset.unwrap_or_default(),
        reports: args.reports,
        model: model.as_ref(),
        graph: GraphParams::default(),
    };
    let embedding = Progress::new("embedding lesions");
    let summary = add(&args.index, &options, &|event| match event {
        BuildEvent::Embedding { done, total } => embedding.update(done, total),
        BuildEvent::Writing => eprintln!("writing records, vectors and text"),
    })?;
    crate::change_report::print_change("added", &args.index, &summary);
    args.backend.publish(&args.index)?;
    Ok(ExitCode::SUCCESS)
}
