//! `lesion-web`: the HTTP server and web UI of Lesion Search.
//!
//! The server itself arrives with the search API; for now the binary reports its version so
//! that packaging and the quick start can be exercised end to end.

use clap::Parser;

#[derive(Parser)]
#[command(name = "lesion-web", version = lesion_search::version(), about = "Serve a lesion archive over HTTP (search API and web UI)")]
struct Cli {}

fn main() -> anyhow::Result<()> {
    Cli::parse();
    println!("lesion-web {}", lesion_search::version());
    Ok(())
}
