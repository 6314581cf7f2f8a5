use lesion_search::index::{GraphOutcome, RECALL_TARGET};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use lesion_search::archive::{
    add, add_lesion, build, build_from_shards, delete, embed_shard, AddOptions, Archive,
    BuildEvent, BuildOptions, ChangeSummary, LesionInput, Shard,
};
use lesion_search::dataset::{NormalizedLocation, PixelBox};
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::imaging::{load_dicom, load_image, WindowChoice};
use lesion_search::index::GraphParams;
use lesion_search::search::{parse_sex, parse_split, parse_type};

use crate::backend_args::BackendArgs;
use crate::progress::Progress;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// A DeepLesion-format archive.
    #[arg(long)]
    dataset: PathBuf,
    /// The index folder (created if absent; a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
    /// Report sentences (default: DATASET/reports.jsonl when present).
    #[arg(long)]
    reports: Option<PathBuf>,
    /// LesaNet text-mined labels (text_mined_labels_171_and_split.json), keyed by row of the
    /// full DL_info.csv.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Take the embeddings from these shard files (`embed-shard`, one per shard, all of
    /// them) instead of embedding here.
    #[arg(long, num_args = 1..)]
    embeddings: Vec<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(clap::Args)]
pub struct EmbedShardArgs {
    /// A DeepLesion-format archive.
    #[arg(long)]
    dataset: PathBuf,
    /// Which shard, `I/N` (0 <= I < N): the lesions of the patients that hash to I.
    #[arg(long)]
    shard: String,
    /// The shard file to write (whole, or not at all).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = crate::DEFAULT_MODEL)]
    model: String,
}

pub fn run_embed_shard(args: EmbedShardArgs) -> anyhow::Result<ExitCode> {
    let shard = Shard::parse(&args.shard)?;
    let model = resolve_model(&args.model, &default_cache_dir())?;
    let started = std::time::Instant::now();
    let embedding = Progress::new("embedding the shard's lesions");
    let summary = embed_shard(
        &args.dataset,
        shard,
        model.as_ref(),
        &args.out,
        &|done, total| embedding.update(done, total),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "shard {}/{}: {} lesions of {} patients in {:.1} s ({:.1} lesions/s) -> {}",
        shard.index,
        shard.count,
        summary.lesions,
        summary.patients,
        seconds,
        summary.lesions as f64 / seconds.max(1e-9),
        summary.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    // A wrong backend setting fails before the slow embedding.
    args.backend.choice()?;
    let model = resolve_model(&args.model, &default_cache_dir())?;
    let options = BuildOptions {
        dataset: args.dataset,
        reports: args.reports,
        model: model.as_ref(),
        graph: GraphParams::default(),
        labels: args.labels,
    };
    let embedding = Progress::new("embedding lesions");
    let progress = |event| match event {
        BuildEvent::Embedding { done, total } => embedding.update(done, total),
        BuildEvent::Writing => eprintln!("writing records, vectors and text"),
    };
    let summary = if args.embeddings.is_empty() {
        build(&args.index, &options, &progress)?
    } else {
        build_from_shards(&args.index, &options, &args.embeddings, &progress)?
    };
    println!(
        "generation {} of {} published: {} lesions ({} embeddings resumed), {}",
        summary.generation,
        args.index.display(),
        summary.lesions,
        summary.resumed_embeddings,
        if summary.has_graph {
            format!(
                "HNSW graph with ef {} (self-recall {:.3})",
                summary.ef, summary.self_recall
            )
        } else {
            "exact vector search".to_string()
        }
    );
    args.backend.publish(&args.index)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&args.index)?;
    let mut problems = archive.verify()?;
    let choice = args.backend.choice()?;
    if choice != lesion_search::backend::BackendChoice::Embedded {
        let (published, backend) = lesion_search::backend::open(&args.index, &choice)?;
        let outside = backend.verify(&published)?;
        println!(
            "{}: {} against the records: {}",
            backend.info().name,
            backend.info().vectors,
            if outside.is_empty() {
                "same lesions, keys and vectors".to_string()
            } else {
                format!("{} problems", outside.len())
            }
        );
        problems.extend(
            outside
                .into_iter()
                .map(|p| format!("{}: {p}", backend.info().name)),
        );
    }
    for p in &problems {
        println!("error: {}: {p}", archive.dir.display());
    }
    match archive.vectors.graph.as_ref().map(|g| g.connectivity()) {
        Some(c) => println!(
            "graph: {} of {} nodes reachable from the entry point ({:.2}%), {} without in-links, ef {}",
            c.reachable,
            c.nodes,
            100.0 * c.reachable_fraction(),
            c.without_in_links,
            archive.vectors.ef
        ),
        None => println!("vectors: searched exactly (no graph)"),
    }
    match archive.vectors.outcome {
        GraphOutcome::Met => {}
        GraphOutcome::Enlarged { m, ef_construction } => println!(
            "graph: rebuilt with M {m}, ef_construction {ef_construction} to reach recall@10 {RECALL_TARGET}"
        ),
        GraphOutcome::Exact { recall_at_10 } => println!(
            "warning: the graph reached recall@10 {recall_at_10:.3} < {RECALL_TARGET} even enlarged; \
             every query is answered by the exact scan"
        ),
    }
    println!(
        "{}: generation {}, {} lesions, model {}: {}",
        args.index.display(),
        archive.manifest.generation,
        archive.manifest.lesions,
        archive.manifest.model.name,
        if problems.is_empty() {
            "records, vectors and text agree".to_string()
        } else {
            format!("{} problems", problems.len())
        }
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

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

pub fn run_add(args: AddArgs) -> anyhow::Result<ExitCode> {
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
        print_change("added", &args.index, &summary);
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
    print_change("added", &args.index, &summary);
    args.backend.publish(&args.index)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The index folder (a new generation is published in it).
    #[arg(long)]
    index: PathBuf,
    /// Lesion keys: the `File_name`, with `#n` for the n-th lesion of a slice (from 2).
    #[arg(required = true)]
    keys: Vec<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    args.backend.choice()?;
    let summary = delete(&args.index, &args.keys, GraphParams::default())?;
    print_change("deleted", &args.index, &summary);
    args.backend.publish(&args.index)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct MilvusSyncArgs {
    #[arg(long)]
    index: PathBuf,
    /// The Milvus server's gRPC address.
    #[arg(long, default_value = lesion_search::backend::milvus::DEFAULT_URL)]
    milvus_url: String,
    /// Alias of the served generation (collections are NAME_gen_NNNNNN_...).
    #[arg(long, default_value = lesion_search::backend::milvus::DEFAULT_COLLECTION)]
    milvus_collection: String,
    /// Vector index of the collection: auto (FLAT up to 200,000 lesions, else HNSW), flat
    /// or hnsw.
    #[arg(long, default_value = "auto", value_parser = ["auto", "flat", "hnsw"])]
    milvus_index: String,
}

pub fn run_milvus_sync(args: MilvusSyncArgs) -> anyhow::Result<ExitCode> {
    BackendArgs {
        backend: "milvus".into(),
        milvus_url: args.milvus_url,
        milvus_collection: args.milvus_collection,
        milvus_index: args.milvus_index,
    }
    .publish(&args.index)?;
    Ok(ExitCode::SUCCESS)
}

fn print_change(verb: &str, index: &std::path::Path, summary: &ChangeSummary) {
    for (id, key) in &summary.changed {
        println!("{verb} {key} (id {id})");
    }
    println!(
        "generation {} of {} published: {} lesions searchable{}",
        summary.generation,
        index.display(),
        summary.live,
        if summary.graph_rebuilt {
            format!(
                "; HNSW graph rebuilt (ef {}, self-recall {:.3})",
                summary.ef, summary.self_recall
            )
        } else {
            String::new()
        }
    );
}

#[derive(clap::Args)]
pub struct ExportVectorsArgs {
    #[arg(long)]
    index: PathBuf,
    /// Where to write the live lesions' embeddings, in id order (TEXMEX `.fvecs`).
    #[arg(long)]
    out: PathBuf,
}

/// Dumps an index's vectors so that real model outputs become vector-bench sets.
pub fn run_export_vectors(args: ExportVectorsArgs) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&args.index)?;
    let vectors = &archive.vectors;
    let dim = vectors.flat.dim();
    let values: Vec<f32> = (0..vectors.len() as u32)
        .filter(|&id| !vectors.tombstones.contains(id))
        .flat_map(|id| vectors.flat.vector(id).iter().copied())
        .collect();
    let set = lesion_search::index::VectorSet { dim, values };
    lesion_search::index::write_fvecs(&args.out, &set)?;
    println!(
        "{}: {} vectors x {dim} ({}) from {}",
        args.out.display(),
        set.rows(),
        archive.manifest.model.name,
        args.index.display()
    );
    Ok(ExitCode::SUCCESS)
}
