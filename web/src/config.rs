//! Server settings: where to listen, the access keys, CORS and the caps on requests.

use std::net::SocketAddr;
use std::time::Duration;

use lesion_search::search::SearchLimits;

/// Rows an export may hold by default: a large cohort (DeepLesion's whole test split is
/// 4,927 lesions, its whole table 32,735) in one file.
pub const DEFAULT_MAX_EXPORT: usize = 50_000;

/// The largest `max_export` a settings file may set: at about 1 KiB a row, 256 MiB held.
pub const MOST_EXPORT: usize = 250_000;

/// Access keys and limits; defaults are safe for a workstation.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Required on read routes when set (header `Authorization: Bearer KEY` or `X-Api-Key`).
    pub read_key: Option<String>,
    /// Required on write routes; without it the write routes are off.
    pub admin_key: Option<String>,
    /// The one origin allowed to call the API from another site; none: CORS off.
    pub cors_origin: Option<String>,
    pub max_upload_bytes: usize,
    /// Largest width or height of an uploaded slice.
    pub max_image_side: usize,
    pub max_k: usize,
    /// Rows an export may hold: a longer result list is refused (400 naming `limit`) unless
    /// the request asks for its first `limit` rows. The file is built in memory (about 1 KiB
    /// a row with its report), so this bounds an export's memory too.
    pub max_export: usize,
    pub request_timeout: Duration,
    /// Budget of the image path of a search; past it the answer is text-only, flagged.
    pub image_deadline: Duration,
    /// Host names answered besides loopback while no read key is set (a reverse proxy's).
    pub allowed_hosts: Vec<String>,
    /// CPU-heavy requests (decoding, embedding, export, writes) running at once.
    pub max_heavy: usize,
    /// How long a heavy request waits for a slot before it gets 503 with `Retry-After`.
    pub heavy_wait: Duration,
    /// Bytes of decoded uploads kept in memory for searching and viewing.
    pub upload_store_bytes: usize,
    /// How long an upload is kept.
    pub upload_ttl: Duration,
    /// Deepest page offset a search may ask for.
    pub max_offset: usize,
    /// Longest list a request may carry (patients to exclude, liked lesions, types).
    pub max_list: usize,
    /// Most parts a multipart form may have.
    pub max_parts: usize,
    /// Admin writes that may wait for the writer (each holds its decoded slice); past it a
    /// write is answered 503 with `Retry-After`.
    pub task_queue: usize,
    /// What serves vectors and filters (the embedded stores, or Milvus).
    pub backend: lesion_search::backend::BackendChoice,
    /// What builds the demo index's HNSW graph (`graph_builder` in the settings file).
    pub graph_builder: lesion_search::index::GraphBuilder,
    /// How long a request's body may take to arrive, whatever its kind; past it 408.
    pub body_timeout: Duration,
    /// Bytes of request bodies all requests together may hold at once (declared lengths
    /// reserved up front, chunked bodies as they arrive); past it 503 with `Retry-After`.
    pub max_body_bytes_in_flight: usize,
    /// Text queries use semantic retrieval when the request does not say (`semantic`),
    /// on an archive with report vectors; off by default.
    pub semantic_default: bool,
    /// How long a connection may take to send a request's head.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive: Duration,
    /// Connections served at once, all workers together (lowered at start to fit the
    /// process's file descriptors); more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            read_key: None,
            admin_key: None,
            cors_origin: None,
            max_upload_bytes: 64 << 20,
            max_image_side: 4096,
            // The core's caps, so the server and the CLI refuse the same requests.
            max_k: SearchLimits::DEFAULT.max_k,
            max_export: DEFAULT_MAX_EXPORT,
            request_timeout: Duration::from_secs(30),
            image_deadline: Duration::from_secs(3),
            allowed_hosts: Vec::new(),
            max_heavy: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            heavy_wait: Duration::from_secs(2),
            upload_store_bytes: 512 << 20,
            upload_ttl: Duration::from_secs(30 * 60),
            max_offset: SearchLimits::DEFAULT.max_offset,
            max_list: SearchLimits::DEFAULT.max_list,
            max_parts: 32,
            task_queue: 8,
            backend: Default::default(),
            graph_builder: Default::default(),
            semantic_default: false,
            body_timeout: Duration::from_secs(30),
            max_body_bytes_in_flight: 256 << 20,
            header_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            max_connections: 4096,
        }
    }
}

impl Config {
    /// The largest body a request may carry: the largest form the multipart reader takes
    /// (the file part plus every other part at 64 KiB, with room for part headers).
    pub fn max_body_bytes(&self) -> usize {
        self.max_upload_bytes + self.max_parts * ((64 << 10) + 1024)
    }

    /// Refuses to serve patient images beyond this machine without a read key.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.read_key.is_none() {
            return Err(format!(
                "refusing to listen on {} without a read key: set LESION_WEB_READ_KEY (and LESION_WEB_ADMIN_KEY for writes), or listen on 127.0.0.1",
                self.listen
            ));
        }
        if self.task_queue == 0 {
            return Err("task_queue must be at least 1".into());
        }
        if self.max_body_bytes_in_flight < self.max_body_bytes() {
            return Err(format!(
                "bodies_in_flight_mb ({} MiB) must hold at least one largest request ({} MiB)",
                self.max_body_bytes_in_flight >> 20,
                self.max_body_bytes().div_ceil(1 << 20)
            ));
        }
        if self.body_timeout.is_zero() || self.header_timeout.is_zero() {
            return Err("body_timeout_s and header_timeout_s must be above 0".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        let most_k = SearchLimits::DEFAULT.max_k;
        if self.max_k == 0 || self.max_k > most_k {
            return Err(format!("max_k must be 1 to {most_k}, not {}", self.max_k));
        }
        if self.max_export == 0 || self.max_export > MOST_EXPORT {
            return Err(format!(
                "max_export must be 1 to {MOST_EXPORT} (an export is built in memory), not {}",
                self.max_export
            ));
        }
        if self.max_heavy == 0 {
            return Err("max_heavy must be at least 1".into());
        }
        for (name, key) in [("read", &self.read_key), ("admin", &self.admin_key)] {
            if key.as_ref().is_some_and(|k| k.len() < 16) {
                return Err(format!("the {name} key must be at least 16 characters"));
            }
        }
        Ok(())
    }
}
