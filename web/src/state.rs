//! What every handler shares: the served index (its engine swapped whole when a generation
//! is published), the write queue, the settings, metrics and recently uploaded slices.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lesion_search::embed::Embedder;
use lesion_search::imaging::CtImage;
use lesion_search::search::Engine;
use lesion_search::service::Index;

use crate::config::Config;
use crate::guard::InFlight;
use crate::metrics::Metrics;
use crate::tasks::TaskQueue;

struct HeldUpload {
    id: String,
    image: Arc<CtImage>,
    bytes: usize,
    since: Instant,
}

pub struct AppState {
    index: Arc<Index>,
    pub index_dir: PathBuf,
    pub config: Config,
    pub metrics: Metrics,
    /// Admin writes, run one at a time off the request path.
    pub tasks: TaskQueue,
    /// Slices uploaded for searching, in memory only (never on disk), oldest first; bounded
    /// by `config.upload_store_bytes` and `config.upload_ttl`.
    uploads: Mutex<VecDeque<HeldUpload>>,
    /// Slots for CPU-heavy work (see `api::heavy`).
    pub heavy: Arc<tokio::sync::Semaphore>,
    upload_counter: std::sync::atomic::AtomicU64,
    /// Request-body bytes all requests of this server hold now (see [`crate::guard`]).
    bodies_in_flight: InFlight,
}

/// How often the watcher looks for a generation published by another process
/// (`lesion-indexer add` or `delete` while the server runs).
const WATCH_EVERY: Duration = Duration::from_millis(250);

impl AppState {
    pub fn open(
        index_dir: PathBuf,
        model: Arc<dyn Embedder>,
        config: Config,
    ) -> lesion_search::Result<Self> {
        let index = Index::open_with_model(&index_dir, model, &config.backend)?;
        Ok(AppState::serving(index, config))
    }

    /// Serves an engine already open (sled lets one opener per process hold a generation,
    /// so several servers over one index share it).
    pub fn with_engine(engine: Arc<Engine>, index_dir: PathBuf, config: Config) -> Self {
        AppState::serving(Index::serving(engine, &index_dir, &config.backend), config)
    }

    /// Starts the generation watcher, the outlook warm-up and the write worker.
    fn serving(index: Index, config: Config) -> Self {
        let index = Arc::new(index.warming_outlooks());
        let watching = index.watch(WATCH_EVERY, |e| {
            eprintln!(
                "warning: a newly published generation could not be opened ({e}); the previous one stays served and the watcher retries"
            );
        });
        if let Err(e) = watching {
            eprintln!("warning: could not start the generation watcher: {e}; restart the server to serve generations published by other processes");
        }
        AppState {
            heavy: Arc::new(tokio::sync::Semaphore::new(config.max_heavy)),
            tasks: TaskQueue::start(index.clone(), config.task_queue),
            index_dir: index.dir().to_path_buf(),
            index,
            config,
            metrics: Metrics::default(),
            uploads: Mutex::new(VecDeque::new()),
            upload_counter: Default::default(),
            bodies_in_flight: InFlight::default(),
        }
    }

    /// The engine serving now; a request keeps the one it started with. Never opens a
    /// generation: the watcher and the write worker swap new ones in.
    pub fn engine(&self) -> Arc<Engine> {
        self.index.engine()
    }

    pub fn keep_upload(&self, image: CtImage) -> String {
        let n = self
            .upload_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // 128 bits from the OS-seeded keys of std's hasher: an upload id cannot be guessed,
        // so one user's slice stays out of another's reach on a shared server.
        let random = || {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(n);
            hasher.finish()
        };
        let id = format!("u{n}-{:016x}{:016x}", random(), random());
        let bytes = image.pixels.len() * std::mem::size_of::<f32>();
        if let Ok(mut uploads) = self.uploads.lock() {
            uploads.push_back(HeldUpload {
                id: id.clone(),
                image: Arc::new(image),
                bytes,
                since: Instant::now(),
            });
            self.evict(&mut uploads);
        }
        id
    }

    /// Drops expired uploads, then the oldest until the rest fit the byte budget (the newest
    /// always stays: it was just decoded within the image caps).
    fn evict(&self, uploads: &mut VecDeque<HeldUpload>) {
        let ttl = self.config.upload_ttl;
        uploads.retain(|u| u.since.elapsed() < ttl);
        let mut total: usize = uploads.iter().map(|u| u.bytes).sum();
        while total > self.config.upload_store_bytes && uploads.len() > 1 {
            if let Some(oldest) = uploads.pop_front() {
                total -= oldest.bytes;
            }
        }
    }

    pub fn upload(&self, id: &str) -> Option<Arc<CtImage>> {
        let mut uploads = self.uploads.lock().ok()?;
        self.evict(&mut uploads);
        uploads.iter().find(|u| u.id == id).map(|u| u.image.clone())
    }

    /// The count of request-body bytes in flight, capped by
    /// `config.max_body_bytes_in_flight`.
    pub fn bodies_in_flight(&self) -> &InFlight {
        &self.bodies_in_flight
    }

    /// Bytes of decoded uploads held now.
    pub fn upload_bytes(&self) -> usize {
        self.uploads
            .lock()
            .map(|u| u.iter().map(|u| u.bytes).sum())
            .unwrap_or(0)
    }
}
