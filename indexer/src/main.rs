//! `lesion-indexer`: the command line of Lesion Search.

mod add;
mod backend_args;
mod build;
mod change_report;
mod delete;
mod embed;
mod embed_shard;
mod eval;
mod evaluate_model;
mod export_vectors;
mod followup;
mod inspect;
mod milvus_sync;
mod patch;
mod progress;
mod query;
mod slice_args;
mod synth;
mod thumbnail;
mod train;
mod verify;
mod weights;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The model commands use when `--model` is not given.
pub const DEFAULT_MODEL: &str = lesion_search::embed::DEFAULT_MODEL;

#[derive(Parser)]
#[command(name = "lesion-indexer", version = lesion_search::version(), about = "Build, check and query CT lesion archives")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a searchable index (records, vectors, text) from a DeepLesion-format archive.
    Build(build::BuildArgs),
    /// Embed one shard of an archive (its patients that hash to I of N) into a file that
    /// `build --embeddings` reads: embedding as batch work spread over processes or machines.
    EmbedShard(embed_shard::EmbedShardArgs),
    /// Add the lesions of a DeepLesion-format folder to an index (a new generation).
    Add(add::AddArgs),
    /// Delete lesions from an index by key (a new generation; hidden from every store).
    Delete(delete::DeleteArgs),
    /// Search an index: text, an image example, a lesion, filters (the API's request).
    Query(Box<query::Args>),
    /// Check that records, vectors and text of an index agree (and, with `--backend milvus`,
    /// that Milvus holds the same lesions and vectors).
    Verify(verify::VerifyArgs),
    /// Copy the served generation into Milvus and point the alias at it (what every write
    /// with `--backend milvus` does; run it to finish one that was interrupted).
    MilvusSync(milvus_sync::MilvusSyncArgs),
    /// Generate a realistic DeepLesion-format archive (CT-like slices, table, reports).
    Synth(synth::Args),
    /// Validate a DeepLesion-format archive: a summary and every malformed row.
    Inspect(inspect::Args),
    /// Cut the patch a model sees from any slice (DICOM, PNG, JPEG) and save it as PNG.
    Patch(patch::Args),
    /// Train lesion-cnn by metric learning on an archive.
    Train(train::Args),
    /// Measure retrieval quality, follow-up matching, text retrieval, recall and latency.
    Eval(Box<eval::Args>),
    /// Held-out P@5 by coarse type of models on an archive (validation and test splits).
    EvaluateModel(evaluate_model::Args),
    /// Print the embedding of one lesion (a debugging and integration aid).
    Embed(embed::Args),
    /// Same-lesion matching on real pairs against a DL_info.csv table: accuracy, "no match"
    /// decisions, per type, leave-patient-out.
    EvalFollowup(followup::EvalArgs),
    /// Fit the follow-up matcher's weights and threshold on real pairs.
    FitFollowup(followup::FitArgs),
    /// Measure the outlook of similar lesions leave-patient-out on real pairs (Brier score
    /// against the base rates).
    EvalOutlook(followup::OutlookArgs),
    /// Manage model weights.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Write an index's vectors as TEXMEX .fvecs (a bench set of real model outputs).
    ExportVectors(export_vectors::ExportVectorsArgs),
    /// Render a lesion's key slice as PNG with its box drawn.
    Thumbnail(thumbnail::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Synth(args) => synth::run(args),
        Command::Build(args) => build::run(args),
        Command::EmbedShard(args) => embed_shard::run(args),
        Command::Verify(args) => verify::run(args),
        Command::MilvusSync(args) => milvus_sync::run(args),
        Command::Query(args) => query::run(*args),
        Command::Add(args) => add::run(args),
        Command::Delete(args) => delete::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Patch(args) => patch::run(args),
        Command::Thumbnail(args) => thumbnail::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::EvaluateModel(args) => evaluate_model::run(args),
        Command::EvalFollowup(args) => followup::eval(args),
        Command::FitFollowup(args) => followup::fit(args),
        Command::EvalOutlook(args) => followup::outlook(args),
        Command::ExportVectors(args) => export_vectors::run(args),
        Command::Weights(command) => weights::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
