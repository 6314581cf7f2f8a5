//! `lesion-bench embed`: embedding speed (patches/s) of models at several batch sizes.

use std::process::ExitCode;
use std::time::Instant;

use lesion_search::embed::{
    bundled_ct_resnet_l2_laid_out, default_cache_dir, resolve_model, Embedder, TrunkLayout,
    CT_RESNET_L2_MODEL, DEFAULT_MODEL,
};
use lesion_search::imaging::Patch;

#[derive(clap::Args)]
pub struct Args {
    /// Models to measure (names or folders).
    #[arg(long, num_args = 1.., default_values_t = [DEFAULT_MODEL.to_string()])]
    models: Vec<String>,
    /// Batch sizes.
    #[arg(long, num_args = 1.., default_values_t = [1usize, 32])]
    batches: Vec<usize>,
    /// Patches per measurement (after one warm-up batch).
    #[arg(long, default_value_t = 128)]
    patches: usize,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// Also measure `ct-resnet-l2` with candle's own NCHW convolutions (the layout the
    /// channels-last default replaced), as `ct-resnet-l2-candle-nchw`.
    #[arg(long)]
    candle_nchw: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cache = default_cache_dir();
    if !args.json {
        println!("{:<16} {:>6} {:>12}", "model", "batch", "patches/s");
    }
    let mut models: Vec<(String, Box<dyn Embedder>)> = Vec::new();
    for name in &args.models {
        models.push((name.clone(), resolve_model(name, &cache)?));
    }
    if args.candle_nchw {
        models.push((
            format!("{CT_RESNET_L2_MODEL}-candle-nchw"),
            Box::new(bundled_ct_resnet_l2_laid_out(TrunkLayout::CandleNchw)?),
        ));
    }
    for (name, model) in &models {
        let spec = &model.card().patch;
        let n = spec.size_px;
        let c = spec.channels.len();
        // Content does not change the cost of a dense network; a fixed pattern keeps runs comparable.
        let patch = Patch {
            size_px: n,
            channels: c,
            data: (0..c * n * n)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                .collect(),
            mm_per_px: 1.0,
            substituted_channels: 0,
        };
        for &batch in &args.batches {
            let patches = vec![patch.clone(); batch];
            model.embed(&patches)?;
            let rounds = args.patches.div_ceil(batch).max(1);
            let started = Instant::now();
            for _ in 0..rounds {
                model.embed(&patches)?;
            }
            let rate = (rounds * batch) as f64 / started.elapsed().as_secs_f64();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"model": name, "batch": batch, "patches_per_second": rate, "threads": rayon::current_num_threads()})
                );
            } else {
                println!("{name:<16} {batch:>6} {rate:>12.1}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
