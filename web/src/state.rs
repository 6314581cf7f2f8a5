//! What every handler shares: the served engine (swapped whole when a generation is
//! published), the write queue, the settings, metrics and recently uploaded slices.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lesion_search::backend::BackendChoice;
use lesion_search::embed::Embedder;
use lesion_search::imaging::CtImage;
use lesion_search::search::Engine;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::tasks::TaskQueue;

struct HeldUpload {
    id: String,
    image: Arc<CtImage>,
    bytes: usize,
    since: Instant,
}

/// The generation served now and what it takes to open the next one. Shared with the
/// generation watcher and the write worker, which outlive no [`AppState`]: they hold it
/// weakly or stop when the state's task queue closes.
pub struct Served {
    engine: ArcSwap<Engine>,
    model: Arc<dyn Embedder>,
    index_dir: PathBuf,
    backend: BackendChoice,
    /// Held while a generation is opened: sled admits one opener per process, so the
    /// watcher and the write that published a generation must not both open it.
    reloading: Mutex<()>,
}

impl Served {
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    pub fn index_dir(&self) -> &std::path::Path {
        &self.index_dir
    }

    fn published_elsewhere(&self, serving: &Engine) -> bool {
        let Ok(name) = std::fs::read_to_string(self.index_dir.join("CURRENT")) else {
            return false;
        };
        serving.generation_name() != Some(name.trim())
    }

    /// Opens the generation `CURRENT` names and serves it from now on; `Ok(false)` when it
    /// is served already.
    pub fn reload(&self) -> lesion_search::Result<bool> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.reload_locked()
    }

    fn reload_locked(&self) -> lesion_search::Result<bool> {
        if !self.published_elsewhere(&self.engine.load()) {
            return Ok(false);
        }
        let engine = Arc::new(Engine::open_with(
            &self.index_dir,
            self.model.clone(),
            &self.backend,
        )?);
        warm(&engine);
        self.engine.store(engine);
        Ok(true)
    }

    /// After this server's own write: brings the backend up to the new generation (Milvus
    /// gets its collection), then serves it. Another process's writes mirror themselves;
    /// the watcher only reloads.
    pub fn publish_and_reload(&self) -> lesion_search::Result<bool> {
        // Held throughout, so that the watcher does not try the new generation before its
        // collection is filled.
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lesion_search::backend::publish(&self.index_dir, &self.backend)?;
        self.reload_locked()
    }
}

pub struct AppState {
    served: Arc<Served>,
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
        let engine = Arc::new(Engine::open_with(
            &index_dir,
            model.clone(),
            &config.backend,
        )?);
        Ok(AppState::with_engine(engine, index_dir, model, config))
    }

    /// Serves an engine already open (sled lets one opener per process hold a generation,
    /// so several servers over one index share it). Starts the generation watcher and the
    /// write worker.
    pub fn with_engine(
        engine: Arc<Engine>,
        index_dir: PathBuf,
        model: Arc<dyn Embedder>,
        config: Config,
    ) -> Self {
        warm(&engine);
        let served = Arc::new(Served {
            engine: ArcSwap::new(engine),
            model,
            index_dir: index_dir.clone(),
            backend: config.backend.clone(),
            reloading: Mutex::new(()),
        });
        watch(Arc::downgrade(&served));
        AppState {
            heavy: Arc::new(tokio::sync::Semaphore::new(config.max_heavy)),
            tasks: TaskQueue::start(served.clone(), config.task_queue),
            served,
            index_dir,
            config,
            metrics: Metrics::default(),
            uploads: Mutex::new(VecDeque::new()),
            upload_counter: Default::default(),
        }
    }

    /// The engine serving now; a request keeps the one it started with. Never opens a
    /// generation: the watcher and the write worker swap new ones in.
    pub fn engine(&self) -> Arc<Engine> {
        self.served.engine()
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

    /// Bytes of decoded uploads held now.
    pub fn upload_bytes(&self) -> usize {
        self.uploads
            .lock()
            .map(|u| u.iter().map(|u| u.bytes).sum())
            .unwrap_or(0)
    }
}

/// Opens each generation published by another process as soon as `CURRENT` names it, so
/// that no request ever opens one. Ends with the state it serves.
fn watch(served: Weak<Served>) {
    let spawned = std::thread::Builder::new()
        .name("generation-watcher".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(WATCH_EVERY);
                let Some(served) = served.upgrade() else {
                    return;
                };
                match served.reload() {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        eprintln!(
                            "warning: a newly published generation could not be opened ({e}); the previous one stays served and the watcher retries"
                        );
                    }
                    Err(_) => {}
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("warning: could not start the generation watcher: {e}; restart the server to serve generations published by other processes");
    }
}

/// Collects the archive's follow-up courses for outlooks in the background (seconds on a
/// DeepLesion-sized archive), so that no request waits for them.
fn warm(engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    let spawned = std::thread::Builder::new()
        .name("outlook-warmup".into())
        .spawn(move || {
            if let Some(engine) = engine.upgrade() {
                // The error text may name a lesion key (it holds the patient number): not logged;
                // an outlook request meets the same error and answers it.
                if engine.trajectories().is_err() {
                    eprintln!("warning: the follow-up courses for outlooks could not be collected; outlook requests will report why");
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("warning: could not start the outlook warm-up: {e}");
    }
}
