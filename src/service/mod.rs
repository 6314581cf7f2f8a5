//! An index folder's life in one place: open it, serve its current generation, write,
//! publish, mirror, reload.
//!
//! [`Index`] opens the generation `CURRENT` names, with the model its manifest records (or
//! one given, which must be that model) and the configured backend, and serves it: a reader
//! takes [`Index::engine`] and keeps that generation for as long as it holds it. Like
//! tantivy's `IndexReader`, the index reloads by a policy of its own, so no caller reads
//! `CURRENT`: a write through its [`Writer`] is served before the write returns;
//! [`Index::watch`] serves what other processes publish within an interval;
//! [`Index::reload`] does it on demand.
//!
//! [`Writer`] holds the folder's write lock (one writer across processes, for the writer's
//! life) and offers build, add, add-lesion and delete. Each publishes one generation
//! through `archive`, brings the backend up to it (a Milvus collection is filled before
//! this process serves it; another process's watcher may try it sooner, fail, keep the
//! previous generation and retry) and, for a writer taken from an [`Index`], makes it
//! served.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use crate::archive::{served_generation_name, Archive};
use crate::backend::BackendChoice;
use crate::embed::{
    default_cache_dir, load_text_encoder, resolve_model, Embedder, SentenceEncoder,
};
use crate::error::{Error, Result};
use crate::search::Engine;

pub use writer::{Writer, Written};

/// The model called `name_or_dir` (a bundled name, a cached import, or a model folder).
pub fn model_named(name_or_dir: &str) -> Result<Arc<dyn Embedder>> {
    Ok(Arc::from(resolve_model(name_or_dir, &default_cache_dir())?))
}

/// The model that built the generation `dir` serves, as its manifest names it.
pub fn model_of_index(dir: &Path) -> Result<Arc<dyn Embedder>> {
    model_named(&Archive::current_manifest(dir)?.model.name)
}

/// The text encoder an index's report vectors need, as its manifest names it, loaded from
/// the weights cache; `None` for an index built without one. A missing import names
/// `lesion-indexer weights import minilm`.
pub fn text_encoder_of_index(dir: &Path) -> Result<Option<Arc<SentenceEncoder>>> {
    match Archive::current_manifest(dir)?.text_encoder {
        None => Ok(None),
        Some(card) => {
            let encoder = load_text_encoder(&card.name, &default_cache_dir())?;
            card.check_same(encoder.card())?;
            Ok(Some(Arc::new(encoder)))
        }
    }
}

/// The text encoder a user names (`minilm`), loaded from the weights cache.
pub fn text_encoder_named(name: &str) -> Result<Arc<SentenceEncoder>> {
    Ok(Arc::new(load_text_encoder(name, &default_cache_dir())?))
}

/// Checks that the backend holds what the generation `dir` serves says it should (the
/// in-process backend reads the generation itself, so there is nothing to compare): its
/// description and every disagreement. Needs no model.
pub fn verify_backend(
    dir: &Path,
    backend: &BackendChoice,
) -> Result<(crate::backend::BackendInfo, Vec<String>)> {
    let (published, backend) = crate::backend::open(dir, backend)?;
    let problems = backend.verify(&published)?;
    Ok((backend.info(), problems))
}

/// An index folder opened for serving: the engine over its current generation, swapped
/// whole when a newer one is published.
pub struct Index {
    dir: PathBuf,
    model: Arc<dyn Embedder>,
    backend: BackendChoice,
    served: RwLock<Arc<Engine>>,
    /// The sentence encoder of the served generation's report vectors, loaded once and
    /// handed to every generation that has the same card.
    text_encoder: Mutex<Option<Arc<SentenceEncoder>>>,
    /// Held while a generation is opened, and by a writer of this index for its whole
    /// write: a generation is opened once (sled admits one opener per process), and never
    /// before its backend holds it.
    reloading: Mutex<()>,
    warm_outlooks: bool,
}

impl Index {
    /// Opens the served generation of `dir` with the model its manifest names.
    pub fn open(dir: &Path, backend: &BackendChoice) -> Result<Self> {
        Index::open_with_model(dir, model_of_index(dir)?, backend)
    }

    /// Opens the served generation of `dir` with `model`, which must be the one that built
    /// it (the manifest's card is checked).
    pub fn open_with_model(
        dir: &Path,
        model: Arc<dyn Embedder>,
        backend: &BackendChoice,
    ) -> Result<Self> {
        Index::open_with_models(dir, model, None, backend)
    }

    /// As [`Index::open_with_model`], with the text encoder of the report vectors given
    /// (checked against the manifest's card) instead of loaded from the weights cache.
    pub fn open_with_models(
        dir: &Path,
        model: Arc<dyn Embedder>,
        text_encoder: Option<Arc<SentenceEncoder>>,
        backend: &BackendChoice,
    ) -> Result<Self> {
        let engine = Engine::open_with(dir, model, backend)?;
        // Without the encoder the archive is still served, by BM25: a semantic request is
        // then refused naming the import (`Engine::check_semantic`).
        let text_encoder = match text_encoder {
            Some(encoder) => Some(encoder),
            None if engine.text_encoder_card().is_some() => {
                text_encoder_of_index(dir).ok().flatten()
            }
            None => None,
        };
        let engine = engine.with_text_encoder(text_encoder)?;
        Ok(Index::serving(Arc::new(engine), dir, backend))
    }

    /// Serves an engine open already over `dir` (several servers in one process share a
    /// generation this way).
    pub fn serving(engine: Arc<Engine>, dir: &Path, backend: &BackendChoice) -> Self {
        Index {
            dir: dir.to_path_buf(),
            text_encoder: Mutex::new(engine.text_encoder().cloned()),
            model: engine.model().clone(),
            backend: backend.clone(),
            served: RwLock::new(engine),
            reloading: Mutex::new(()),
            warm_outlooks: false,
        }
    }

    /// Collects each served generation's follow-up courses for outlooks in the background
    /// as soon as it is open (seconds on a DeepLesion-sized archive), so that no request
    /// waits for them.
    pub fn warming_outlooks(mut self) -> Self {
        self.warm_outlooks = true;
        warm_outlooks(&self.engine());
        self
    }

    /// The engine serving now; a reader keeps the generation it took.
    pub fn engine(&self) -> Arc<Engine> {
        self.served
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn model(&self) -> &Arc<dyn Embedder> {
        &self.model
    }

    pub fn backend(&self) -> &BackendChoice {
        &self.backend
    }

    /// The text encoder loaded for report vectors, if any generation served needed one.
    pub fn text_encoder(&self) -> Option<Arc<SentenceEncoder>> {
        self.text_encoder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The encoder a generation with `card` needs: the one held when its card agrees, else
    /// loaded from the weights cache (and held from then on); `None` when it cannot be had
    /// (the generation is served all the same, without semantic retrieval).
    fn text_encoder_for(
        &self,
        card: Option<&crate::embed::TextEncoderCard>,
    ) -> Option<Arc<SentenceEncoder>> {
        let card = card?;
        let mut held = self
            .text_encoder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(encoder) = held.as_ref().filter(|e| e.card() == card) {
            return Some(encoder.clone());
        }
        let encoder = Arc::new(load_text_encoder(&card.name, &default_cache_dir()).ok()?);
        card.check_same(encoder.card()).ok()?;
        *held = Some(encoder.clone());
        Some(encoder)
    }

    /// Serves the generation `CURRENT` names if it is not served yet; `Ok(false)` when it
    /// is. On failure the previous generation stays served.
    pub fn reload(&self) -> Result<bool> {
        let _one_at_a_time = self.reload_guard();
        self.reload_held()
    }

    /// A writer of this index: holds the folder's lock until dropped, and serves each
    /// generation it publishes before the write returns. `Error::Locked` when another
    /// writer (another process) holds it.
    pub fn writer(self: &Arc<Self>) -> Result<Writer> {
        Writer::serving(self.clone())
    }

    /// Starts a thread that serves, within `every`, each generation other processes
    /// publish. `on_failure` hears the first failure of a run of failed reloads (the
    /// previous generation stays served and the watcher keeps trying). The thread ends
    /// with the last holder of the index.
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        on_failure: impl Fn(&Error) + Send + 'static,
    ) -> std::io::Result<()> {
        let index: Weak<Index> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("generation-watcher".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(every);
                    let Some(index) = index.upgrade() else {
                        return;
                    };
                    match index.reload() {
                        Ok(_) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            on_failure(&e);
                        }
                        Err(_) => {}
                    }
                }
            })
            .map(|_| ())
    }

    fn reload_guard(&self) -> MutexGuard<'_, ()> {
        self.reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Index::reload`] for a caller that holds `reloading`.
    fn reload_held(&self) -> Result<bool> {
        let current = served_generation_name(&self.dir)?;
        if current.is_none() || current.as_deref() == self.engine().generation_name() {
            return Ok(false);
        }
        let engine = Engine::open_with(&self.dir, self.model.clone(), &self.backend)?;
        let text_encoder = self.text_encoder_for(engine.text_encoder_card());
        let engine = Arc::new(engine.with_text_encoder(text_encoder)?);
        if self.warm_outlooks {
            warm_outlooks(&engine);
        }
        *self
            .served
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = engine;
        Ok(true)
    }
}

fn warm_outlooks(engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    // A thread that cannot start, or courses that cannot be collected, cost only the
    // wait: the first outlook request collects them itself, or reports why it cannot.
    let _ = std::thread::Builder::new()
        .name("outlook-warmup".into())
        .spawn(move || {
            if let Some(engine) = engine.upgrade() {
                let _ = engine.trajectories();
            }
        });
}
