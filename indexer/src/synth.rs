use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use lesion_search::synth::{generate, SynthOptions};

use crate::progress::Progress;

#[derive(clap::Args)]
pub struct Args {
    /// Folder to write the archive into (created if absent).
    #[arg(long)]
    out: PathBuf,
    /// Number of lesions (rows of DL_info.csv).
    #[arg(long, default_value_t = 100)]
    lesions: usize,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A real DL_info.csv to draw type, location, size, spacing, window, age and sex from.
    #[arg(long, value_name = "PATH/DL_info.csv")]
    like: Option<PathBuf>,
    /// Context around each key slice in mm (every slice within it is written).
    #[arg(long, default_value_t = 2.0)]
    context_mm: f32,
    /// Write the true coarse type on training rows (DeepLesion leaves them -1).
    #[arg(long)]
    label_train: bool,
    /// Width and height of the slices in pixels.
    #[arg(long, default_value_t = 512)]
    image_size: usize,
    /// Write into a folder that already holds an archive.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.out.join("DL_info.csv").exists() && !args.force {
        bail!(
            "{} already holds an archive (DL_info.csv); choose another folder or pass --force",
            args.out.display()
        );
    }
    let options = SynthOptions {
        lesions: args.lesions,
        seed: args.seed,
        like: args.like,
        context_mm: args.context_mm,
        label_train: args.label_train,
        image_size: args.image_size,
    };
    let started = Instant::now();
    let progress = Progress::new("rendering slices");
    let summary = generate(&args.out, &options, &|done, total| {
        progress.update(done, total)
    })
    .with_context(|| format!("generating an archive in {}", args.out.display()))?;
    println!(
        "wrote {} lesions of {} patients ({} studies), {} slices ({:.1} MB) to {} in {:.1} s",
        summary.lesions,
        summary.patients,
        summary.studies,
        summary.slices,
        summary.bytes as f64 / 1e6,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
