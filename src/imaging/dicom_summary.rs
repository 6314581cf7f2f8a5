//! What the bounded scan of a DICOM file learnt before any pixel is decoded: the plain
//! facts that the codestream checks and the decoder are held to.

/// What the scan learnt of the image before any pixel was decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DicomSummary {
    pub rows: u32,
    pub columns: u32,
    pub frames: u32,
    pub samples_per_pixel: u32,
    pub bits_allocated: u32,
    pub bits_stored: u32,
    pub modality: Option<String>,
    pub transfer_syntax: String,
    /// Whether the dataset has top-level pixel data.
    pub has_pixel_data: bool,
    /// The fragments of encapsulated pixel data (ranges of the bytes scanned).
    pub encapsulated: Option<Encapsulated>,
    /// Element headers read, items and fragments included.
    pub elements: usize,
}

/// The encapsulated pixel data as the scan found it: the basic offset table and the
/// fragments, as ranges of the file's bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encapsulated {
    pub offset_table: Vec<u32>,
    pub fragments: Vec<std::ops::Range<usize>>,
}
