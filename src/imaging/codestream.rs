//! The codestreams inside DICOM pixel data, checked against the DICOM header before any
//! decoder sees them.
//!
//! dicom-rs hands encapsulated fragments to jpeg-decoder, openjp2 or flate2, and each of
//! those allocates what its *own* header declares (a JPEG SOF, a JPEG 2000 SIZ, a deflate
//! stream's length) with no regard for Rows and Columns. A 15 KB file whose SOF says
//! 65000 x 65000 would abort the process. This module reads only those headers (pure byte
//! parsing: marker segments, boxes, RLE offset tables, deflate into a counting sink) and
//! refuses any codestream that does not describe exactly the image the DICOM header
//! declares, which `dicom_scan` has already held to the caller's limits. Refusing costs a
//! walk over the fragments and no buffer the size of the image.

use std::io::{Read, Write};

use super::dicom_summary::DicomSummary;

/// JPEG 2000 tile grids past this many tiles are refused: openjp2 keeps per-tile state, and
/// a 1x1 tile grid over a 512x512 image would be 262144 tiles. Real files use one tile or a
/// few dozen.
pub const MAX_J2K_TILES: u64 = 4096;

/// A JP2 wrapper (boxes before the codestream) longer than this is refused; DICOM wants the
/// raw codestream, and the SIZ must sit near the start of a frame's data.
const MAX_J2K_HEADER_SEARCH: usize = 64 << 10;

/// A deflated frame may inflate to its declared size plus this much (DICOM pads odd
/// lengths to even; some writers add a little more).
const DEFLATE_SLACK: u64 = 64;

/// How the pixel data of a transfer syntax is decoded, for the syntaxes we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Native (uncompressed) pixel data, the dataset possibly deflated as a whole.
    Native,
    /// Encapsulated uncompressed fragments (1.2.840.10008.1.2.1.98).
    EncapsulatedUncompressed,
    Rle,
    /// JPEG baseline, extended, lossless (processes 1, 2 & 4, 14).
    Jpeg,
    /// JPEG 2000 and High-Throughput JPEG 2000 (both decoded by openjp2).
    Jpeg2000,
    /// Each frame deflated on its own (1.2.840.10008.1.2.8.1).
    DeflatedFrame,
}

/// The codec of a transfer syntax we decode, or why it is refused (naming the syntax).
pub fn codec_of(uid: &str) -> Result<Codec, String> {
    let uid = uid.trim_end_matches(['\0', ' ']);
    let codec = match uid {
        // No meta group: dicom-rs reads the dataset as implicit little endian.
        "" | "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2" => Codec::Native,
        // The deflated dataset is inflated by the scan under `max_inflated_bytes`.
        "1.2.840.10008.1.2.1.99" => Codec::Native,
        "1.2.840.10008.1.2.1.98" => Codec::EncapsulatedUncompressed,
        "1.2.840.10008.1.2.5" => Codec::Rle,
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => Codec::Jpeg,
        "1.2.840.10008.1.2.4.90"
        | "1.2.840.10008.1.2.4.91"
        | "1.2.840.10008.1.2.4.92"
        | "1.2.840.10008.1.2.4.93"
        | "1.2.840.10008.1.2.4.201"
        | "1.2.840.10008.1.2.4.202"
        | "1.2.840.10008.1.2.4.203" => Codec::Jpeg2000,
        "1.2.840.10008.1.2.8.1" => Codec::DeflatedFrame,
        _ => {
            let why = match uid {
                "1.2.840.10008.1.2.4.94"
                | "1.2.840.10008.1.2.4.95"
                | "1.2.840.10008.1.2.4.204"
                | "1.2.840.10008.1.2.4.205" => {
                    "a JPIP referenced syntax: the file carries a URL to the pixels, not the pixels"
                }
                "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => {
                    "JPEG-LS, which this build cannot decode"
                }
                "1.2.840.10008.1.2.4.110"
                | "1.2.840.10008.1.2.4.111"
                | "1.2.840.10008.1.2.4.112" => "JPEG XL, which this build cannot decode",
                u if u.starts_with("1.2.840.10008.1.2.4.10") => {
                    "video (MPEG-2, MPEG-4 or HEVC), not a slice"
                }
                u if u.starts_with("1.2.840.10008.1.2.7.") => "SMPTE ST 2110 video, not a slice",
                u if u.starts_with("1.2.840.10008.1.2.4.") => {
                    "a JPEG process this build cannot decode"
                }
                _ => "not a transfer syntax this build can decode",
            };
            return Err(format!("transfer syntax {uid} is refused: {why}"));
        }
    };
    Ok(codec)
}

/// What the DICOM header declares, with defaults where an attribute is absent.
#[derive(Debug, Clone, Copy)]
struct Declared {
    rows: u64,
    columns: u64,
    frames: u64,
    samples: u64,
    bits_allocated: u64,
}

impl Declared {
    fn of(summary: &DicomSummary) -> Self {
        Declared {
            rows: u64::from(summary.rows),
            columns: u64::from(summary.columns),
            frames: u64::from(summary.frames.max(1)),
            samples: u64::from(summary.samples_per_pixel.max(1)),
            bits_allocated: u64::from(summary.bits_allocated.max(1)),
        }
    }

    fn frame_bytes(&self) -> u64 {
        self.rows * self.columns * self.samples * self.bits_allocated.div_ceil(8)
    }
}

/// Checks the pixel data of a scanned file against its header. `bytes` is what the scan
/// walked (the file, or its inflated dataset), which the fragment ranges index.
pub fn check_pixel_data(summary: &DicomSummary, bytes: &[u8]) -> Result<(), String> {
    let codec = codec_of(&summary.transfer_syntax)?;
    let declared = Declared::of(summary);
    let Some(encapsulated) = &summary.encapsulated else {
        return match codec {
            Codec::Native => Ok(()),
            // No pixel data at all is reported by the decoder by name; native pixel data
            // under a compressed syntax would be read as a codestream: refuse it here.
            _ if !summary.has_pixel_data => Ok(()),
            _ => Err(format!(
                "transfer syntax {} needs encapsulated pixel data, the file holds native pixel data",
                summary.transfer_syntax
            )),
        };
    };
    let fragments: Vec<&[u8]> = encapsulated
        .fragments
        .iter()
        .map(|range| bytes.get(range.clone()).unwrap_or_default())
        .collect();
    match codec {
        Codec::Native => Err(format!(
            "encapsulated pixel data under the native transfer syntax {}",
            display_uid(&summary.transfer_syntax)
        )),
        Codec::EncapsulatedUncompressed => Ok(()),
        Codec::Rle => check_rle_fragments(&fragments, summary),
        Codec::Jpeg => check_jpeg(&fragments.concat(), &declared, false),
        Codec::Jpeg2000 => check_j2k_frames(&fragments, &encapsulated.offset_table, &declared),
        Codec::DeflatedFrame => check_deflated_frames(&fragments, &declared),
    }
}

fn display_uid(uid: &str) -> &str {
    if uid.is_empty() {
        "(none: implicit little endian)"
    } else {
        uid
    }
}

// ---------------------------------------------------------------------------------------
// JPEG (ITU T.81) and JPEG-LS (T.87) marker segments.

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DNL: u8 = 0xDC;
const SOF55: u8 = 0xF7;

/// A JPEG stream's frame header as a start-of-frame segment declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegFrame {
    pub marker: u8,
    pub precision: u8,
    pub height: u16,
    pub width: u16,
    pub components: u8,
}

/// Why a JPEG stream is refused from its marker segments alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegProblem {
    NoSoi,
    /// A hierarchical (differential) frame, DHP or EXP: neither decoder handles them.
    Hierarchical(u8),
    /// Height 0 in the SOF, or a DNL segment: the height would come after the data.
    HeightLater,
    /// A frame header that is too short or inconsistent with its own length.
    BadFrameHeader,
    /// A second SOI before the stream's EOI.
    NestedSoi,
    /// A later SOF that declares another frame than the first.
    FramesDisagree(JpegFrame, JpegFrame),
    /// A JPEG-LS frame (SOF55) where plain JPEG is expected, or the reverse.
    WrongFamily(u8),
    /// More scans than [`MAX_JPEG_SCANS`]: each makes the decoder pass over the whole image.
    TooManyScans,
}

/// Scans one JPEG stream may hold. A progressive encoder writes about ten per component
/// (libjpeg's default script: 10 for YCbCr), a lossless one one; zune-jpeg refuses past 100.
/// Found by attack: 9,000 scans of an honest 4096 x 4096 frame held a heavy slot for
/// minutes, since jpeg-decoder has no such limit.
pub const MAX_JPEG_SCANS: usize = 100;

impl std::fmt::Display for JpegProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JpegProblem::NoSoi => write!(f, "does not start with an SOI marker"),
            JpegProblem::Hierarchical(m) => {
                write!(f, "is hierarchical JPEG (marker FF{m:02X}), which is refused")
            }
            JpegProblem::HeightLater => write!(
                f,
                "declares its height after the data (height 0 or a DNL marker), which is refused"
            ),
            JpegProblem::BadFrameHeader => write!(f, "has a malformed start-of-frame segment"),
            JpegProblem::TooManyScans => {
                write!(f, "holds more than {MAX_JPEG_SCANS} scans, which is refused")
            }
            JpegProblem::NestedSoi => write!(f, "has a second SOI marker before its EOI"),
            JpegProblem::FramesDisagree(a, b) => write!(
                f,
                "declares {}x{} pixels ({} components) in one SOF and {}x{} ({} components) in a later one",
                a.width, a.height, a.components, b.width, b.height, b.components
            ),
            JpegProblem::WrongFamily(m) => write!(
                f,
                "holds a start-of-frame marker FF{m:02X} of another codec family than its transfer syntax"
            ),
        }
    }
}

/// Whether a marker stands alone (no length field follows it).
fn standalone(marker: u8) -> bool {
    matches!(marker, 0x01 | 0xD0..=0xD9)
}

fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

fn is_hierarchical(marker: u8) -> bool {
    matches!(marker, 0xC5..=0xC7 | 0xCD..=0xCF | 0xDE | 0xDF)
}

/// Finds the next marker at or after `at` the way jpeg-decoder does between segments and
/// at the end of entropy-coded data: skip to an FF, skip fill FFs, and take the next byte
/// unless it is 00 (a stuffed data byte). Restart markers are returned too; callers skip
/// them. Returns the marker and the position after it.
fn next_marker(data: &[u8], mut at: usize) -> Option<(u8, usize)> {
    loop {
        at += data.get(at..)?.iter().position(|&b| b == 0xFF)?;
        at += 1;
        while *data.get(at)? == 0xFF {
            at += 1;
        }
        let marker = data[at];
        at += 1;
        if marker != 0x00 {
            return Some((marker, at));
        }
    }
}

/// Walks one JPEG (or JPEG-LS when `ls`) stream from `start`: every marker segment by its
/// length, entropy-coded data skipped to the next real marker, until EOI or the end of the
/// data. Returns every start-of-frame it declares (all equal to the first) and where the
/// stream ends. A stream cut short ends at the end of the data: the decoder will fail on it,
/// without allocating past what its frame header declared.
pub fn walk_jpeg_stream(
    data: &[u8],
    start: usize,
    ls: bool,
) -> Result<(Option<JpegFrame>, usize), JpegProblem> {
    // jpeg-decoder skips bytes before the first marker; that marker must be SOI.
    let mut at = match next_marker(data, start) {
        Some((SOI, after)) => after,
        _ => return Err(JpegProblem::NoSoi),
    };
    let mut frame: Option<JpegFrame> = None;
    let mut scans = 0usize;
    while let Some((marker, after)) = next_marker(data, at) {
        at = after;
        if marker == EOI {
            return Ok((frame, at));
        }
        if marker == SOS {
            scans += 1;
            if scans > MAX_JPEG_SCANS {
                return Err(JpegProblem::TooManyScans);
            }
        }
        if marker == SOI {
            return Err(JpegProblem::NestedSoi);
        }
        if standalone(marker) {
            continue;
        }
        if is_hierarchical(marker) {
            return Err(JpegProblem::Hierarchical(marker));
        }
        if marker == DNL {
            return Err(JpegProblem::HeightLater);
        }
        let Some(length) = data
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            break;
        };
        if length < 2 {
            // jpeg-decoder refuses such a length; nothing it could allocate follows.
            break;
        }
        let segment = data.get(at + 2..at + length);
        let sof_here = if ls { marker == SOF55 } else { is_sof(marker) };
        if sof_here {
            let Some(segment) = segment else {
                return Err(JpegProblem::BadFrameHeader);
            };
            let this = frame_header(marker, segment)?;
            if this.height == 0 {
                return Err(JpegProblem::HeightLater);
            }
            match frame {
                Some(first) if !same_frame(&first, &this) => {
                    return Err(JpegProblem::FramesDisagree(first, this));
                }
                Some(_) => {}
                None => frame = Some(this),
            }
        } else if is_sof(marker) || marker == SOF55 {
            return Err(JpegProblem::WrongFamily(marker));
        }
        if segment.is_none() {
            // Truncated inside a segment: the decoder stops here too.
            return Ok((frame, data.len()));
        }
        // After SOS, entropy-coded data follows; the next `next_marker` skips it (FF00
        // stuffing and restart markers included).
        at += length;
    }
    Ok((frame, data.len()))
}

fn same_frame(a: &JpegFrame, b: &JpegFrame) -> bool {
    (a.width, a.height, a.components, a.precision) == (b.width, b.height, b.components, b.precision)
}

fn frame_header(marker: u8, segment: &[u8]) -> Result<JpegFrame, JpegProblem> {
    if segment.len() < 6 {
        return Err(JpegProblem::BadFrameHeader);
    }
    let frame = JpegFrame {
        marker,
        precision: segment[0],
        height: u16::from_be_bytes([segment[1], segment[2]]),
        width: u16::from_be_bytes([segment[3], segment[4]]),
        components: segment[5],
    };
    if frame.components == 0 || segment.len() < 6 + 3 * usize::from(frame.components) {
        return Err(JpegProblem::BadFrameHeader);
    }
    Ok(frame)
}

/// Every JPEG stream of the concatenated fragments, found the way dicom-rs 0.10 does (the
/// first from the start, each next one at the next FF D8 after the previous EOI), checked
/// against the header: width x height = Columns x Rows, components = samples per pixel,
/// precision <= bits allocated, no more streams than frames.
fn check_jpeg(data: &[u8], declared: &Declared, ls: bool) -> Result<(), String> {
    let mut start = 0usize;
    let mut index = 0u64;
    loop {
        let (frame, end) =
            walk_jpeg_stream(data, start, ls).map_err(|p| format!("JPEG frame {index} {p}"))?;
        let Some(frame) = frame else {
            return Err(format!("JPEG frame {index} has no start-of-frame segment"));
        };
        check_jpeg_frame(&frame, declared, index)?;
        index += 1;
        // The next stream: dicom-rs looks for FF D8 byte by byte after the last one.
        let Some(next) = data
            .get(end..)
            .and_then(|rest| rest.windows(2).position(|w| w == [0xFF, SOI]))
        else {
            return Ok(());
        };
        if index >= declared.frames {
            return Err(format!(
                "the pixel data holds more than the {} JPEG frame(s) the DICOM header declares",
                declared.frames
            ));
        }
        start = end + next;
    }
}

fn check_jpeg_frame(frame: &JpegFrame, declared: &Declared, index: u64) -> Result<(), String> {
    if (u64::from(frame.width), u64::from(frame.height)) != (declared.columns, declared.rows) {
        return Err(format!(
            "JPEG frame {index} declares {}x{} pixels, the DICOM header {}x{}",
            frame.width, frame.height, declared.columns, declared.rows
        ));
    }
    if u64::from(frame.components) != declared.samples {
        return Err(format!(
            "JPEG frame {index} declares {} components, the DICOM header {} samples per pixel",
            frame.components, declared.samples
        ));
    }
    if u64::from(frame.precision) > declared.bits_allocated {
        return Err(format!(
            "JPEG frame {index} declares {}-bit samples, the DICOM header allocates {} bits",
            frame.precision, declared.bits_allocated
        ));
    }
    Ok(())
}

/// Every start-of-frame of a plain JPEG file (the upload path of 8-bit images): the first
/// stream only, since image decoders read no further. All SOFs must agree.
pub fn jpeg_file_frame(bytes: &[u8]) -> Result<Option<JpegFrame>, JpegProblem> {
    walk_jpeg_stream(bytes, 0, false).map(|(frame, _)| frame)
}

// ---------------------------------------------------------------------------------------
// JPEG 2000 (ITU T.800) and HTJ2K (T.814): the SIZ of the main header.

const J2K_SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
const JP2_SIGNATURE: [u8; 12] = [
    0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A,
];

/// The image a JPEG 2000 main header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct J2kSize {
    pub width: u64,
    pub height: u64,
    pub tiles: u64,
    /// Per component: precision in bits and subsampling (x, y).
    pub components: Vec<(u8, u8, u8)>,
}

fn be32(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 4)
        .map(|v| u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]])))
}

fn be16(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 2)
        .map(|v| u64::from(u16::from_be_bytes([v[0], v[1]])))
}

/// The codestream inside a JP2 wrapper (the `jp2c` box), or the data itself.
fn j2k_codestream(data: &[u8]) -> Result<&[u8], String> {
    if !data.starts_with(&JP2_SIGNATURE) {
        return Ok(data);
    }
    let mut at = 0usize;
    // Every step is checked: a box whose 64-bit length points past the end (or wraps) ends
    // the walk instead of wrapping `at` round to the start.
    while let Some(box_end) = at.checked_add(8).filter(|&end| end <= data.len()) {
        let short = be32(data, at).unwrap_or(0);
        let kind = &data[at + 4..box_end];
        let (header, length) = match short {
            0 => (8, (data.len() - at) as u64),
            1 => (
                16,
                be32(data, at + 8).unwrap_or(0) << 32 | be32(data, at + 12).unwrap_or(0),
            ),
            n => (8, n),
        };
        if kind == b"jp2c" {
            return Ok(&data[at.saturating_add(header).min(data.len())..]);
        }
        if length < header as u64 {
            break;
        }
        match usize::try_from(length).ok().and_then(|l| at.checked_add(l)) {
            Some(next) if next > at => at = next,
            _ => break,
        }
    }
    Err("its JP2 wrapper holds no codestream box (jp2c) near the start".into())
}

/// Reads the SIZ segment that must follow SOC.
pub fn j2k_size(data: &[u8]) -> Result<J2kSize, String> {
    let data = j2k_codestream(data)?;
    if !data.starts_with(&J2K_SOC_SIZ) {
        return Err("does not start with SOC and SIZ markers".into());
    }
    let s = &data[4..];
    let field = |at: usize| be32(s, at).ok_or_else(|| "its SIZ segment is truncated".to_string());
    let lsiz = be16(s, 0).ok_or("its SIZ segment is truncated")? as usize;
    let (xsiz, ysiz, xo, yo) = (field(4)?, field(8)?, field(12)?, field(16)?);
    let (xt, yt, xto, yto) = (field(20)?, field(24)?, field(28)?, field(32)?);
    let csiz = be16(s, 36).ok_or("its SIZ segment is truncated")? as usize;
    if csiz == 0 || lsiz != 38 + 3 * csiz || s.len() < lsiz {
        return Err(format!(
            "its SIZ segment is malformed ({csiz} components in {lsiz} bytes)"
        ));
    }
    if xsiz <= xo || ysiz <= yo {
        return Err(format!(
            "its SIZ declares an empty image (Xsiz {xsiz}, XOsiz {xo}, Ysiz {ysiz}, YOsiz {yo})"
        ));
    }
    if xt == 0 || yt == 0 || xto > xo || yto > yo || xto + xt <= xo || yto + yt <= yo {
        return Err(format!(
            "its SIZ declares an impossible tile grid ({xt}x{yt} tiles at {xto},{yto})"
        ));
    }
    // Each factor fits 32 bits, their product may not.
    let tiles = (xsiz - xto)
        .div_ceil(xt)
        .saturating_mul((ysiz - yto).div_ceil(yt));
    let components = (0..csiz)
        .map(|c| {
            let at = 38 + 3 * c;
            ((s[at] & 0x7F) + 1, s[at + 1], s[at + 2])
        })
        .collect();
    Ok(J2kSize {
        width: xsiz - xo,
        height: ysiz - yo,
        tiles,
        components,
    })
}

fn check_j2k(data: &[u8], declared: &Declared, index: usize) -> Result<(), String> {
    let head = &data[..data.len().min(MAX_J2K_HEADER_SEARCH)];
    let size = j2k_size(head).map_err(|m| format!("JPEG 2000 frame {index} {m}"))?;
    if (size.width, size.height) != (declared.columns, declared.rows) {
        return Err(format!(
            "JPEG 2000 frame {index} declares {}x{} pixels, the DICOM header {}x{}",
            size.width, size.height, declared.columns, declared.rows
        ));
    }
    if size.components.len() as u64 != declared.samples {
        return Err(format!(
            "JPEG 2000 frame {index} declares {} components, the DICOM header {} samples per pixel",
            size.components.len(),
            declared.samples
        ));
    }
    for (c, &(bits, dx, dy)) in size.components.iter().enumerate() {
        if u64::from(bits) > declared.bits_allocated {
            return Err(format!(
                "JPEG 2000 frame {index} component {c} declares {bits}-bit samples, the DICOM header allocates {} bits",
                declared.bits_allocated
            ));
        }
        if (dx, dy) != (1, 1) {
            return Err(format!(
                "JPEG 2000 frame {index} component {c} is subsampled {dx}x{dy}, which is refused"
            ));
        }
    }
    if size.tiles > MAX_J2K_TILES {
        return Err(format!(
            "JPEG 2000 frame {index} declares {} tiles, more than the {MAX_J2K_TILES} allowed",
            size.tiles
        ));
    }
    Ok(())
}

/// The first fragment of each frame as dicom-rs 0.10 picks it (`frame_pixel_data`): one
/// fragment per frame when the counts match, else by the basic offset table (frame 0 from
/// the first fragment when the table is empty).
fn frame_starts(fragment_lengths: &[usize], offset_table: &[u32], frames: u64) -> Vec<usize> {
    if fragment_lengths.len() as u64 == frames {
        return (0..fragment_lengths.len()).collect();
    }
    let mut positions = Vec::with_capacity(fragment_lengths.len());
    let mut offset = 0usize;
    for length in fragment_lengths {
        positions.push(offset);
        offset = offset.saturating_add(length + 8);
    }
    let mut starts = vec![0];
    for &base in offset_table.iter().skip(1).take(frames as usize) {
        if let Some(i) = positions.iter().position(|&p| p >= base as usize) {
            starts.push(i);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

fn check_j2k_frames(
    fragments: &[&[u8]],
    offset_table: &[u32],
    declared: &Declared,
) -> Result<(), String> {
    if fragments.is_empty() {
        return Err("JPEG 2000 pixel data holds no fragment".into());
    }
    let lengths: Vec<usize> = fragments.iter().map(|f| f.len()).collect();
    let starts = frame_starts(&lengths, offset_table, declared.frames);
    let opens = |f: &[u8]| f.starts_with(&J2K_SOC_SIZ[..2]) || f.starts_with(&JP2_SIGNATURE);
    // More codestreams than frames is a lie, and refusing it first bounds the headers read
    // below by the frame count (found in review: 250,000 tiny fragments each opening a
    // codestream made the header joins quadratic).
    let opening = fragments.iter().filter(|f| opens(f)).count() as u64;
    if opening > declared.frames.max(1) {
        return Err(format!(
            "JPEG 2000 pixel data opens {opening} codestreams, the DICOM header declares {} frame(s)",
            declared.frames.max(1)
        ));
    }
    for (i, fragment) in fragments.iter().enumerate() {
        // Frame starts, and any other fragment that opens a codestream (openjp2 would decode
        // it were the offset table to point at it).
        if !(starts.binary_search(&i).is_ok() || opens(fragment)) {
            continue;
        }
        // A header split over fragments is read across them, as dicom-rs joins them.
        let joined;
        let data: &[u8] = if fragment.len() >= 4096 || i + 1 == fragments.len() {
            fragment
        } else {
            let mut head = Vec::new();
            for f in &fragments[i..] {
                head.extend_from_slice(f);
                if head.len() >= MAX_J2K_HEADER_SEARCH {
                    break;
                }
            }
            joined = head;
            &joined
        };
        check_j2k(data, declared, i)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RLE (PS3.5 Annex G).

/// Checks RLE fragments the way dicom-rs 0.10 will read them, so that a corrupt one is an
/// error here instead of a panic there (its decoder indexes past a segment that decodes
/// short, and past a header that declares more offsets than the fragment holds). Only the
/// lengths are computed; nothing the size of the image is allocated.
fn check_rle_fragments(fragments: &[&[u8]], summary: &DicomSummary) -> Result<(), String> {
    let samples = summary.samples_per_pixel.max(1) as usize;
    let bytes_per_sample = (summary.bits_allocated.max(8) as usize).div_ceil(8);
    let needed_segments = samples * bytes_per_sample;
    let pixels = summary.rows as usize * summary.columns as usize;
    if fragments.len() as u64 > u64::from(summary.frames.max(1)) {
        return Err(format!(
            "RLE pixel data holds {} fragments, the DICOM header {} frame(s)",
            fragments.len(),
            summary.frames.max(1)
        ));
    }
    for (frame, fragment) in fragments.iter().enumerate() {
        let bad = |what: String| format!("RLE frame {frame}: {what}");
        if fragment.len() < 64 {
            return Err(bad(format!(
                "{} bytes, shorter than the 64-byte header",
                fragment.len()
            )));
        }
        let word = |i: usize| {
            u32::from_le_bytes([
                fragment[i * 4],
                fragment[i * 4 + 1],
                fragment[i * 4 + 2],
                fragment[i * 4 + 3],
            ]) as usize
        };
        let count = word(0);
        if !(needed_segments..=15).contains(&count) {
            return Err(bad(format!(
                "{count} segments, {needed_segments} needed (at most 15)"
            )));
        }
        let mut bounds: Vec<usize> = (1..=count).map(word).collect();
        bounds.push(fragment.len());
        if bounds.windows(2).any(|w| w[0] > w[1]) || bounds[0] < 64 {
            return Err(bad(
                "segment offsets out of order or past the fragment".into()
            ));
        }
        for (segment, range) in bounds.windows(2).take(needed_segments).enumerate() {
            let decoded = packbits_length(&fragment[range[0]..range[1]]);
            if decoded < pixels {
                return Err(bad(format!(
                    "segment {segment} decodes to {decoded} bytes, {pixels} needed (truncated)"
                )));
            }
        }
    }
    Ok(())
}

/// How many bytes a PackBits run decodes to (a literal run cut short counts what is there).
fn packbits_length(segment: &[u8]) -> usize {
    let (mut at, mut total) = (0, 0usize);
    while at < segment.len() {
        let header = segment[at] as i8;
        at += 1;
        match header {
            0..=127 => {
                let run = header as usize + 1;
                total += run.min(segment.len() - at);
                at += run;
            }
            -127..=-1 => {
                if at < segment.len() {
                    total += (1 - header as isize) as usize;
                }
                at += 1;
            }
            _ => {}
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// Deflate.

/// A sink that counts bytes and fails once past its ceiling: inflating into it costs an
/// 8 KB copy buffer, never the output.
struct Ceiling {
    written: u64,
    ceiling: u64,
}

impl Write for Ceiling {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.ceiling {
            return Err(std::io::Error::other("past the ceiling"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many bytes raw-deflate `data` inflates to, refusing past `ceiling` (`Ok(None)`).
pub fn inflated_length(data: &[u8], ceiling: u64) -> Result<Option<u64>, String> {
    let mut sink = Ceiling {
        written: 0,
        ceiling,
    };
    let mut decoder = flate2::read::DeflateDecoder::new(data);
    let mut buffer = [0u8; 8192];
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(0) => return Ok(Some(sink.written)),
            Ok(n) => n,
            Err(e) => return Err(format!("cannot be inflated: {e}")),
        };
        if sink.write_all(&buffer[..n]).is_err() {
            return Ok(None);
        }
    }
}

/// Deflated Image Frame Compression: one fragment per frame, each inflating to at most the
/// frame the header declares (dicom-rs inflates every fragment with no ceiling).
fn check_deflated_frames(fragments: &[&[u8]], declared: &Declared) -> Result<(), String> {
    if fragments.len() as u64 > declared.frames {
        return Err(format!(
            "deflated pixel data holds {} fragments, the DICOM header {} frame(s)",
            fragments.len(),
            declared.frames
        ));
    }
    let frame_bytes = declared.frame_bytes();
    for (i, fragment) in fragments.iter().enumerate() {
        match inflated_length(fragment, frame_bytes + DEFLATE_SLACK)
            .map_err(|m| format!("deflated frame {i} {m}"))?
        {
            Some(_) => {}
            None => {
                return Err(format!(
                    "deflated frame {i} inflates past the {frame_bytes} bytes the DICOM header declares ({}x{} pixels x {} samples x {} bits)",
                    declared.columns, declared.rows, declared.samples, declared.bits_allocated
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_of_more_scans_than_any_encoder_writes_is_refused() {
        let stream = |scans: usize| {
            let mut data = vec![0xFF, 0xD8];
            data.extend(sof(0xC2, 16, 16));
            for _ in 0..scans {
                data.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 7, 7]);
            }
            data.extend_from_slice(&[0xFF, 0xD9]);
            data
        };
        assert!(walk_jpeg_stream(&stream(MAX_JPEG_SCANS), 0, false).is_ok());
        assert!(matches!(
            walk_jpeg_stream(&stream(MAX_JPEG_SCANS + 1), 0, false),
            Err(JpegProblem::TooManyScans)
        ));
    }

    #[test]
    fn a_jp2_box_whose_length_wraps_ends_the_walk() {
        // Found in review: an XLBox near 2^64 once saturated the offset, which then wrapped
        // in `at + 8` and walked the same bytes for ever.
        for extended in [u64::MAX, u64::MAX - 15, 1 << 63] {
            let mut data = JP2_SIGNATURE.to_vec();
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(b"junk");
            data.extend_from_slice(&extended.to_be_bytes());
            data.extend_from_slice(&[0; 32]);
            assert!(j2k_codestream(&data).is_err(), "XLBox {extended:#x}");
        }
    }

    fn sof(marker: u8, width: u16, height: u16) -> Vec<u8> {
        let mut out = vec![0xFF, marker, 0, 11, 8];
        out.extend_from_slice(&height.to_be_bytes());
        out.extend_from_slice(&width.to_be_bytes());
        out.extend_from_slice(&[1, 1, 0x11, 0]);
        out
    }

    #[test]
    fn walks_segments_and_entropy_data() {
        let mut data = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0xFF, 0xC0];
        data.extend(sof(0xC3, 128, 64));
        // SOS, then data holding stuffed bytes and a restart marker.
        data.extend_from_slice(&[0xFF, 0xDA, 0, 2, 1, 2, 0xFF, 0x00, 3, 0xFF, 0xD3, 4]);
        data.extend_from_slice(&[0xFF, 0xD9]);
        let (frame, end) = walk_jpeg_stream(&data, 0, false).unwrap();
        let frame = frame.unwrap();
        assert_eq!((frame.width, frame.height, frame.marker), (128, 64, 0xC3));
        assert_eq!(end, data.len());
    }

    #[test]
    fn refuses_a_later_frame_that_differs() {
        let mut data = vec![0xFF, 0xD8];
        data.extend(sof(0xC0, 128, 128));
        data.extend_from_slice(&[0xFF, 0xDA, 0, 2, 9, 9]);
        data.extend(sof(0xC0, 65000, 65000));
        let problem = walk_jpeg_stream(&data, 0, false).unwrap_err();
        assert!(
            matches!(problem, JpegProblem::FramesDisagree(..)),
            "{problem}"
        );
    }

    #[test]
    fn refuses_hierarchical_and_dnl() {
        let mut data = vec![0xFF, 0xD8];
        data.extend(sof(0xC5, 8, 8));
        assert!(matches!(
            walk_jpeg_stream(&data, 0, false),
            Err(JpegProblem::Hierarchical(0xC5))
        ));
        let mut data = vec![0xFF, 0xD8];
        data.extend(sof(0xC1, 8, 0));
        assert_eq!(
            walk_jpeg_stream(&data, 0, false),
            Err(JpegProblem::HeightLater)
        );
    }

    #[test]
    fn counts_deflate_without_keeping_it() {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 1 << 20]).unwrap();
        let deflated = encoder.finish().unwrap();
        assert_eq!(inflated_length(&deflated, 1 << 21), Ok(Some(1 << 20)));
        assert_eq!(inflated_length(&deflated, 1000), Ok(None));
    }

    #[test]
    fn names_refused_syntaxes() {
        let message = codec_of("1.2.840.10008.1.2.4.94").unwrap_err();
        assert!(message.contains("1.2.840.10008.1.2.4.94") && message.contains("JPIP"));
        assert!(codec_of("1.2.840.10008.1.2.4.80")
            .unwrap_err()
            .contains("JPEG-LS"));
        assert_eq!(codec_of("1.2.840.10008.1.2.4.70\0"), Ok(Codec::Jpeg));
    }
}
