//! `lesion-indexer query`: the search request of the API, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lesion_search::imaging::{load_dicom, load_image};
use lesion_search::search::{
    parse_bounds, Bounds, Engine, FilterInput, LesionRef, SearchInput, SearchLimits, DEFAULT_K,
};
use lesion_search::service::Index;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    backend: crate::backend_args::BackendArgs,
    /// Free text (report words; ontology synonyms and parents match too).
    #[arg(long)]
    text: Option<String>,
    /// A slice to search by example: DICOM, 16-bit PNG, 8-bit PNG or JPEG.
    #[arg(long)]
    image: Option<PathBuf>,
    /// The lesion's box on `--image`, in pixels.
    #[arg(long = "box", value_name = "x1,y1,x2,y2")]
    bbox: Option<String>,
    /// Pixel spacing in mm of `--image` when the file states none.
    #[arg(long)]
    spacing: Option<f32>,
    /// Frame of a multi-frame DICOM file (0-based).
    #[arg(long, default_value_t = 0)]
    frame: u32,
    /// More like this lesion: a key (File_name, #n) or a dense id.
    #[arg(long)]
    lesion: Option<String>,
    /// Liked results (refine), by key or id; repeatable.
    #[arg(long = "like")]
    positives: Vec<String>,
    /// Disliked results, by key or id; repeatable.
    #[arg(long = "unlike")]
    negatives: Vec<String>,
    /// Coarse types to keep; repeatable.
    #[arg(long = "type")]
    types: Vec<String>,
    #[arg(long)]
    sex: Option<String>,
    /// Age range in years, `min,max` (either may be empty).
    #[arg(long)]
    age: Option<String>,
    /// Long-diameter range in mm, `min,max`.
    #[arg(long)]
    size_mm: Option<String>,
    /// Normalized location box per axis, `min,max` each in 0..1.
    #[arg(long)]
    location_x: Option<String>,
    #[arg(long)]
    location_y: Option<String>,
    #[arg(long)]
    location_z: Option<String>,
    #[arg(long)]
    split: Option<String>,
    /// Leave this patient out; repeatable.
    #[arg(long = "exclude-patient")]
    exclude_patients: Vec<u32>,
    /// Keep hits from the example lesions' own patients.
    #[arg(long)]
    include_query_patient: bool,
    /// Every hit, not one per patient.
    #[arg(long)]
    all_per_patient: bool,
    /// Hits per page, 1 to 200 (the server's default cap).
    #[arg(long, default_value_t = DEFAULT_K)]
    k: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Weighted fusion with this image share (0..1) instead of reciprocal rank fusion.
    #[arg(long)]
    image_weight: Option<f32>,
    /// Search the report text by meaning too: the reports whose sentence vectors are close
    /// to the text's join the BM25 matches, fused by RRF (needs an index built with
    /// `--text-encoder minilm`).
    #[arg(long)]
    semantic: bool,
    #[arg(long)]
    json: bool,
    /// Instead of searching: the --lesion's candidates in the patient's other studies, ranked
    /// by the follow-up matcher, with their probabilities.
    #[arg(long, requires = "lesion", conflicts_with = "outlook")]
    followups: bool,
    /// Instead of searching: what became of the lesions most like --lesion that were seen
    /// again (other patients), with the outlook's measurement on real pairs.
    #[arg(long, requires = "lesion")]
    outlook: bool,
}

fn bounds(text: &Option<String>, name: &str) -> anyhow::Result<Option<Bounds>> {
    text.as_deref()
        .map(|t| parse_bounds(t, name))
        .transpose()
        .map_err(flagged)
}

/// A core error about a request part, named by this command's flag (`filters.types[1]` is
/// `--type`, `positives[0]` is `--like`, `spacing_mm` is `--spacing`); the message is the server's.
fn flagged(error: lesion_search::Error) -> anyhow::Error {
    let flag_of = |name: &str| -> Option<String> {
        let part = name.strip_prefix("filters.").unwrap_or(name);
        let part = part.split('[').next().unwrap_or_default();
        let flag = match part {
            "types" => "type",
            "exclude_patients" => "exclude-patient",
            "positives" => "like",
            "negatives" => "unlike",
            "spacing_mm" => "spacing",
            other => other,
        };
        Some(format!("--{}", flag.replace('_', "-")))
    };
    match error {
        lesion_search::Error::InvalidArgument { name, message } => {
            anyhow::anyhow!("{}: {message}", flag_of(&name).unwrap_or(name))
        }
        lesion_search::Error::NoSuchLesion { name, reference } => anyhow::anyhow!(
            "{}: no lesion {reference} in the index",
            flag_of(&name).unwrap_or(name)
        ),
        other => other.into(),
    }
}

fn lesion_id(engine: &Engine, text: &str, name: &str) -> anyhow::Result<u32> {
    Ok(engine.resolve(&LesionRef::parse(text), name)?)
}

/// The search the flags state, unchecked: the core checks it as it checks the server's
/// body, with the same defaults and caps.
fn search_input(args: &Args) -> anyhow::Result<SearchInput> {
    let image = match &args.image {
        Some(path) if args.frame > 0 => Some(load_dicom(path, args.frame)?),
        Some(path) => Some(load_image(path)?),
        None => None,
    };
    let refs = |list: &[String]| list.iter().map(|t| LesionRef::parse(t)).collect();
    Ok(SearchInput {
        text: args.text.clone(),
        image,
        bbox: args.bbox.clone(),
        spacing_mm: args.spacing,
        lesion: args.lesion.as_deref().map(LesionRef::parse),
        positives: refs(&args.positives),
        negatives: refs(&args.negatives),
        filters: FilterInput {
            types: args.types.clone(),
            sex: args.sex.clone(),
            age: bounds(&args.age, "age")?,
            size_mm: bounds(&args.size_mm, "size_mm")?,
            location_x: bounds(&args.location_x, "location_x")?,
            location_y: bounds(&args.location_y, "location_y")?,
            location_z: bounds(&args.location_z, "location_z")?,
            split: args.split.clone(),
            exclude_patients: args.exclude_patients.clone(),
        },
        exclude_query_patient: !args.include_query_patient,
        k: args.k,
        offset: args.offset,
        group_by_patient: !args.all_per_patient,
        fusion: None,
        image_weight: args.image_weight,
        semantic: args.semantic,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let engine = Index::open(&args.index, &args.backend.choice()?)?.engine();
    if args.followups || args.outlook {
        // The filters are still checked, though only the lesion is used.
        search_input(&args)?
            .filters
            .to_filter("filters.")
            .map_err(flagged)?;
        let id = lesion_id(
            &engine,
            args.lesion.as_deref().unwrap_or_default(),
            "lesion",
        )?;
        return if args.followups {
            print_followups(&engine, id, args.json)
        } else {
            print_outlook(&engine, id, args.json)
        };
    }
    let request = search_input(&args)?
        .into_request(&engine, &SearchLimits::DEFAULT)
        .map_err(flagged)?;
    let response = engine.search(&request).context("searching")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_hits(&engine, &response, args.offset);
    Ok(ExitCode::SUCCESS)
}

/// The page as a table, then the totals and the suggested type.
fn print_hits(engine: &Engine, response: &lesion_search::search::SearchResponse, offset: usize) {
    if let Some(reason) = &response.degraded {
        eprintln!("degraded: {reason}");
    }
    println!(
        "{:>4} {:>6} {:<26} {:>8} {:<6} {:<12} {:>6} {:>4} {:>3}  snippet",
        "rank", "id", "key", "score", "match", "type", "mm", "age", "sex"
    );
    for (rank, hit) in response.hits.iter().enumerate() {
        let f = engine.facts(hit.id).expect("a hit is live");
        let matched = match hit.matched {
            lesion_search::search::Matched::Both => "both",
            lesion_search::search::Matched::Image => "image",
            lesion_search::search::Matched::Text => "text",
            lesion_search::search::Matched::Filter => "filter",
        };
        let cosine = hit
            .semantic
            .map(|s| format!(" cos {:.3}", s.cosine))
            .unwrap_or_default();
        println!(
            "{:>4} {:>6} {:<26} {:>8.4} {:<6} {:<12} {:>6.1} {:>4} {:>3}  {}{cosine}",
            offset + rank + 1,
            hit.id,
            hit.key,
            hit.score,
            matched,
            f.coarse_type.name(),
            f.long_mm,
            f.age.map(|a| format!("{a:.0}")).unwrap_or_default(),
            f.sex.code(),
            hit.text
                .as_ref()
                .map(|t| t.snippet.marked("*", "*"))
                .unwrap_or_default()
        );
    }
    println!(
        "{} of {} results; filtered set {} lesions",
        response.hits.len(),
        response.total,
        response.facets.total
    );
    if let Some(s) = &response.suggestion {
        let votes: Vec<String> = s
            .votes
            .iter()
            .map(|(t, share)| format!("{} {:.0}%", t.name(), share * 100.0))
            .collect();
        println!(
            "suggested type: {} ({})",
            s.coarse_type.name(),
            votes.join(", ")
        );
    }
}

fn print_followups(engine: &Engine, id: u32, json: bool) -> anyhow::Result<ExitCode> {
    let followups = engine.followups(id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&followups)?);
        return Ok(ExitCode::SUCCESS);
    }
    let query = followups.query();
    println!(
        "{} (study {}, series {}): {:.1} x {:.1} mm",
        query.key, query.study, query.series, query.long_mm, query.short_mm
    );
    if followups.studies.is_empty() {
        println!("the patient has no other study in the index");
    }
    for study in &followups.studies {
        let verdict = match study.matched {
            Some(m) => format!("match {m}"),
            None => "no match".into(),
        };
        println!(
            "study {}{}: {verdict}; not in this study {:.0}%",
            study.study,
            if study.same_study {
                " (same study, other series)"
            } else {
                ""
            },
            100.0 * study.no_match_probability
        );
        for c in &study.candidates {
            println!(
                "  {:>6} {:<26} {:>5.1}% {:>6.1} mm {:>+7.1}%",
                c.id,
                c.key,
                100.0 * c.probability.unwrap_or(0.0),
                c.long_mm,
                c.change_percent
            );
        }
    }
    let m = &followups.matcher;
    println!(
        "matcher: {} ({} pairs; leave-patient-out accuracy@1 {:.3}; match from {:.0}%)",
        m.fitted_on,
        m.pairs,
        m.cross_validated_accuracy_at_1,
        100.0 * m.match_threshold
    );
    Ok(ExitCode::SUCCESS)
}

fn print_outlook(engine: &Engine, id: u32, json: bool) -> anyhow::Result<ExitCode> {
    let outlook = engine.outlook(id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outlook)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "of the {} most similar lesions of other patients seen again: {} grew >20%, {} stayed, {} shrank >20%{}",
        outlook.similar.len(),
        outlook.grew,
        outlook.stable,
        outlook.shrank,
        outlook
            .median_change_percent
            .map(|m| format!("; median change {m:+.0}%"))
            .unwrap_or_default()
    );
    let b = &outlook.base_rates;
    println!(
        "base rates over {} followed lesions: grew {:.0}%, stable {:.0}%, shrank {:.0}%",
        outlook.reference_size,
        100.0 * b.grew,
        100.0 * b.stable,
        100.0 * b.shrank
    );
    match (&outlook.prediction, &outlook.evaluation) {
        (Some(p), _) => println!(
            "outlook: grew {:.0}%, stable {:.0}%, shrank {:.0}%",
            100.0 * p.grew,
            100.0 * p.stable,
            100.0 * p.shrank
        ),
        (None, Some(e)) => println!(
            "no prediction: on {} real pairs the similar lesions foretold the course no better than the base rates (Brier {:.3} against {:.3})",
            e.pairs, e.brier, e.brier_base_rates
        ),
        (None, None) => println!("no prediction: the outlook is not measured"),
    }
    for s in &outlook.similar {
        let key = |i: u32| engine.facts(i).map(|f| f.key.clone()).unwrap_or_default();
        println!(
            "  {:<26} -> {:<26} {:>6.1} -> {:>6.1} mm {:>+7.1}%  {:?}",
            key(s.from),
            key(s.to),
            s.from_long_mm,
            s.to_long_mm,
            s.change_percent,
            s.course
        );
    }
    Ok(ExitCode::SUCCESS)
}
