//! `lesion-bench`: the maintainers' measuring tools, kept out of the products. Each command
//! is one file: the vector index, patch extraction, in-process search, the two backends and
//! embedding speed measured in process; `load` and `soak` drive a `lesion-web` server over
//! HTTP. Their figures are in BENCHMARKS.md.

mod backend_args;
mod backends;
mod embed;
mod load;
mod patches;
mod search;
mod soak;
mod text;
mod vectors;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lesion-bench", version = lesion_search::version(), about = "Measure Lesion Search: the vector index, search, embedding, and a server under load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the vector index (flat and HNSW, with and without filters, an ef sweep) on
    /// generated vectors or on a TEXMEX / .npy set (--base, --queries, --truth).
    Vectors(vectors::Args),
    /// Measure patch extraction speed (slices decoded, neighbours included) on an archive.
    Patches(patches::Args),
    /// Measure in-process query latency (text, by lesion, both, image) on a built index.
    Search(search::Args),
    /// Compare the embedded and the Milvus backend on one index: same top k of full
    /// requests, vector recall against the exact scan, latency and throughput.
    Backends(backends::Args),
    /// Measure embedding speed (patches/s) of models at several batch sizes.
    Embed(embed::Args),
    /// Load-test a running server: keep-alive connections sending one kind of query.
    Load(load::Args),
    /// Soak a server over a copy of an index: mixed reads, image uploads, exports, admin
    /// writes and hostile requests for minutes; reports 5xx, memory and lost writes.
    Soak(soak::Args),
    /// The text benchmark on LesaNet's report phrases: judged queries by kind, each query
    /// feature on and off.
    Text(text::Args),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Vectors(args) => vectors::run(args),
        Command::Patches(args) => patches::run(args),
        Command::Search(args) => search::run(args),
        Command::Backends(args) => backends::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Load(args) => load::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Text(args) => text::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
