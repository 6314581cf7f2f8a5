//! # Lesion Search core
//!
//! The engine behind `lesion-indexer` and `lesion-web`: it turns a DeepLesion-format archive
//! of CT lesions into patches a model can embed, and knows nothing of HTTP or command lines.
//!
//! - [`dataset`]: the `DL_info.csv` table ([`dataset::DlInfoReader`] yields typed
//!   [`dataset::LesionRecord`]s), slice folders and report text; [`dataset::inspect`]
//!   validates a whole archive.
//! - [`imaging`]: slices in Hounsfield units from 16-bit PNG, DICOM or 8-bit images
//!   ([`imaging::CtImage`]), CT windows, patch extraction ([`imaging::extract_patch`]) and
//!   thumbnails.
//! - [`synth`]: a generator of realistic DeepLesion-format archives for tests and demos.
//! - [`ontology`]: the LesaNet lesion ontology, the vocabulary of report text.
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
pub mod store;
pub mod synth;
pub mod text;
pub mod util;

pub use error::{Error, FieldProblem, Result};

/// Version of the engine, shown by both binaries.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
