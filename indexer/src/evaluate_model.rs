//! `lesion-indexer evaluate-model`: models compared on a generated archive (held-out P@5 by
//! type) or on real CT (`--real`: re-identification, same lesion across studies, speed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::embed::train::evaluate_on_dataset;
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::eval::read_pairs;
use lesion_search::eval::real_ct::{
    evaluate_real_ct, evaluate_volumes, load_masked_volumes, real_ct_markdown, RealCtInputs,
};

#[derive(clap::Args)]
pub struct Args {
    /// Archive whose validation and test lesions are the queries and the database.
    #[arg(long, required_unless_present = "real", conflicts_with = "real")]
    dataset: Option<PathBuf>,
    /// A real DeepLesion folder (`Images_png/` and `DL_info.csv` or `DL_info_partial.csv`,
    /// such as ../shared/data/deeplesion): the lesions whose key slice is there are the
    /// database and the queries.
    #[arg(long)]
    real: Option<PathBuf>,
    /// Real same-lesion pairs (DLT `valid.json`) for --real; those with both slices present
    /// are ranked.
    #[arg(long, requires = "real")]
    pairs: Option<PathBuf>,
    /// Folder with pyradiomics' real chest CT volumes and tumour masks
    /// (`lung1_image.nrrd`, `lung1_label.nrrd`, `lung2_...`; from the `pyradiomics==3.1.0`
    /// sdist's `data/`), for --real: neighbouring-slice retrieval and tumour against normal
    /// tissue.
    #[arg(long, requires = "real")]
    volumes: Option<PathBuf>,
    /// Models (names or folders).
    #[arg(long, num_args = 1.., default_values_t = [crate::DEFAULT_MODEL.to_string()])]
    models: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(real) = &args.real {
        let inputs = RealCtInputs {
            deeplesion: real.clone(),
            pairs: match &args.pairs {
                Some(path) => read_pairs(path)?,
                None => Vec::new(),
            },
        };
        let volumes = match &args.volumes {
            Some(dir) => {
                let v = load_masked_volumes(dir)?;
                anyhow::ensure!(
                    !v.is_empty(),
                    "{} holds no lung1/lung2 _image.nrrd with its _label.nrrd",
                    dir.display()
                );
                v
            }
            None => Vec::new(),
        };
        let mut all = Vec::new();
        let mut by_volume = Vec::new();
        for name in &args.models {
            let model = resolve_model(name, &default_cache_dir())
                .with_context(|| format!("loading model {name}"))?;
            all.push(evaluate_real_ct(name, model.as_ref(), &inputs)?);
            if !volumes.is_empty() {
                by_volume.push((name.clone(), evaluate_volumes(model.as_ref(), &volumes)?));
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"deeplesion": all, "volumes": by_volume})
                )?
            );
        } else {
            print!("{}", real_ct_markdown(&all));
            if !by_volume.is_empty() {
                println!("\n| model | volume | tumour slices | nearest is the tumour on an adjacent slice | normal patches | tumour vs normal ROC AUC |\n|---|---|---:|---:|---:|---:|");
                for (name, figures) in &by_volume {
                    for f in figures {
                        let n = &f.neighbouring_slice_found;
                        println!(
                            "| `{name}` | {} | {} | {}/{} | {} | {} |",
                            f.volume,
                            f.tumour_slices,
                            n.rank_1,
                            n.queries,
                            f.normal_patches,
                            f.tumour_vs_normal_auc
                                .map_or("-".into(), |a| format!("{a:.3}"))
                        );
                    }
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dataset = args
        .dataset
        .expect("clap requires --dataset without --real");
    for name in &args.models {
        let model = resolve_model(name, &default_cache_dir())?;
        let (n, p, by_type) = evaluate_on_dataset(model.as_ref(), &dataset)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"model": name, "lesions": n, "p_at_5": p, "p_at_5_by_type": by_type})
            );
        } else {
            let types: Vec<String> = by_type.iter().map(|(t, p)| format!("{t} {p:.3}")).collect();
            println!(
                "{name}: held-out P@5 {p:.3} over {n} lesions ({})",
                types.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
