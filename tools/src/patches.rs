//! `lesion-bench patches`: patch extraction speed on an archive (key slice and neighbours
//! decoded, the patch cut), over all cores or `--threads`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use lesion_search::dataset::{Dataset, DlInfoReader};
use lesion_search::imaging::{FieldOfView, PatchSpec, WindowChoice, WindowPreset};
use rayon::prelude::*;

#[derive(clap::Args)]
pub struct Args {
    /// The archive to read.
    #[arg(long)]
    dataset: PathBuf,
    /// At most this many lesions.
    #[arg(long)]
    limit: Option<usize>,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Offset of the neighbour slices in mm.
    #[arg(long, default_value_t = 2.0)]
    offset_mm: f32,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::new(&args.dataset);
    let mut records = Vec::new();
    for row in DlInfoReader::open(&dataset.dl_info_path())? {
        records.push(row?.record);
        if args.limit.is_some_and(|l| records.len() >= l) {
            break;
        }
    }
    let spec = PatchSpec::neighbour_slices(
        args.size,
        FieldOfView::Context {
            margin: 0.5,
            min_mm: 32.0,
            max_mm: 160.0,
        },
        args.offset_mm,
        WindowChoice::Preset(WindowPreset::SoftTissue),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let threads = pool.current_num_threads();
    let started = Instant::now();
    let outcomes: Vec<(usize, usize)> = pool.install(|| {
        records
            .par_iter()
            .map(|r| {
                let slices = dataset.load_slices(r, &spec)?;
                let patch = lesion_search::imaging::extract_patch(
                    &slices.stack(),
                    &lesion_search::dataset::geometry_of(r),
                    &spec,
                )?;
                Ok((1 + slices.neighbours.len(), patch.substituted_channels))
            })
            .collect::<lesion_search::Result<Vec<_>>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let slices: usize = outcomes.iter().map(|o| o.0).sum();
    let substituted: usize = outcomes.iter().map(|o| o.1).sum();
    let rate = records.len() as f64 / seconds;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "lesions": records.len(), "slices_decoded": slices, "substituted_channels": substituted,
                "seconds": seconds, "lesions_per_second": rate, "threads": threads,
                "patch": { "size_px": args.size, "channels": spec.channels.len(), "neighbour_offset_mm": args.offset_mm },
            })
        );
    } else {
        println!(
            "{} lesions, {} slices decoded ({} channels substituted), {} threads: {:.2} s, {:.0} lesions/s",
            records.len(),
            slices,
            substituted,
            threads,
            seconds,
            rate
        );
    }
    Ok(ExitCode::SUCCESS)
}
