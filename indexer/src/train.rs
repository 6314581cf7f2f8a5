use std::path::PathBuf;
use std::process::ExitCode;

use lesion_search::embed::train::{train, Encoder, TrainEvent, TrainOptions};
use lesion_search::embed::LesionCnnConfig;

use crate::progress::Progress;

#[derive(clap::Args)]
pub struct Args {
    /// A DeepLesion-format archive (its train split is learnt from, validation and test are
    /// held out for evaluation).
    #[arg(long)]
    dataset: PathBuf,
    /// Folder for model.safetensors, card.json and the training report.
    #[arg(long)]
    out: PathBuf,
    /// `lesion-cnn` (end to end), `ct-resnet-head-l2|l3|l4` (a projection on frozen CT
    /// ResNet features) or `distilled-l2|l3|l4` (lesion-cnn distilled from the CT ResNet).
    #[arg(long, default_value = "lesion-cnn")]
    encoder: String,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Lesions per batch (two augmented views each).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Augmented views prepared per lesion.
    #[arg(long, default_value_t = 6)]
    views: usize,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    /// Channel widths of the four stages.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    widths: Vec<usize>,
    /// Output dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use at most this many training lesions.
    #[arg(long)]
    max_lesions: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let encoder = Encoder::parse(&args.encoder).ok_or_else(|| {
        anyhow::anyhow!(
            "--encoder {}: use lesion-cnn, ct-resnet-head-l2 (l3, l4) or distilled-l2 (l3, l4)",
            args.encoder
        )
    })?;
    let mut options = TrainOptions::new(args.dataset, args.out.clone());
    options.encoder = encoder;
    options.config = LesionCnnConfig {
        in_channels: 3,
        widths: args.widths,
        dim: args.dim,
    };
    options.epochs = args.epochs;
    options.batch_lesions = args.batch;
    options.views = args.views.max(2);
    options.learning_rate = args.learning_rate;
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
