//! A bounded pre-scan of a DICOM file, run before dicom-rs sees it.
//!
//! dicom-rs trusts declared element lengths (it allocates what a header says), builds nested
//! sequences recursively and decodes pixel data of any declared size. A hostile or corrupt
//! upload could exhaust memory or the stack that way. This walk reads only the element
//! headers: every defined length must fit in the bytes that are there, sequences may nest
//! only so deep, a deflated dataset is inflated under a ceiling, and the image geometry
//! (rows x columns x frames x samples x bits) is checked against the caller's limits, all
//! before anything the size of the image is allocated.

use std::io::Read;

use super::codestream;
pub use super::dicom_summary::DicomSummary;
use super::dicom_summary::Encapsulated;
use super::DecodeLimits;

/// Sequences nested deeper than this are refused (real CT files stay under 6).
pub const MAX_SEQUENCE_DEPTH: usize = 16;

/// Files with more element headers than this (items and fragments included) are refused:
/// dicom-rs keeps about 200 bytes per element in memory, so 4 million empty elements cost
/// 850 MB. A CT slice has a few hundred to a few thousand; an enhanced multi-frame CT with
/// per-frame functional groups has about 50 per frame, so 250,000 admits 4096 frames (the
/// default frame limit) with room to spare, and bounds dicom-rs's object to about 50 MB.
pub const MAX_ELEMENTS: usize = 250_000;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanProblem {
    /// The structure is broken: a length past the end, a missing delimiter, nesting too deep.
    Malformed(String),
    /// The declared image is larger than the limits allow.
    TooLarge(String),
    /// The pixel data's codestream declares another image than the DICOM header, or its
    /// transfer syntax is one we do not decode.
    Codestream(String),
}

#[derive(Clone, Copy)]
struct Syntax {
    explicit: bool,
    big_endian: bool,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    syntax: Syntax,
    limits: DecodeLimits,
    elements: usize,
}

fn malformed(message: impl Into<String>) -> ScanProblem {
    ScanProblem::Malformed(message.into())
}

/// VRs whose length field is 2 bytes in explicit syntaxes (PS3.5 7.1.2). Every other VR,
/// an unknown one included, has 2 reserved bytes and a 4-byte length: dicom-rs reads an
/// unknown VR as UN that way, and the scan must read each header exactly as it will.
fn short_length(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// Whether dicom-rs knows this VR (an unknown one is read as UN).
fn known_vr(vr: &[u8; 2]) -> bool {
    short_length(vr)
        || matches!(
            vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        )
}

struct Header {
    tag: (u16, u16),
    vr: Option<[u8; 2]>,
    length: u32,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanProblem> {
        if n > self.remaining() {
            return Err(malformed(format!(
                "truncated: {n} bytes needed at offset {}, {} left",
                self.at,
                self.remaining()
            )));
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, ScanProblem> {
        let b = self.take(2)?;
        Ok(if self.syntax.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    }

    fn u32(&mut self) -> Result<u32, ScanProblem> {
        let b = self.take(4)?;
        Ok(if self.syntax.big_endian {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    fn header(&mut self) -> Result<Header, ScanProblem> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(ScanProblem::TooLarge(format!(
                "more than {MAX_ELEMENTS} elements (real CT files have a few thousand)"
            )));
        }
        let tag = (self.u16()?, self.u16()?);
        // Item and delimiter tags never carry a VR, whatever the syntax.
        if tag.0 == 0xFFFE || !self.syntax.explicit {
            return Ok(Header {
                tag,
                vr: None,
                length: self.u32()?,
            });
        }
        let vr_bytes = self.take(2)?;
        let mut vr = [vr_bytes[0], vr_bytes[1]];
        if !known_vr(&vr) {
            vr = *b"UN";
        }
        let length = if short_length(&vr) {
            u32::from(self.u16()?)
        } else {
            self.take(2)?;
            self.u32()?
        };
        Ok(Header {
            tag,
            vr: Some(vr),
            length,
        })
    }

    fn value(&mut self, header: &Header) -> Result<&'a [u8], ScanProblem> {
        let length = header.length as usize;
        if length > self.remaining() {
            return Err(malformed(format!(
                "element ({:04X},{:04X}) declares {length} bytes at offset {}, only {} are there (truncated or corrupt)",
                header.tag.0,
                header.tag.1,
                self.at,
                self.remaining()
            )));
        }
        self.take(length)
    }
}

fn text_of(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .trim()
        .to_string()
}

/// The first value of a US element, as dicom-rs reads it (found by attack: Rows written
/// with two values read as 0 here and as the first value there, so an 8192 x 8192 image
/// passed a 4096 limit).
fn number_of(value: &[u8], syntax: Syntax) -> u32 {
    match value {
        [a, b, ..] if syntax.big_endian => u32::from(u16::from_be_bytes([*a, *b])),
        [a, b, ..] => u32::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    }
}

/// Walks a dataset (or one item's content) until its end or `end_tag`, recording the
/// top-level image attributes into `summary`.
fn walk(
    cursor: &mut Cursor<'_>,
    end: usize,
    depth: usize,
    summary: &mut DicomSummary,
    end_tag: Option<(u16, u16)>,
) -> Result<(), ScanProblem> {
    if depth > MAX_SEQUENCE_DEPTH {
        return Err(malformed(format!(
            "sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels"
        )));
    }
    while cursor.at < end {
        let header = cursor.header()?;
        if Some(header.tag) == end_tag {
            return Ok(());
        }
        if header.tag == ITEM || header.tag == ITEM_END || header.tag == SEQUENCE_END {
            return Err(malformed(format!(
                "unexpected item or delimiter (FFFE,{:04X}) at offset {}",
                header.tag.1,
                cursor.at - 8
            )));
        }
        if header.tag == PIXEL_DATA && depth == 0 {
            // The geometry precedes the pixels: judge the size before their length.
            check_geometry(summary, &cursor.limits)?;
        }
        let is_sequence =
            header.vr == Some(*b"SQ") || (header.length == UNDEFINED && header.tag != PIXEL_DATA);
        if header.tag == PIXEL_DATA && depth == 0 {
            summary.has_pixel_data = true;
        }
        if header.tag == PIXEL_DATA && header.length == UNDEFINED {
            let found = fragments(cursor)?;
            if depth == 0 {
                summary.encapsulated = Some(found);
            }
        } else if is_sequence {
            sequence(cursor, &header, depth)?;
        } else if header.length == UNDEFINED {
            return Err(malformed(
                "undefined length on a value that is not a sequence",
            ));
        } else {
            let value = cursor.value(&header)?;
            if depth == 0 {
                record(summary, header.tag, value, cursor.syntax);
            }
        }
    }
    if end_tag.is_some() {
        return Err(malformed(
            "a sequence or item has no delimiter (truncated file)",
        ));
    }
    if cursor.at > end {
        return Err(malformed("an element runs past the end of its item"));
    }
    Ok(())
}

fn sequence(cursor: &mut Cursor<'_>, header: &Header, depth: usize) -> Result<(), ScanProblem> {
    let defined_end = if header.length == UNDEFINED {
        None
    } else {
        if header.length as usize > cursor.remaining() {
            return Err(malformed(format!(
                "sequence ({:04X},{:04X}) declares {} bytes, only {} are there",
                header.tag.0,
                header.tag.1,
                header.length,
                cursor.remaining()
            )));
        }
        Some(cursor.at + header.length as usize)
    };
    // Items inside a sequence of unknown VR (UN, undefined length) are implicit little endian.
    let outer = cursor.syntax;
    if header.vr == Some(*b"UN") {
        cursor.syntax = Syntax {
            explicit: false,
            big_endian: false,
        };
    }
    let mut scratch = DicomSummary::default();
    loop {
        if defined_end.is_some_and(|end| cursor.at >= end) {
            break;
        }
        let item = cursor.header()?;
        if item.tag == SEQUENCE_END && defined_end.is_none() {
            break;
        }
        if item.tag != ITEM {
            return Err(malformed(format!(
                "sequence ({:04X},{:04X}) holds ({:04X},{:04X}) where an item belongs",
                header.tag.0, header.tag.1, item.tag.0, item.tag.1
            )));
        }
        if item.length == UNDEFINED {
            walk(cursor, usize::MAX, depth + 1, &mut scratch, Some(ITEM_END))?;
        } else {
            if item.length as usize > cursor.remaining() {
                return Err(malformed(format!(
                    "an item declares {} bytes at offset {}, only {} are there",
                    item.length,
                    cursor.at,
                    cursor.remaining()
                )));
            }
            let end = cursor.at + item.length as usize;
            walk(cursor, end, depth + 1, &mut scratch, None)?;
        }
    }
    cursor.syntax = outer;
    if let Some(end) = defined_end {
        if cursor.at != end {
            return Err(malformed("a sequence's items overrun its declared length"));
        }
    }
    Ok(())
}

/// Encapsulated pixel data: an offset table and fragments, each a defined-length item.
fn fragments(cursor: &mut Cursor<'_>) -> Result<Encapsulated, ScanProblem> {
    let mut found = Encapsulated::default();
    let mut first = true;
    loop {
        let item = cursor.header()?;
        if item.tag == SEQUENCE_END {
            return Ok(found);
        }
        if item.tag != ITEM || item.length == UNDEFINED {
            return Err(malformed(
                "encapsulated pixel data holds something other than fragments",
            ));
        }
        let start = cursor.at;
        let value = cursor.value(&item)?;
        if first {
            // The basic offset table: little-endian 32-bit offsets, always.
            found.offset_table = value
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            first = false;
        } else {
            found.fragments.push(start..start + value.len());
        }
    }
}

fn record(summary: &mut DicomSummary, tag: (u16, u16), value: &[u8], syntax: Syntax) {
    match tag {
        (0x0028, 0x0010) => summary.rows = number_of(value, syntax),
        (0x0028, 0x0011) => summary.columns = number_of(value, syntax),
        (0x0028, 0x0002) => summary.samples_per_pixel = number_of(value, syntax),
        (0x0028, 0x0100) => summary.bits_allocated = number_of(value, syntax),
        (0x0028, 0x0101) => summary.bits_stored = number_of(value, syntax),
        (0x0028, 0x0008) => summary.frames = text_of(value).parse().unwrap_or(0),
        (0x0008, 0x0060) => {
            let text = text_of(value);
            summary.modality = (!text.is_empty()).then_some(text);
        }
        _ => {}
    }
}

/// Scans `bytes` (a whole DICOM file) and checks the image it declares against `limits`.
pub fn scan(bytes: &[u8], limits: &DecodeLimits) -> Result<DicomSummary, ScanProblem> {
    let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        132
    } else {
        0
    };
    let mut summary = DicomSummary::default();
    let explicit_le = Syntax {
        explicit: true,
        big_endian: false,
    };
    // The file meta group: explicit little endian, group 0002 only.
    let mut cursor = Cursor {
        bytes,
        at: start,
        syntax: explicit_le,
        limits: *limits,
        elements: 0,
    };
    while cursor.remaining() >= 4 && bytes[cursor.at..cursor.at + 2] == [0x02, 0x00] {
        let header = cursor.header()?;
        let value = cursor.value(&header)?;
        if header.tag == (0x0002, 0x0010) {
            summary.transfer_syntax = text_of(value);
        }
    }
    let syntax = match summary.transfer_syntax.as_str() {
        IMPLICIT_LE => Syntax {
            explicit: false,
            big_endian: false,
        },
        EXPLICIT_BE => Syntax {
            explicit: true,
            big_endian: true,
        },
        // No meta group: dicom-rs reads such files as implicit little endian too.
        "" => Syntax {
            explicit: false,
            big_endian: false,
        },
        _ => explicit_le,
    };
    // A syntax we cannot decode (JPIP's URL, JPEG-LS, video...) is refused by name before
    // its dataset is read, let alone inflated.
    codestream::codec_of(&summary.transfer_syntax).map_err(ScanProblem::Codestream)?;
    if summary.transfer_syntax == DEFLATED {
        let inflated = inflate_bounded(&bytes[cursor.at..], limits.max_inflated_bytes)?;
        let mut inner = Cursor {
            bytes: &inflated,
            at: 0,
            syntax,
            limits: *limits,
            elements: cursor.elements,
        };
        walk(&mut inner, inflated.len(), 0, &mut summary, None)?;
        summary.elements = inner.elements;
        check_geometry(&summary, limits)?;
        codestream::check_pixel_data(&summary, &inflated).map_err(ScanProblem::Codestream)?;
    } else {
        cursor.syntax = syntax;
        walk(&mut cursor, bytes.len(), 0, &mut summary, None)?;
        summary.elements = cursor.elements;
        check_geometry(&summary, limits)?;
        codestream::check_pixel_data(&summary, bytes).map_err(ScanProblem::Codestream)?;
    }
    Ok(summary)
}

fn inflate_bounded(deflated: &[u8], ceiling: usize) -> Result<Vec<u8>, ScanProblem> {
    // Counted first into a sink, so a bomb is refused without a buffer; then inflated into
    // one of exactly its size (read_to_end's doubling would reserve up to twice that).
    let length = codestream::inflated_length(deflated, ceiling as u64)
        .map_err(|e| malformed(format!("the deflated dataset {e}")))?
        .ok_or_else(|| {
            ScanProblem::TooLarge(format!(
                "the deflated dataset inflates past {ceiling} bytes"
            ))
        })?;
    let mut inflated = Vec::with_capacity(length as usize + 1);
    flate2::read::DeflateDecoder::new(deflated)
        .take(ceiling as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| malformed(format!("the deflated dataset cannot be inflated: {e}")))?;
    if inflated.len() > ceiling {
        return Err(ScanProblem::TooLarge(format!(
            "the deflated dataset inflates past {ceiling} bytes"
        )));
    }
    Ok(inflated)
}

fn check_geometry(summary: &DicomSummary, limits: &DecodeLimits) -> Result<(), ScanProblem> {
    let (rows, columns) = (summary.rows as u64, summary.columns as u64);
    let frames = u64::from(summary.frames.max(1));
    let samples = u64::from(summary.samples_per_pixel.max(1));
    let bits = u64::from(summary.bits_allocated.max(8));
    let side = limits.max_side as u64;
    if rows > side || columns > side {
        return Err(ScanProblem::TooLarge(format!(
            "{columns}x{rows} pixels is larger than the {side}x{side} allowed"
        )));
    }
    if frames > u64::from(limits.max_frames) {
        return Err(ScanProblem::TooLarge(format!(
            "{frames} frames, more than the {} allowed",
            limits.max_frames
        )));
    }
    let decoded_bytes = rows * columns * frames * samples * bits.div_ceil(8);
    if decoded_bytes > limits.max_decoded_bytes as u64 {
        return Err(ScanProblem::TooLarge(format!(
            "{columns}x{rows} pixels x {frames} frames x {samples} samples x {bits} bits would decode to {decoded_bytes} bytes, more than the {} allowed",
            limits.max_decoded_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        if short_length(vr) {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn file(dataset: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend(element((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0"));
        out.extend_from_slice(dataset);
        out
    }

    fn image(rows: u16, columns: u16) -> Vec<u8> {
        let mut data = element((0x0008, 0x0060), b"CS", b"CT");
        data.extend(element((0x0028, 0x0010), b"US", &rows.to_le_bytes()));
        data.extend(element((0x0028, 0x0011), b"US", &columns.to_le_bytes()));
        data.extend(element((0x0028, 0x0100), b"US", &16u16.to_le_bytes()));
        data
    }

    #[test]
    fn reads_geometry_and_modality() {
        let mut data = image(4, 4);
        data.extend(element(PIXEL_DATA, b"OW", &[0u8; 32]));
        let summary = scan(&file(&data), &DecodeLimits::default()).unwrap();
        assert_eq!((summary.rows, summary.columns), (4, 4));
        assert_eq!(summary.modality.as_deref(), Some("CT"));
    }

    #[test]
    fn refuses_declared_lengths_past_the_end() {
        let mut data = image(4, 4);
        let mut pixel = element(PIXEL_DATA, b"OW", &[0u8; 32]);
        pixel[8..12].copy_from_slice(&0x7000_0000u32.to_le_bytes());
        data.extend(pixel);
        let problem = scan(&file(&data), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(problem, ScanProblem::Malformed(m) if m.contains("declares")));
    }

    #[test]
    fn reads_unknown_vrs_as_dicom_rs_does() {
        // Found by the fuzzer: dicom-rs reads an unknown VR as UN (2 reserved bytes, a
        // 4-byte length) and allocated the 3 GB this one declares.
        let mut data = image(4, 4);
        data.extend_from_slice(&0x0027u16.to_le_bytes());
        data.extend_from_slice(&0x1047u16.to_le_bytes());
        data.extend_from_slice(b"ZQ\0\0");
        data.extend_from_slice(&0xBF80_0000u32.to_le_bytes());
        data.extend_from_slice(&[0u8; 64]);
        let problem = scan(&file(&data), &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(&problem, ScanProblem::Malformed(m) if m.contains("(0027,1047) declares 3212836864")),
            "{problem:?}"
        );
    }

    #[test]
    fn refuses_huge_images_before_decoding() {
        let data = image(60000, 60000);
        let problem = scan(&file(&data), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(problem, ScanProblem::TooLarge(_)), "{problem:?}");
    }

    #[test]
    fn refuses_deep_nesting() {
        // Sequences of undefined length, each holding one item of undefined length.
        let mut data = Vec::new();
        let depth = MAX_SEQUENCE_DEPTH + 4;
        for _ in 0..depth {
            data.extend_from_slice(&0x0040u16.to_le_bytes());
            data.extend_from_slice(&0xA730u16.to_le_bytes());
            data.extend_from_slice(b"SQ\0\0");
            data.extend_from_slice(&UNDEFINED.to_le_bytes());
            data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            data.extend_from_slice(&UNDEFINED.to_le_bytes());
        }
        let problem = scan(&file(&data), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(problem, ScanProblem::Malformed(m) if m.contains("nested")));
    }
}
