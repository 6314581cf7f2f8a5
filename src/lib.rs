//! # Lesion Search core
//!
//! The engine behind `lesion-indexer` and `lesion-web`: it turns a DeepLesion-format archive
//! of CT lesions (or lesions drawn on uploaded slices) into a searchable index, and answers
//! hybrid queries over it. It knows nothing of HTTP or command lines and prints nothing.
//!
//! Start from two types:
//!
//! - [`service::Index`] owns an index folder's life: it opens the generation `CURRENT`
//!   names with its model and backend, serves it, and reloads when a write (its own, or
//!   another process's once [`service::Index::watch`] runs) publishes a new one.
//!   [`service::Writer`] holds the folder's write lock and builds, adds, adds one lesion
//!   from a slice, or deletes; each publishes a generation and mirrors it into the
//!   backend, and a writer taken from an `Index` serves it before returning.
//! - [`search::Engine`], what `Index::engine` hands out, answers a
//!   [`search::SearchRequest`] (text, an image example, a lesion, filters, liked and
//!   disliked examples) with ranked, grouped, faceted hits, and resolves lesions, their
//!   slices, thumbnails and follow-ups.
//!
//! Below them:
//!
//! - [`archive`]: the index folder's immutable generations and the one write path that
//!   fills and publishes them; [`backend`]: what ranks vectors and text (in-process or
//!   Milvus); [`index`]: flat and HNSW vector search; [`text`]: tantivy; [`store`]: sled.
//! - [`embed`]: models (candle): [`embed::Embedder`], the bundled `lesion-cnn`, the
//!   imported CT ResNet trunk, training and distillation.
//! - [`dataset`]: the `DL_info.csv` table ([`dataset::DlInfoReader`] yields typed
//!   [`dataset::LesionRecord`]s), slice folders and report text; [`dataset::inspect`]
//!   validates a whole archive.
//! - [`imaging`]: slices in Hounsfield units from 16-bit PNG, DICOM or 8-bit images
//!   ([`imaging::CtImage`]), every decoder bounded by what the file declares, CT windows,
//!   patch extraction ([`imaging::extract_patch`]) and thumbnails.
//! - [`followup`]: the same lesion in a patient's other studies, and outlooks.
//! - [`eval`]: retrieval, follow-up and real-CT measurements; [`synth`]: a generator of
//!   realistic DeepLesion-format archives for tests and demos; [`ontology`]: the LesaNet
//!   lesion ontology, the vocabulary of report text.
//!
//! Every fallible function returns [`Result`] with the one [`Error`] type, whose variants
//! name the file, line, field or argument at fault.

pub mod archive;
pub mod backend;
pub mod dataset;
pub mod embed;
mod error;
pub mod eval;
pub mod fault;
pub mod filter;
pub mod followup;
mod fsutil;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod imaging;
pub mod index;
pub mod ontology;
pub mod search;
pub mod service;
pub mod store;
pub mod synth;
pub mod text;
pub mod util;

pub use error::{Error, FieldProblem, Result};

/// Version of the engine, shown by both binaries.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
