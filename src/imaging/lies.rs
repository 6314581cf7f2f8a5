//! Lying images, for tests and fuzz seeds only: small files whose codestream (or image)
//! header declares more than their DICOM header (or their size) admits, one or more per
//! transfer syntax, beside truthful files of the same syntaxes. The bytes are written by
//! hand: a lying codestream needs to be valid only up to the header that lies.

use std::io::Write;

/// One generated file.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What it is, e.g. `jpeg-lossless-sof-65000`.
    pub name: String,
    pub bytes: Vec<u8>,
}

fn sample(name: impl Into<String>, bytes: Vec<u8>) -> Sample {
    Sample {
        name: name.into(),
        bytes,
    }
}

pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED_DATASET: &str = "1.2.840.10008.1.2.1.99";
pub const ENCAPSULATED_UNCOMPRESSED: &str = "1.2.840.10008.1.2.1.98";
pub const RLE: &str = "1.2.840.10008.1.2.5";
pub const DEFLATED_FRAME: &str = "1.2.840.10008.1.2.8.1";
/// The JPEG syntaxes and the SOF marker a lie in each uses.
pub const JPEG_SYNTAXES: [(&str, u8); 4] = [
    ("1.2.840.10008.1.2.4.50", 0xC0),
    ("1.2.840.10008.1.2.4.51", 0xC1),
    ("1.2.840.10008.1.2.4.57", 0xC3),
    ("1.2.840.10008.1.2.4.70", 0xC3),
];
pub const J2K_SYNTAXES: [&str; 7] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];
/// Syntaxes refused whatever their content.
pub const REFUSED_SYNTAXES: [&str; 9] = [
    "1.2.840.10008.1.2.4.94",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.204",
    "1.2.840.10008.1.2.4.205",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.53",
];

/// How a dataset is encoded.
#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

struct Dataset {
    encoding: Encoding,
    out: Vec<u8>,
}

impl Dataset {
    fn new(encoding: Encoding) -> Self {
        Dataset {
            encoding,
            out: Vec::new(),
        }
    }

    fn u16(&mut self, v: u16) {
        if self.encoding == Encoding::ExplicitBe {
            self.out.extend_from_slice(&v.to_be_bytes());
        } else {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn u32(&mut self, v: u32) {
        if self.encoding == Encoding::ExplicitBe {
            self.out.extend_from_slice(&v.to_be_bytes());
        } else {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn element(&mut self, tag: (u16, u16), vr: &[u8; 2], value: &[u8]) {
        self.u16(tag.0);
        self.u16(tag.1);
        let long = matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT");
        if self.encoding == Encoding::ImplicitLe {
            self.u32(value.len() as u32);
        } else {
            self.out.extend_from_slice(vr);
            if long {
                self.out.extend_from_slice(&[0, 0]);
                self.u32(value.len() as u32);
            } else {
                self.u16(value.len() as u16);
            }
        }
        self.out.extend_from_slice(value);
    }

    fn text(&mut self, tag: (u16, u16), vr: &[u8; 2], text: &str) {
        let mut value = text.as_bytes().to_vec();
        if value.len() % 2 == 1 {
            value.push(if vr == b"UI" { 0 } else { b' ' });
        }
        self.element(tag, vr, &value);
    }

    fn us(&mut self, tag: (u16, u16), v: u16) {
        let bytes = if self.encoding == Encoding::ExplicitBe {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.element(tag, b"US", &bytes);
    }
}

/// The image attributes of a file.
#[derive(Clone, Copy)]
struct Geometry {
    rows: u16,
    columns: u16,
    frames: u16,
    bits: u16,
}

const SMALL: Geometry = Geometry {
    rows: 16,
    columns: 16,
    frames: 1,
    bits: 16,
};

fn attributes(data: &mut Dataset, g: Geometry) {
    data.text((0x0008, 0x0060), b"CS", "CT");
    data.us((0x0028, 0x0002), 1);
    data.text((0x0028, 0x0004), b"CS", "MONOCHROME2");
    if g.frames > 1 {
        data.text((0x0028, 0x0008), b"IS", &g.frames.to_string());
    }
    data.us((0x0028, 0x0010), g.rows);
    data.us((0x0028, 0x0011), g.columns);
    data.us((0x0028, 0x0100), g.bits);
    data.us((0x0028, 0x0101), g.bits);
    data.us((0x0028, 0x0102), g.bits - 1);
    data.us((0x0028, 0x0103), 0);
}

/// The preamble and file meta group for `syntax`.
fn meta(syntax: &str) -> Vec<u8> {
    let mut group = Dataset::new(Encoding::ExplicitLe);
    group.element((0x0002, 0x0001), b"OB", &[0, 1]);
    group.text((0x0002, 0x0002), b"UI", "1.2.840.10008.5.1.4.1.1.2");
    group.text((0x0002, 0x0003), b"UI", "1.2.826.0.1.3680043.2.1125.1");
    group.text((0x0002, 0x0010), b"UI", syntax);
    group.text((0x0002, 0x0012), b"UI", "1.2.826.0.1.3680043.2.1125");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    let mut length = Dataset::new(Encoding::ExplicitLe);
    length.element(
        (0x0002, 0x0000),
        b"UL",
        &(group.out.len() as u32).to_le_bytes(),
    );
    out.extend(length.out);
    out.extend(group.out);
    out
}

/// A file with native pixel data in one of the three uncompressed syntaxes.
fn native(syntax: &str, g: Geometry, pixels: &[u16]) -> Vec<u8> {
    let encoding = match syntax {
        IMPLICIT_LE => Encoding::ImplicitLe,
        EXPLICIT_BE => Encoding::ExplicitBe,
        _ => Encoding::ExplicitLe,
    };
    let mut data = Dataset::new(encoding);
    attributes(&mut data, g);
    let mut value = Vec::with_capacity(pixels.len() * 2);
    for &p in pixels {
        if encoding == Encoding::ExplicitBe {
            value.extend_from_slice(&p.to_be_bytes());
        } else {
            value.extend_from_slice(&p.to_le_bytes());
        }
    }
    data.element((0x7FE0, 0x0010), b"OW", &value);
    let mut out = meta(syntax);
    out.extend(data.out);
    out
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// A deflated-dataset file whose dataset is `dataset` (explicit little endian).
fn deflated_dataset(dataset: &[u8]) -> Vec<u8> {
    let mut out = meta(DEFLATED_DATASET);
    out.extend(deflate(dataset));
    out
}

/// A file with encapsulated pixel data: an empty offset table, then `fragments`.
fn encapsulated(syntax: &str, g: Geometry, fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Dataset::new(Encoding::ExplicitLe);
    attributes(&mut data, g);
    data.u16(0x7FE0);
    data.u16(0x0010);
    data.out.extend_from_slice(b"OB\0\0");
    data.u32(0xFFFF_FFFF);
    for fragment in std::iter::once(&Vec::new()).chain(fragments) {
        let mut fragment = fragment.clone();
        if fragment.len() % 2 == 1 {
            fragment.push(0);
        }
        data.u16(0xFFFE);
        data.u16(0xE000);
        data.u32(fragment.len() as u32);
        data.out.extend(fragment);
    }
    data.u16(0xFFFE);
    data.u16(0xE0DD);
    data.u32(0);
    let mut out = meta(syntax);
    out.extend(data.out);
    out
}

fn ramp(g: Geometry) -> Vec<u16> {
    let n = usize::from(g.rows) * usize::from(g.columns) * usize::from(g.frames);
    (0..n).map(|i| (i % 1500) as u16).collect()
}

fn le_bytes(pixels: &[u16]) -> Vec<u8> {
    pixels.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// A JPEG stream head: SOI, a start-of-frame `marker` of `width` x `height` with
/// `components` components of `precision` bits, a Huffman table, a scan header and a few
/// bytes of entropy-coded data, then EOI. Decodable only as far as its header.
pub fn jpeg_stream(marker: u8, width: u16, height: u16, components: u8, precision: u8) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
    out.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    out.extend(sof(marker, width, height, components, precision));
    // DHT: one DC table with one 1-bit code.
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, 0x00, 1]);
    out.extend_from_slice(&[0u8; 15]);
    out.push(0);
    let mut sos = vec![0xFF, 0xDA];
    sos.extend_from_slice(&(6 + 2 * u16::from(components)).to_be_bytes());
    sos.push(components);
    for c in 0..components {
        sos.extend_from_slice(&[c + 1, 0x00]);
    }
    sos.extend_from_slice(&[1, 0, 0]);
    out.extend(sos);
    out.extend_from_slice(&[0x12, 0x34, 0xFF, 0x00, 0x56]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

fn sof(marker: u8, width: u16, height: u16, components: u8, precision: u8) -> Vec<u8> {
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&(8 + 3 * u16::from(components)).to_be_bytes());
    out.push(precision);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.push(components);
    for c in 0..components {
        out.extend_from_slice(&[c + 1, 0x11, 0]);
    }
    out
}

/// A JPEG 2000 main header: SOC, SIZ (`width` x `height`, tiles of `tile` x `tile`, one
/// component of `precision` bits), a minimal COD and QCD, then EOC.
pub fn j2k_codestream(width: u32, height: u32, tile: u32, precision: u8) -> Vec<u8> {
    let mut out = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 41, 0x00, 0x00];
    for v in [width, height, 0, 0, tile, tile, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[precision - 1, 1, 1]);
    // COD: LRCP, one layer, no transform, 5 levels, 64x64 blocks, 5-3 wavelet.
    out.extend_from_slice(&[0xFF, 0x52, 0x00, 0x0C, 0, 0, 0, 1, 0, 5, 4, 4, 0, 1]);
    // QCD: no quantisation, guard bits 2, 16 subbands.
    out.extend_from_slice(&[0xFF, 0x5C, 0x00, 0x13, 0x40]);
    out.extend_from_slice(&[0x48; 16]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// `codestream` in a JP2 wrapper (signature, file type, then the codestream box).
fn jp2_wrapped(codestream: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A,
    ];
    out.extend_from_slice(&20u32.to_be_bytes());
    out.extend_from_slice(b"ftypjp2 \0\0\0\0jp2 ");
    out.extend_from_slice(&(codestream.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(b"jp2c");
    out.extend_from_slice(codestream);
    out
}

/// An RLE fragment of one 16-bit frame: two segments (high bytes, low bytes), each as
/// PackBits literal runs.
fn rle_fragment(pixels: &[u16]) -> Vec<u8> {
    let packbits = |bytes: Vec<u8>| {
        let mut out = Vec::new();
        for chunk in bytes.chunks(128) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
        if out.len() % 2 == 1 {
            out.push(0x80);
        }
        out
    };
    let high = packbits(pixels.iter().map(|p| (p >> 8) as u8).collect());
    let low = packbits(pixels.iter().map(|p| *p as u8).collect());
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(&2u32.to_le_bytes());
    out[4..8].copy_from_slice(&64u32.to_le_bytes());
    out[8..12].copy_from_slice(&(64 + high.len() as u32).to_le_bytes());
    out.extend(high);
    out.extend(low);
    out
}

/// A PNG with the given IHDR and an IDAT of `idat` (chunk CRCs correct).
pub fn png(width: u32, height: u32, bit_depth: u8, colour: u8, idat: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], body: &[u8]| {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut summed = kind.to_vec();
        summed.extend_from_slice(body);
        out.extend_from_slice(&summed);
        out.extend_from_slice(&crc32fast::hash(&summed).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, colour, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", idat);
    chunk(b"IEND", &[]);
    out
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// `count` distinct empty elements (explicit little endian, private groups) before a small
/// image: the element-count bomb.
pub fn element_bomb(count: usize, deflated: bool) -> Vec<u8> {
    let mut data = Dataset::new(Encoding::ExplicitLe);
    data.text((0x0008, 0x0060), b"CS", "CT");
    for i in 0..count {
        let group = 0x0009 + 2 * (i / 0xFF00) as u16;
        let element = 0x0100 + (i % 0xFF00) as u16;
        data.element((group, element), b"LO", &[]);
    }
    let mut image = Dataset::new(Encoding::ExplicitLe);
    attributes(&mut image, SMALL);
    image.element((0x7FE0, 0x0010), b"OW", &le_bytes(&ramp(SMALL)));
    // The image attributes (group 0028) after the private groups below 0x0028 only.
    data.out.extend(image.out);
    if deflated {
        deflated_dataset(&data.out)
    } else {
        let mut out = meta(EXPLICIT_LE);
        out.extend(data.out);
        out
    }
}

/// A deflated-dataset file whose dataset inflates to `inflated` bytes (a small image,
/// then one huge private value of zeros).
pub fn deflated_dataset_bomb(inflated: usize) -> Vec<u8> {
    let mut data = Dataset::new(Encoding::ExplicitLe);
    attributes(&mut data, SMALL);
    data.element((0x7FE0, 0x0010), b"OW", &le_bytes(&ramp(SMALL)));
    data.u16(0x7FE1);
    data.u16(0x0010);
    data.out.extend_from_slice(b"OB\0\0");
    data.u32(inflated as u32);
    data.out.resize(data.out.len() + inflated, 0);
    deflated_dataset(&data.out)
}

/// A Deflated Image Frame Compression file of a 16x16 frame whose fragment inflates to
/// `inflated` bytes.
pub fn deflated_frame_bomb(inflated: usize) -> Vec<u8> {
    encapsulated(DEFLATED_FRAME, SMALL, &[deflate(&vec![0u8; inflated])])
}

/// Every lying file: each one's header declares more than its DICOM header (or its size)
/// admits. Each must be refused with a typed error and no large allocation.
pub fn lying_images() -> Vec<Sample> {
    let mut out = Vec::new();
    let huge = Geometry {
        rows: 65000,
        columns: 65000,
        ..SMALL
    };
    // Native syntaxes: the header itself lies about the tiny pixel data.
    for syntax in [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE] {
        out.push(sample(
            format!("native-{syntax}-65000x65000"),
            native(syntax, huge, &[0; 8]),
        ));
    }
    {
        let mut data = Dataset::new(Encoding::ExplicitLe);
        attributes(&mut data, huge);
        data.element((0x7FE0, 0x0010), b"OW", &[0; 16]);
        out.push(sample(
            "deflated-dataset-65000x65000",
            deflated_dataset(&data.out),
        ));
    }
    out.push(sample(
        "deflated-dataset-bomb-80MB",
        deflated_dataset_bomb(80 << 20),
    ));
    out.push(sample(
        "encapsulated-uncompressed-65000x65000",
        encapsulated(ENCAPSULATED_UNCOMPRESSED, huge, &[vec![0; 64]]),
    ));
    // RLE: segment counts and offsets that lie.
    let mut rle = rle_fragment(&ramp(SMALL));
    rle[0..4].copy_from_slice(&15u32.to_le_bytes());
    out.push(sample("rle-15-segments", encapsulated(RLE, SMALL, &[rle])));
    let mut rle = rle_fragment(&ramp(SMALL));
    rle[8..12].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    out.push(sample(
        "rle-offset-past-end",
        encapsulated(RLE, SMALL, &[rle]),
    ));
    out.push(sample(
        "rle-more-fragments-than-frames",
        encapsulated(
            RLE,
            SMALL,
            &[rle_fragment(&ramp(SMALL)), rle_fragment(&ramp(SMALL))],
        ),
    ));
    // JPEG: every SOF kind, and the ways a stream can declare more.
    let header = Geometry {
        rows: 128,
        columns: 128,
        ..SMALL
    };
    for (syntax, marker) in JPEG_SYNTAXES {
        let lie = |name: &str, stream: Vec<u8>| {
            sample(
                format!("jpeg-{syntax}-{name}"),
                encapsulated(syntax, header, &[stream]),
            )
        };
        out.push(lie("sof-65000", jpeg_stream(marker, 65000, 65000, 1, 16)));
        out.push(lie("sof-wider", jpeg_stream(marker, 129, 128, 1, 16)));
        out.push(lie("three-components", jpeg_stream(marker, 128, 128, 3, 8)));
        out.push(lie("precision-past-bits", {
            let mut s = jpeg_stream(marker, 128, 128, 1, 16);
            s[20 + 4] = 24;
            s
        }));
        out.push(lie("height-zero-dnl", jpeg_stream(marker, 128, 0, 1, 16)));
        out.push(lie("later-sof-65000", {
            let mut s = jpeg_stream(marker, 128, 128, 1, 16);
            let eoi = s.len() - 2;
            s.splice(eoi..eoi, sof(marker, 65000, 65000, 1, 16));
            s
        }));
        out.push(lie("second-stream-65000", {
            let mut s = jpeg_stream(marker, 128, 128, 1, 16);
            s.extend(jpeg_stream(marker, 65000, 65000, 1, 16));
            s
        }));
        out.push(lie("hierarchical", jpeg_stream(0xC7, 128, 128, 1, 16)));
        out.push(lie(
            "stream-split-over-fragments",
            jpeg_stream(marker, 65000, 65000, 1, 16),
        ));
        if let Some(last) = out.last_mut() {
            let stream = jpeg_stream(marker, 65000, 65000, 1, 16);
            let (a, b) = stream.split_at(9);
            last.bytes = encapsulated(syntax, header, &[a.to_vec(), b.to_vec()]);
        }
    }
    for marker in [0xC2, 0xC9, 0xCA, 0xCB] {
        out.push(sample(
            format!("jpeg-sof-{marker:02x}-65000"),
            encapsulated(
                "1.2.840.10008.1.2.4.51",
                header,
                &[jpeg_stream(marker, 65000, 65000, 1, 12)],
            ),
        ));
    }
    // JPEG 2000 and HTJ2K: SIZ and tiles.
    for syntax in J2K_SYNTAXES {
        let lie = |name: &str, stream: Vec<u8>| {
            sample(
                format!("j2k-{syntax}-{name}"),
                encapsulated(syntax, header, &[stream]),
            )
        };
        out.push(lie("siz-20000", j2k_codestream(20000, 20000, 20000, 16)));
        out.push(lie("siz-taller", j2k_codestream(128, 129, 128, 16)));
        out.push(lie("tiles-1x1", j2k_codestream(128, 128, 1, 16)));
        out.push(lie(
            "precision-past-bits",
            j2k_codestream(128, 128, 128, 24),
        ));
        out.push(lie(
            "jp2-wrapped-siz-20000",
            jp2_wrapped(&j2k_codestream(20000, 20000, 20000, 16)),
        ));
    }
    // Deflated image frames: each fragment inflates past its frame.
    out.push(sample(
        "deflated-frame-bomb-8MB",
        deflated_frame_bomb(8 << 20),
    ));
    out.push(sample(
        "deflated-frame-more-fragments-than-frames",
        encapsulated(
            DEFLATED_FRAME,
            SMALL,
            &[deflate(&[0; 512]), deflate(&[0; 512])],
        ),
    ));
    // Refused syntaxes, whatever they carry.
    for syntax in REFUSED_SYNTAXES {
        out.push(sample(
            format!("refused-{syntax}"),
            encapsulated(syntax, header, &[jpeg_stream(0xF7, 65000, 65000, 1, 16)]),
        ));
    }
    out.push(sample("element-bomb-300k", element_bomb(300_000, false)));
    out.push(sample(
        "element-bomb-1m-deflated",
        element_bomb(1_000_000, true),
    ));
    // Plain images whose header lies about their size.
    out.push(sample(
        "png8-65000x65000",
        png(65000, 65000, 8, 0, &zlib(&[0; 64])),
    ));
    out.push(sample(
        "png16-65000x65000",
        png(65000, 65000, 16, 0, &zlib(&[0; 64])),
    ));
    out.push(sample(
        "png16-4000000x1",
        png(4_000_000, 1, 16, 0, &zlib(&[0; 64])),
    ));
    out.push(sample(
        "jpeg-file-sof-65000",
        jpeg_stream(0xC0, 65000, 65000, 1, 8),
    ));
    out.push(sample("jpeg-file-later-sof-65000", {
        let mut s = jpeg_stream(0xC0, 64, 64, 1, 8);
        let eoi = s.len() - 2;
        s.splice(eoi..eoi, sof(0xC0, 65000, 65000, 1, 8));
        s
    }));
    out.push(sample(
        "jpeg-file-progressive-65000",
        jpeg_stream(0xC2, 65000, 65000, 3, 8),
    ));
    out
}

/// Truthful small files, one per syntax where one is cheap to write by hand: each must
/// decode (real files in `data/dicom/` cover JPEG lossless and JPEG 2000).
pub fn truthful_images() -> Vec<Sample> {
    let pixels = ramp(SMALL);
    let mut out = Vec::new();
    for syntax in [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE] {
        out.push(sample(
            format!("native-{syntax}"),
            native(syntax, SMALL, &pixels),
        ));
    }
    {
        let mut data = Dataset::new(Encoding::ExplicitLe);
        attributes(&mut data, SMALL);
        data.element((0x7FE0, 0x0010), b"OW", &le_bytes(&pixels));
        out.push(sample("deflated-dataset", deflated_dataset(&data.out)));
    }
    out.push(sample(
        "encapsulated-uncompressed",
        encapsulated(ENCAPSULATED_UNCOMPRESSED, SMALL, &[le_bytes(&pixels)]),
    ));
    out.push(sample(
        "rle",
        encapsulated(RLE, SMALL, &[rle_fragment(&pixels)]),
    ));
    out.push(sample(
        "deflated-frame",
        encapsulated(DEFLATED_FRAME, SMALL, &[deflate(&le_bytes(&pixels))]),
    ));
    let three = Geometry { frames: 3, ..SMALL };
    let all = ramp(three);
    out.push(sample(
        "deflated-frame-3-frames",
        encapsulated(
            DEFLATED_FRAME,
            three,
            &all.chunks(256)
                .map(|f| deflate(&le_bytes(f)))
                .collect::<Vec<_>>(),
        ),
    ));
    out.push(sample(
        "rle-3-frames",
        encapsulated(
            RLE,
            three,
            &all.chunks(256).map(rle_fragment).collect::<Vec<_>>(),
        ),
    ));
    // Baseline JPEG of 8-bit samples, written by the image crate, under .50 and .51.
    let gray: Vec<u8> = (0..256).map(|i| (i % 200) as u8).collect();
    let mut jpeg = Vec::new();
    if image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&gray, 16, 16, image::ExtendedColorType::L8)
        .is_ok()
    {
        let eight = Geometry { bits: 8, ..SMALL };
        for syntax in ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"] {
            out.push(sample(
                format!("jpeg-{syntax}"),
                encapsulated(syntax, eight, &[jpeg.clone()]),
            ));
        }
        out.push(sample("jpeg-file", jpeg));
    }
    out.push(sample("png16", super::encode_png16(16, 16, &[0.0; 256])));
    {
        let mut rows = Vec::new();
        for y in 0..16u8 {
            rows.push(0);
            rows.extend((0..16u8).map(|x| x * 8 + y));
        }
        out.push(sample("png8", png(16, 16, 8, 0, &zlib(&rows))));
    }
    out
}

/// Every syntax the fuzz target wraps fragments in (accepted and refused ones).
pub const FUZZ_SYNTAXES: [&str; 16] = [
    ENCAPSULATED_UNCOMPRESSED,
    RLE,
    DEFLATED_FRAME,
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.95",
];

/// A small DICOM whose pixel data is `fragments` under `syntax`: `rows` x `columns`
/// pixels, `frames` frames, `bits` bits allocated (8 or 16), one sample.
pub fn dicom_with_fragments(
    syntax: &str,
    rows: u16,
    columns: u16,
    frames: u16,
    bits: u16,
    fragments: &[Vec<u8>],
) -> Vec<u8> {
    let g = Geometry {
        rows,
        columns,
        frames: frames.max(1),
        bits: bits.max(1),
    };
    encapsulated(syntax, g, fragments)
}

/// A fuzz input: a syntax byte (index into [`FUZZ_SYNTAXES`]), a geometry byte, then the
/// fragments separated by the bytes `FE FF 00 E0` (the item tag, which the fuzzer's
/// dictionary learns quickly).
pub fn fuzz_input(syntax: usize, geometry: u8, fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![syntax as u8, geometry];
    for (i, fragment) in fragments.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(&FRAGMENT_SEPARATOR);
        }
        out.extend_from_slice(fragment);
    }
    out
}

/// What separates fragments in a fuzz input.
pub const FRAGMENT_SEPARATOR: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];

/// The geometries a fuzz input's second byte picks from: (rows, columns, frames, bits).
pub const FUZZ_GEOMETRIES: [(u16, u16, u16, u16); 8] = [
    (16, 16, 1, 16),
    (128, 128, 1, 16),
    (16, 16, 1, 8),
    (16, 16, 3, 16),
    (128, 128, 2, 16),
    (512, 512, 1, 16),
    (1, 1, 1, 16),
    (2048, 2048, 1, 16),
];

/// Turns a fuzz input back into a DICOM file (see [`fuzz_input`]).
pub fn dicom_of_fuzz_input(data: &[u8]) -> Option<Vec<u8>> {
    let (&syntax, rest) = data.split_first()?;
    let (&geometry, rest) = rest.split_first()?;
    let syntax = FUZZ_SYNTAXES[usize::from(syntax) % FUZZ_SYNTAXES.len()];
    let (rows, columns, frames, bits) =
        FUZZ_GEOMETRIES[usize::from(geometry) % FUZZ_GEOMETRIES.len()];
    let mut fragments = Vec::new();
    let mut rest = rest;
    while let Some(at) = rest
        .windows(FRAGMENT_SEPARATOR.len())
        .position(|w| w == FRAGMENT_SEPARATOR)
    {
        fragments.push(rest[..at].to_vec());
        rest = &rest[at + FRAGMENT_SEPARATOR.len()..];
    }
    fragments.push(rest.to_vec());
    Some(dicom_with_fragments(
        syntax, rows, columns, frames, bits, &fragments,
    ))
}

/// Seeds for the `lying_images` fuzz target: every lying and truthful file up to
/// `max_len` bytes, and fragment inputs of each codestream kind.
pub fn fuzz_seeds(max_len: usize) -> Vec<Sample> {
    let mut out: Vec<Sample> = lying_images()
        .into_iter()
        .chain(truthful_images())
        .filter(|s| s.bytes.len() <= max_len)
        .collect();
    let pixels = ramp(SMALL);
    let index = |uid: &str| FUZZ_SYNTAXES.iter().position(|s| *s == uid).unwrap_or(0);
    out.push(sample(
        "fragments-rle",
        fuzz_input(index(RLE), 0, &[rle_fragment(&pixels)]),
    ));
    out.push(sample(
        "fragments-deflated",
        fuzz_input(index(DEFLATED_FRAME), 0, &[deflate(&le_bytes(&pixels))]),
    ));
    for (syntax, marker) in JPEG_SYNTAXES {
        out.push(sample(
            format!("fragments-jpeg-{syntax}"),
            fuzz_input(index(syntax), 1, &[jpeg_stream(marker, 128, 128, 1, 16)]),
        ));
    }
    for syntax in ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"] {
        out.push(sample(
            format!("fragments-j2k-{syntax}"),
            fuzz_input(index(syntax), 1, &[j2k_codestream(128, 128, 64, 16)]),
        ));
    }
    out
}
