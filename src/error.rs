//! The one error type of the core library.
//!
//! Every variant names the input at fault (file, line, column, field or argument) so that
//! a user can go straight to it; the edges (CLI, server) add no context of their own.

use std::fmt;
use std::path::PathBuf;

/// Result type of the core library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One thing wrong with one field of a table row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub column: String,
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.column, self.message)
    }
}

/// Everything the core library can refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The table could not be read at all at this point (bad UTF-8, broken quoting).
    #[error("{}:{line}: {message}", path.display())]
    Table {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error("{}: missing column `{column}`{hint}", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        /// Empty, or a suggestion such as " (found `Patient_Age`)".
        hint: String,
    },

    #[error("{}: unknown column `{column}`", path.display())]
    UnknownColumn { path: PathBuf, column: String },

    /// A data row with one or more malformed fields; every problem is listed.
    #[error("{}", format_row_problems(path, *line, problems))]
    MalformedRow {
        path: PathBuf,
        line: u64,
        problems: Vec<FieldProblem>,
    },

    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },

    #[error("{}: expected a 16-bit grayscale PNG (HU + 32768), found {found}", path.display())]
    WrongPixelFormat { path: PathBuf, found: String },

    #[error("{}: {message}", path.display())]
    Dicom { path: PathBuf, message: String },

    /// A NIfTI-1 header field that cannot be honoured, or sizes the file does not hold.
    #[error("{}: NIfTI header field `{field}`: {message}", path.display())]
    Nifti {
        path: PathBuf,
        field: &'static str,
        message: String,
    },

    #[error("{}: DICOM file has no pixel data (PixelData element 7FE0,0010 is absent)", path.display())]
    NoPixelData { path: PathBuf },

    #[error("{}: missing slice file for lesion {lesion}", path.display())]
    MissingSlice { path: PathBuf, lesion: String },

    #[error("box {x1},{y1},{x2},{y2} {reason} ({width}x{height} pixels)")]
    BoxOutsideImage {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        width: usize,
        height: usize,
        reason: &'static str,
    },

    #[error("{name}: {message}")]
    InvalidArgument { name: String, message: String },

    /// The work's deadline passed (or its caller gave up) between two of its steps.
    #[error("stopped at {step}: the deadline passed")]
    Cancelled { step: String },

    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    #[error("{}: tensor `{tensor}` has shape {found:?}, the model needs {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },

    /// A query or an update made with another model than the one that built the index.
    #[error("the index was built with another model: {}", differences.join("; "))]
    ModelMismatch { differences: Vec<String> },

    /// An index file that is missing, truncated or inconsistent.
    #[error("{}: {message}", path.display())]
    Index { path: PathBuf, message: String },

    #[error("weights import: {message}")]
    WeightsImport { message: String },

    /// An image whose header declares more pixels, frames or bytes than the decoder may
    /// produce; refused before decoding.
    #[error("{}: {message}", path.display())]
    ImageTooLarge { path: PathBuf, message: String },

    /// Decoding this image now would take the process's decoding in flight past its global
    /// budget (`imaging::set_decode_budget`); retrying later can succeed.
    #[error("{}: decoding needs about {needed} bytes and {in_flight} of the {capacity}-byte decoding budget are in use; try again shortly", path.display())]
    DecodeBudgetExhausted {
        path: PathBuf,
        needed: usize,
        in_flight: usize,
        capacity: usize,
    },

    /// A DICOM image of another modality where CT (Hounsfield units) is needed.
    // The server words it the same after the part's name (`web/src/error.rs`).
    #[error("{}: the DICOM modality is {modality}, not CT; only CT slices (Hounsfield units) can be searched or added", path.display())]
    NotCt { path: PathBuf, modality: String },

    /// A text query past the nesting or term limits, refused before it is parsed.
    #[error("text query too complex: {message}")]
    QueryTooComplex { message: String },

    /// Another process (or another writer in this one) holds the index's write lock.
    #[error("{}: another writer holds this index ({holder})", path.display())]
    Locked { path: PathBuf, holder: String },

    /// A lesion reference (argument `name`) that names no live lesion.
    #[error("{name}: no lesion {reference} in the index")]
    NoSuchLesion { name: String, reference: String },

    /// An external search backend (Milvus) that could not be reached, refused a request or
    /// does not hold what the published generation says it should.
    #[error("{backend} at {url}: {message}")]
    Backend {
        backend: String,
        url: String,
        message: String,
    },

    /// Lesions to add whose keys the index holds already.
    #[error("{} lesion(s) are already in the index: {} (delete them first to replace them)", keys.len(), keys.join(", "))]
    AlreadyInIndex { keys: Vec<String> },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid_argument(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            message: message.into(),
        }
    }
}

fn format_row_problems(path: &std::path::Path, line: u64, problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{line}: {p}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}
