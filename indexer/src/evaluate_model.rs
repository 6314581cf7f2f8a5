//! `lesion-indexer evaluate-model`: models compared on a generated archive (P@5 by type
//! under `eval`'s retrieval protocol, without building an index) or on real CT (`--real`:
//! re-identification, same lesion across studies, speed; and, where given, real DICOM slices,
//! masked chest CT volumes and BLDS' bone lesions).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::embed::{default_cache_dir, resolve_model};
use lesion_search::eval::bone_lesions::{evaluate_bone_lesions, load_bone_lesions, BoneLesionSet};
use lesion_search::eval::real_ct::{
    evaluate_dicom, evaluate_real_ct, evaluate_volumes, load_dicom_slices, load_masked_volumes,
    MaskedVolume, RealCtInputs, RealCtReport,
};
use lesion_search::eval::{evaluate_model, read_pairs, RetrievalFigures};
use lesion_search::imaging::CtImage;

#[derive(clap::Args)]
pub struct Args {
    /// Archive to judge the models on, as `eval` judges an index of it: the typed lesions of
    /// --query-split query every typed lesion of other patients.
    #[arg(long, required_unless_present = "real", conflicts_with = "real")]
    dataset: Option<PathBuf>,
    /// With --dataset: the split whose typed lesions are the queries.
    #[arg(long, default_value = "test", conflicts_with = "real")]
    query_split: String,
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
    /// Folder of DICOM files (such as data/dicom), for --real: the CT slices among them,
    /// boxes over the body found again under jitter, scale and HU shifts.
    #[arg(long, requires = "real")]
    dicom: Option<PathBuf>,
    /// Folder with real CT volumes and bone-lesion boxes in BLDS' layout
    /// (`image_bone_lesions.csv` beside the NIfTI volumes it names, such as
    /// ../shared/data/blds), for --real: each lesion found again from its axial key slice
    /// under jitter, scale and HU shifts, and lesion against normal bone of the same volumes.
    #[arg(long, requires = "real")]
    bone_lesions: Option<PathBuf>,
    /// For --real: also write `real_ct.json` and `real_ct.md` into this folder.
    #[arg(long, requires = "real")]
    out: Option<PathBuf>,
    /// Models (names or folders).
    #[arg(long, num_args = 1.., default_values_t = [crate::DEFAULT_MODEL.to_string()])]
    models: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match &args.real {
        Some(real) => run_on_real_ct(real, &args),
        None => run_on_archive(args),
    }
}

/// `--real`: every model on DeepLesion's real slices, and on the DICOM slices and masked
/// volumes where given; the report printed, and written where `--out` says.
fn run_on_real_ct(real: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let data = read_real_ct(real, args)?;
    let report = measure_real_ct(&args.models, &data)?;
    let json = serde_json::to_string_pretty(&report)?;
    let markdown = report.markdown();
    if let Some(dir) = &args.out {
        write_real_ct_reports(dir, &json, &markdown)?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{markdown}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The real data every model is judged on; the DICOM slices, volumes and bone lesions empty
/// where not asked for.
struct RealCtData {
    inputs: RealCtInputs,
    volumes: Vec<MaskedVolume>,
    dicom: Vec<(String, CtImage)>,
    bone_lesions: Option<BoneLesionSet>,
}

/// Reads the pairs, then the volumes, then the DICOM slices, then the bone lesions, before
/// any model is loaded; a folder given that holds none of what it should is refused.
fn read_real_ct(real: &Path, args: &Args) -> anyhow::Result<RealCtData> {
    let inputs = RealCtInputs {
        deeplesion: real.to_path_buf(),
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
    let dicom = match &args.dicom {
        Some(dir) => {
            let slices = load_dicom_slices(dir)?;
            anyhow::ensure!(
                !slices.is_empty(),
                "{} holds no CT .dcm file",
                dir.display()
            );
            slices
        }
        None => Vec::new(),
    };
    let bone_lesions = match &args.bone_lesions {
        Some(dir) => Some(load_bone_lesions(dir)?),
        None => None,
    };
    Ok(RealCtData {
        inputs,
        volumes,
        dicom,
        bone_lesions,
    })
}

fn measure_real_ct(models: &[String], data: &RealCtData) -> anyhow::Result<RealCtReport> {
    let mut report = RealCtReport {
        deeplesion: Vec::new(),
        dicom: Vec::new(),
        volumes: Vec::new(),
        bone_lesions: Vec::new(),
    };
    for name in models {
        let model = resolve_model(name, &default_cache_dir())
            .with_context(|| format!("loading model {name}"))?;
        report
            .deeplesion
            .push(evaluate_real_ct(name, model.as_ref(), &data.inputs)?);
        if !data.dicom.is_empty() {
            report
                .dicom
                .push(evaluate_dicom(name, model.as_ref(), &data.dicom)?);
        }
        if !data.volumes.is_empty() {
            report.volumes.push((
                name.clone(),
                evaluate_volumes(model.as_ref(), &data.volumes)?,
            ));
        }
        if let Some(set) = &data.bone_lesions {
            report
                .bone_lesions
                .push(evaluate_bone_lesions(name, model.as_ref(), set)?);
        }
    }
    Ok(report)
}

fn write_real_ct_reports(dir: &Path, json: &str, markdown: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, text) in [("real_ct.json", json), ("real_ct.md", markdown)] {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `--dataset`: each model's P@5 under `eval`'s protocol, printed as it is measured (the
/// protocol's statement once, above the first model, unless `--json`).
fn run_on_archive(args: Args) -> anyhow::Result<ExitCode> {
    let dataset = args
        .dataset
        .expect("clap requires --dataset without --real");
    let split = crate::eval::parse_query_split(&args.query_split)?;
    for (i, name) in args.models.iter().enumerate() {
        let model = resolve_model(name, &default_cache_dir())?;
        let figures = evaluate_model(model.as_ref(), &dataset, split)?;
        if args.json {
            print_model_json(name, &figures);
        } else {
            if i == 0 {
                println!("{}", figures.protocol.statement());
            }
            print_model_line(name, &figures);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_model_json(name: &str, figures: &RetrievalFigures) {
    let by_type: serde_json::Map<String, serde_json::Value> = figures
        .per_type
        .iter()
        .map(|(t, f)| (t.name().to_string(), f.p_at_5.into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({"model": name, "protocol": figures.protocol, "p_at_5": figures.p_at_5, "mmv_at_5": figures.mmv_at_5, "p_at_5_by_type": by_type})
    );
}

fn print_model_line(name: &str, figures: &RetrievalFigures) {
    let types: Vec<String> = figures
        .per_type
        .iter()
        .map(|(t, f)| format!("{} {:.3}", t.name(), f.p_at_5))
        .collect();
    println!(
        "{name}: P@5 {:.3}, mMV@5 {:.3} over {} queries ({})",
        figures.p_at_5,
        figures.mmv_at_5,
        figures.protocol.queries,
        types.join(", ")
    );
}
