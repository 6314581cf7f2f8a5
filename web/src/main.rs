//! `lesion-web`: serves an index (or the demo archive) over HTTP with the web UI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::web;
use anyhow::{anyhow, Context};
use clap::Parser;
use lesion_search::service;
use lesion_web::{demo, server, AppState, Config};
use serde::Deserialize;

#[derive(Parser)]
#[command(name = "lesion-web", version = lesion_search::version(), about = "Serve a lesion index over HTTP with the web UI")]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The index folder to serve.
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    index: Option<PathBuf>,
    /// Serve the demo archive, generating it and its index on first run.
    #[arg(long)]
    demo: bool,
    /// Folder for what the server generates: the demo archive and its index go in
    /// DIR/demo. Relative to the current directory, so that `cargo run` from a clone uses
    /// the clone's `data/` and an installed binary the folder it is started in.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Address to listen on; anything but loopback needs a read key.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Default: the model that built the index.
    #[arg(long)]
    model: Option<String>,
    /// A JSON settings file (listen, read_key, admin_key, cors_origin, max_upload_mb,
    /// max_image_side, max_k, max_offset, max_export, request_timeout_s, image_deadline_ms, allowed_hosts, max_heavy,
    /// upload_store_mb, upload_ttl_s, backend, milvus_url, milvus_collection, body_timeout_s,
    /// bodies_in_flight_mb, header_timeout_s, keep_alive_s, max_connections, graph_builder,
    /// semantic).
    /// Keys may also come from LESION_WEB_READ_KEY and LESION_WEB_ADMIN_KEY.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Allow this origin to call the API from the browser (CORS is off otherwise).
    #[arg(long)]
    cors_origin: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// A host name to answer besides localhost, 127.0.0.1 and [::1] while no read key is set
    /// (a reverse proxy's name); repeatable. Other Host headers get 421.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// CPU-heavy requests (decode, embed, export, writes) at once (default: one per core).
    #[arg(long)]
    max_heavy: Option<usize>,
    /// What serves vectors and filters: `embedded` (default) or `milvus` (the generation's
    /// collection there, mirrored by every write; `lesion-indexer milvus-sync` fills it).
    #[arg(long, value_parser = ["embedded", "milvus"])]
    backend: Option<String>,
    /// The Milvus server's gRPC address (default http://127.0.0.1:19530).
    #[arg(long)]
    milvus_url: Option<String>,
    /// Alias of the served generation in Milvus (default lesion_search).
    #[arg(long)]
    milvus_collection: Option<String>,
    /// Connections served at once, all workers together (default 4096, lowered to fit the
    /// file descriptors); more wait in the listen backlog.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Text queries search the reports by meaning too (semantic retrieval fused with BM25)
    /// unless a request sends `"semantic": false`; needs an index built with
    /// `--text-encoder minilm`. Off by default: a request turns it on with `"semantic": true`.
    #[arg(long)]
    semantic: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<std::net::SocketAddr>,
    read_key: Option<String>,
    admin_key: Option<String>,
    cors_origin: Option<String>,
    max_upload_mb: Option<usize>,
    max_image_side: Option<usize>,
    max_k: Option<usize>,
    max_offset: Option<usize>,
    max_export: Option<usize>,
    request_timeout_s: Option<u64>,
    image_deadline_ms: Option<u64>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    max_heavy: Option<usize>,
    upload_store_mb: Option<usize>,
    upload_ttl_s: Option<u64>,
    backend: Option<String>,
    milvus_url: Option<String>,
    milvus_collection: Option<String>,
    body_timeout_s: Option<u64>,
    bodies_in_flight_mb: Option<usize>,
    header_timeout_s: Option<u64>,
    keep_alive_s: Option<u64>,
    max_connections: Option<usize>,
    graph_builder: Option<lesion_search::index::GraphBuilder>,
    semantic: Option<bool>,
}

/// The settings: defaults, overridden by the settings file, the flags and the key variables.
fn config_of(args: &ServeArgs) -> anyhow::Result<Config> {
    let file = read_settings(args.config.as_deref())?;
    let mut config = Config::default();
    apply_access(&mut config, args, &file);
    apply_request_limits(&mut config, args, &file);
    apply_http_limits(&mut config, args, &file);
    config.graph_builder = file.graph_builder.unwrap_or_default();
    config.semantic_default = args.semantic || file.semantic.unwrap_or(false);
    config.backend = backend_of(args, &file)?;
    config.check().map_err(|e| anyhow!(e))?;
    Ok(config)
}

/// The settings file at `path`; without one, every setting at its default.
fn read_settings(path: Option<&std::path::Path>) -> anyhow::Result<ConfigFile> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a settings file", path.display()))
}

fn mib(mb: usize) -> usize {
    mb << 20
}

/// Who may call: the address, the keys (the environment first), CORS and the host names.
fn apply_access(config: &mut Config, args: &ServeArgs, file: &ConfigFile) {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    config.listen = args.listen.or(file.listen).unwrap_or(config.listen);
    config.read_key = env("LESION_WEB_READ_KEY").or_else(|| file.read_key.clone());
    config.admin_key = env("LESION_WEB_ADMIN_KEY").or_else(|| file.admin_key.clone());
    config.cors_origin = args
        .cors_origin
        .clone()
        .or_else(|| file.cors_origin.clone());
    config.allowed_hosts = args
        .allowed_hosts
        .iter()
        .chain(&file.allowed_hosts)
        .map(|h| h.trim().to_string())
        .collect();
}

/// What one request may ask for and hold: uploads, results, time, heavy slots.
fn apply_request_limits(config: &mut Config, args: &ServeArgs, file: &ConfigFile) {
    config.max_upload_bytes = file.max_upload_mb.map_or(config.max_upload_bytes, mib);
    config.max_image_side = file.max_image_side.unwrap_or(config.max_image_side);
    config.max_k = file.max_k.unwrap_or(config.max_k);
    config.max_offset = file.max_offset.unwrap_or(config.max_offset);
    config.max_export = file.max_export.unwrap_or(config.max_export);
    config.request_timeout = file
        .request_timeout_s
        .map_or(config.request_timeout, Duration::from_secs);
    config.image_deadline = file
        .image_deadline_ms
        .map_or(config.image_deadline, Duration::from_millis);
    config.max_heavy = args
        .max_heavy
        .or(file.max_heavy)
        .unwrap_or(config.max_heavy);
    config.upload_store_bytes = file.upload_store_mb.map_or(config.upload_store_bytes, mib);
    config.upload_ttl = file
        .upload_ttl_s
        .map_or(config.upload_ttl, Duration::from_secs);
}

/// The connection-level limits: body and head timeouts, body bytes held, connections.
fn apply_http_limits(config: &mut Config, args: &ServeArgs, file: &ConfigFile) {
    config.body_timeout = file
        .body_timeout_s
        .map_or(config.body_timeout, Duration::from_secs);
    config.max_body_bytes_in_flight = file
        .bodies_in_flight_mb
        .map_or(config.max_body_bytes_in_flight, mib);
    config.header_timeout = file
        .header_timeout_s
        .map_or(config.header_timeout, Duration::from_secs);
    config.keep_alive = file
        .keep_alive_s
        .map_or(config.keep_alive, Duration::from_secs);
    config.max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(config.max_connections);
}

/// The search backend the flags or the file name (embedded by default), with Milvus's
/// address and alias.
fn backend_of(
    args: &ServeArgs,
    file: &ConfigFile,
) -> anyhow::Result<lesion_search::backend::BackendChoice> {
    let defaults = lesion_search::backend::MilvusSettings::default();
    let milvus = lesion_search::backend::MilvusSettings {
        url: args
            .milvus_url
            .clone()
            .or_else(|| file.milvus_url.clone())
            .unwrap_or(defaults.url),
        collection: args
            .milvus_collection
            .clone()
            .or_else(|| file.milvus_collection.clone())
            .unwrap_or(defaults.collection),
        index: defaults.index,
    };
    let name = args
        .backend
        .as_deref()
        .or(file.backend.as_deref())
        .unwrap_or("embedded");
    Ok(lesion_search::backend::BackendChoice::named(name, milvus)?)
}

/// File descriptors kept for the index, logs and the blocking pool beside connections.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit of open files to the hard one, so that connections, not the
/// default soft limit (often 1024), bound the server; returns the limit now in force.
#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("warning: could not raise the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}

/// The listening socket, with actix-web's backlog of 1,024 (std's is 128), where
/// connections past `max_connections` wait.
fn listener(addr: std::net::SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    #[cfg(unix)]
    rustix::net::listen(&listener, 1024).with_context(|| format!("listening on {addr}"))?;
    Ok(listener)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = config_of(&args)?;
    if let Some(fds) = raise_fd_limit() {
        let fit = usize::try_from(fds.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
        if config.max_connections > fit {
            eprintln!(
                "warning: {fds} open files allowed: serving {fit} connections at once, not {}",
                config.max_connections
            );
            config.max_connections = fit;
        }
    }
    let (index, model) = if args.demo {
        let model = service::model_named(
            args.model
                .as_deref()
                .unwrap_or(lesion_search::embed::DEFAULT_MODEL),
        )?;
        let demo = args.data_dir.join("demo");
        (
            demo::prepare(&demo, model.as_ref(), &config.backend, config.graph_builder)?,
            model,
        )
    } else {
        let index = args
            .index
            .clone()
            .expect("clap requires --index without --demo");
        let model = match &args.model {
            Some(name) => service::model_named(name)?,
            None => service::model_of_index(&index)?,
        };
        (index, model)
    };
    let listen = config.listen;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let state = web::Data::new(AppState::open(index.clone(), model, config)?);
    let engine = state.engine();
    eprintln!(
        "serving {} (generation {}, {} lesions, model {}{}) on http://{listen}",
        index.display(),
        engine.generation(),
        engine.live(),
        engine.model_name(),
        engine
            .text_encoder_card()
            .map(|card| format!(", text encoder {}", card.name))
            .unwrap_or_default()
    );
    if engine.text_encoder_card().is_some() && !engine.supports_semantic() {
        eprintln!(
            "warning: the archive has report vectors, but their text encoder could not be loaded: semantic requests get 503 until `lesion-indexer weights import minilm` has run and the server restarts"
        );
    }
    drop(engine);
    let listener = listener(listen)?;
    actix_web::rt::System::new().block_on(async move {
        server(state, listener, workers)
            .with_context(|| format!("serving on {listen}"))?
            .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match serve(cli.serve) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
