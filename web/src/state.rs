//! What every handler shares: the served engine (replaced whole after a write), the
//! settings, metrics and recently uploaded slices.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

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
}

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
        }
    }

    /// The engine serving now; a request keeps the one it started with.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .map(|e| e.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
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
