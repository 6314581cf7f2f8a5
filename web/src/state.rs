//! What every handler shares: the served engine (replaced whole after a write), the
//! settings, metrics and recently uploaded slices.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lesion_search::embed::Embedder;
use lesion_search::imaging::CtImage;
use lesion_search::search::Engine;

use crate::config::Config;
use crate::metrics::Metrics;

/// Slices uploaded for searching, kept in memory (never on disk) for a while.
const UPLOADS_KEPT: usize = 64;

pub struct AppState {
    engine: RwLock<Arc<Engine>>,
    model: Arc<dyn Embedder>,
    pub index_dir: PathBuf,
    pub config: Config,
    pub metrics: Metrics,
    /// One write at a time inside this process (the index LOCK guards across processes).
    pub writer: Mutex<()>,
    uploads: Mutex<VecDeque<(String, Arc<CtImage>)>>,
    upload_counter: std::sync::atomic::AtomicU64,
    /// When `CURRENT` was last compared with the served generation.
    last_check: Mutex<Instant>,
}

/// How often the server looks for a generation published by another process (`lesion-indexer
/// add` or `delete` while it runs).
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl AppState {
    pub fn open(
        index_dir: PathBuf,
        model: Arc<dyn Embedder>,
        config: Config,
    ) -> lesion_search::Result<Self> {
        let engine = Arc::new(Engine::open(&index_dir, model.clone())?);
        Ok(AppState::with_engine(engine, index_dir, model, config))
    }

    /// Serves an engine already open (sled lets one opener per process hold a generation,
    /// so several servers over one index share it).
    pub fn with_engine(
        engine: Arc<Engine>,
        index_dir: PathBuf,
        model: Arc<dyn Embedder>,
        config: Config,
    ) -> Self {
        AppState {
            engine: RwLock::new(engine),
            model,
            index_dir,
            config,
            metrics: Metrics::default(),
            writer: Mutex::new(()),
            uploads: Mutex::new(VecDeque::new()),
            upload_counter: Default::default(),
            last_check: Mutex::new(Instant::now()),
        }
    }

    /// The engine serving now; a request keeps the one it started with. At most once a
    /// second, a generation published by another process is picked up.
    pub fn engine(&self) -> Arc<Engine> {
        let current = self
            .engine
            .read()
            .map(|e| e.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        let due = self.last_check.try_lock().is_ok_and(|mut last| {
            let due = last.elapsed() >= CHECK_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        });
        if due && self.published_elsewhere(&current) && self.reload().is_ok() {
            return self.engine();
        }
        current
    }

    fn published_elsewhere(&self, serving: &Engine) -> bool {
        let Ok(name) = std::fs::read_to_string(self.index_dir.join("CURRENT")) else {
            return false;
        };
        serving.archive.dir.file_name().and_then(|n| n.to_str()) != Some(name.trim())
    }

    /// Opens the generation just published and serves it from now on.
    pub fn reload(&self) -> lesion_search::Result<()> {
        let engine = Arc::new(Engine::open(&self.index_dir, self.model.clone())?);
        match self.engine.write() {
            Ok(mut slot) => *slot = engine,
            Err(poisoned) => *poisoned.into_inner() = engine,
        }
        Ok(())
    }

    pub fn keep_upload(&self, image: CtImage) -> String {
        let n = self
            .upload_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Unguessable enough to keep one user's slice from another on a shared server.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let id = format!("u{n}-{:x}", nonce ^ (std::process::id() as u128) << 64);
        if let Ok(mut uploads) = self.uploads.lock() {
            uploads.push_back((id.clone(), Arc::new(image)));
            while uploads.len() > UPLOADS_KEPT {
                uploads.pop_front();
            }
        }
        id
    }

    pub fn upload(&self, id: &str) -> Option<Arc<CtImage>> {
        self.uploads
            .lock()
            .ok()?
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, image)| image.clone())
    }
}
