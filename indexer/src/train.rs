use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::embed::distill::{distill, DistillEvent, DistillOptions};
use lesion_search::embed::train::{train, Encoder, TrainEvent, TrainOptions};
use lesion_search::embed::{LesionCnnConfig, ResnetStage};

use crate::progress::Progress;

#[derive(clap::Args)]
pub struct Args {
    /// A DeepLesion-format archive (its train split is learnt from, validation and test are
    /// held out for evaluation). `distilled` takes several, real and generated alike.
    #[arg(long, required = true)]
    dataset: Vec<PathBuf>,
    /// Folder for model.safetensors, card.json and the training report.
    #[arg(long)]
    out: PathBuf,
    /// `lesion-cnn` (end to end, from the archive's labels), `ct-resnet-head-l2|l3|l4` (a
    /// projection on frozen CT ResNet features) or `distilled` (lesion-cnn taught without
    /// labels to reproduce --teacher on patches of the archives' own slices).
    #[arg(long, default_value = "lesion-cnn")]
    encoder: String,
    /// For `distilled`: ct-resnet-l2, ct-resnet-l3 or ct-resnet-l4.
    #[arg(long, default_value = "ct-resnet-l2")]
    teacher: String,
    /// For `distilled`: start from this lesion-cnn folder instead of the bundled one.
    #[arg(long, conflicts_with = "from_scratch")]
    init: Option<PathBuf>,
    /// For `distilled`: start from random weights.
    #[arg(long)]
    from_scratch: bool,
    /// For `distilled`: boxes sampled over the body on each training slice.
    #[arg(long, default_value_t = 8)]
    body_patches_per_slice: usize,
    /// For `distilled`: at most this many slices per archive for body boxes.
    #[arg(long)]
    max_slices: Option<usize>,
    /// Default 20 (10 for `distilled`).
    #[arg(long)]
    epochs: Option<usize>,
    /// Lesions (patches for `distilled`) per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Augmented views prepared per lesion (default 6; 2 per patch for `distilled`).
    #[arg(long)]
    views: Option<usize>,
    /// Default 2e-3 (1e-3 for `distilled`).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Channel widths of the four stages.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    widths: Vec<usize>,
    /// Output dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use at most this many training lesions (per archive for `distilled`).
    #[arg(long)]
    max_lesions: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.encoder == "distilled" {
        return run_distillation(args);
    }
    let encoder = Encoder::parse(&args.encoder).ok_or_else(|| {
        anyhow::anyhow!(
            "--encoder {}: use lesion-cnn, ct-resnet-head-l2 (l3, l4) or distilled",
            args.encoder
        )
    })?;
    let [dataset] = <[PathBuf; 1]>::try_from(args.dataset.clone()).map_err(|all| {
        anyhow::anyhow!(
            "--encoder {} learns from one archive; {} --dataset given",
            args.encoder,
            all.len()
        )
    })?;
    let mut options = TrainOptions::new(dataset, args.out.clone());
    options.encoder = encoder;
    options.config = LesionCnnConfig {
        in_channels: 3,
        widths: args.widths,
        dim: args.dim,
    };
    options.epochs = args.epochs.unwrap_or(20);
    options.batch_lesions = args.batch;
    options.views = args.views.unwrap_or(6).max(2);
    options.learning_rate = args.learning_rate.unwrap_or(2e-3);
    options.seed = args.seed;
    options.max_lesions = args.max_lesions;
    let preparing = Progress::new("preparing patches");
    let teacher = Progress::new("teacher features");
    let report = train(&options, &|event| match event {
        TrainEvent::Preparing { done, total } => preparing.update(done, total),
        TrainEvent::Teacher { done, total } => teacher.update(done, total),
        TrainEvent::Step {
            epoch,
            step,
            steps,
            loss,
        } => {
            if step == steps || step % 10 == 0 {
                eprintln!("epoch {epoch} step {step}/{steps} loss {loss:.4}");
            }
        }
        TrainEvent::Epoch(stats) => eprintln!(
            "epoch {} done: mean loss {:.4}, held-out P@5 {:.3} ({:.0} s)",
            stats.epoch, stats.mean_loss, stats.p_at_5, stats.seconds
        ),
    })?;
    println!(
        "{} written to {}: held-out P@5 {:.3} ({} training lesions, {:.0} s)",
        report.model,
        args.out.display(),
        report.p_at_5,
        report.training_lesions,
        report.seconds
    );
    for (t, p) in &report.p_at_5_by_type {
        println!("  {t:<12} {p:.3}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_distillation(args: Args) -> anyhow::Result<ExitCode> {
    let teacher = args
        .teacher
        .strip_prefix("ct-resnet-l")
        .and_then(ResnetStage::parse)
        .with_context(|| {
            format!(
                "--teacher {}: use ct-resnet-l2, ct-resnet-l3 or ct-resnet-l4",
                args.teacher
            )
        })?;
    let mut options = DistillOptions::new(args.dataset, args.out.clone());
    options.teacher = teacher;
    options.init = args.init;
    options.from_scratch = args.from_scratch;
    options.config = LesionCnnConfig {
        in_channels: 3,
        widths: args.widths,
        dim: args.dim,
    };
    options.epochs = args.epochs.unwrap_or(options.epochs);
    options.batch = args.batch.max(2);
    options.views = args.views.unwrap_or(options.views).max(1);
    options.learning_rate = args.learning_rate.unwrap_or(options.learning_rate);
    options.seed = args.seed;
    options.body_patches_per_slice = args.body_patches_per_slice;
    options.max_lesions = args.max_lesions;
    options.max_slices = args.max_slices;
    let preparing = Progress::new("patches and teacher vectors");
    let report = distill(&options, &|event| {
        match event {
        DistillEvent::Preparing { done, total } => preparing.update(done, total),
        DistillEvent::Step {
            epoch,
            step,
            steps,
            loss,
        } => {
            if step == steps || step % 20 == 0 {
                eprintln!("epoch {epoch} step {step}/{steps} loss {loss:.4}");
            }
        }
        DistillEvent::Epoch(e) => eprintln!(
            "epoch {} done: mean loss {:.4}, held-out cosine {:.3}, neighbour agreement {:.3} ({:.0} s)",
            e.epoch, e.mean_loss, e.held_out_cosine, e.held_out_neighbour_agreement, e.seconds
        ),
    }
    })?;
    let last = report.epochs.last();
    println!(
        "{} written to {}: {} patches from {} archives, held-out cosine to the teacher {:.3}, neighbour agreement {:.3} ({:.0} s)",
        report.model,
        args.out.display(),
        report.patches,
        report.sources.len(),
        last.map_or(0.0, |e| e.held_out_cosine),
        last.map_or(0.0, |e| e.held_out_neighbour_agreement),
        report.seconds
    );
    Ok(ExitCode::SUCCESS)
}
