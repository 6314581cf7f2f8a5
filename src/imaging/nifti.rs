//! NIfTI-1 volumes (`.nii`, `.nii.gz`: the format most research CT comes in). One file, a
//! 348-byte header in either byte order, extensions up to `vox_offset`, then the samples.
//!
//! Every size the header states is checked before a byte of samples is allocated: the voxel
//! count against [`MAX_VOXELS`], the bytes it needs against what the file holds (raw), or
//! against the most a gzip stream of that length can inflate to (deflate's ratio is at most
//! 1032:1), and the inflated stream is read no further than the header needs. Errors name
//! the header field at fault.

use std::io::Read;
use std::path::Path;

use super::nrrd::{Volume, MAX_VOXELS};
use super::CtImage;
use crate::error::{Error, Result};

/// Bytes of a NIfTI-1 header.
const HEADER_BYTES: usize = 348;

/// The furthest `vox_offset` may put the samples (extensions are skipped, never kept).
const MAX_VOX_OFFSET: usize = 64 << 20;

/// Deflate's largest expansion: 258 bytes from a 2-bit code, about 1032:1.
const MAX_DEFLATE_RATIO: usize = 1032;

/// How a NIfTI file stores one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NiftiDatatype {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl NiftiDatatype {
    /// The datatype of a header's `datatype` code, when it is a real scalar one.
    fn of_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => NiftiDatatype::U8,
            4 => NiftiDatatype::I16,
            8 => NiftiDatatype::I32,
            16 => NiftiDatatype::F32,
            64 => NiftiDatatype::F64,
            256 => NiftiDatatype::I8,
            512 => NiftiDatatype::U16,
            768 => NiftiDatatype::U32,
            1024 => NiftiDatatype::I64,
            1280 => NiftiDatatype::U64,
            _ => return None,
        })
    }

    /// The header's `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            NiftiDatatype::U8 => 2,
            NiftiDatatype::I16 => 4,
            NiftiDatatype::I32 => 8,
            NiftiDatatype::F32 => 16,
            NiftiDatatype::F64 => 64,
            NiftiDatatype::I8 => 256,
            NiftiDatatype::U16 => 512,
            NiftiDatatype::U32 => 768,
            NiftiDatatype::I64 => 1024,
            NiftiDatatype::U64 => 1280,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            NiftiDatatype::U8 | NiftiDatatype::I8 => 1,
            NiftiDatatype::I16 | NiftiDatatype::U16 => 2,
            NiftiDatatype::I32 | NiftiDatatype::U32 | NiftiDatatype::F32 => 4,
            NiftiDatatype::I64 | NiftiDatatype::U64 | NiftiDatatype::F64 => 8,
        }
    }

    /// One sample as a number; `b` holds exactly [`Self::bytes`] bytes.
    fn value(self, b: &[u8], little: bool) -> f64 {
        macro_rules! num {
            ($t:ty) => {{
                let a = b.try_into().expect("a sample's bytes");
                if little {
                    <$t>::from_le_bytes(a) as f64
                } else {
                    <$t>::from_be_bytes(a) as f64
                }
            }};
        }
        match self {
            NiftiDatatype::U8 => b[0] as f64,
            NiftiDatatype::I8 => b[0] as i8 as f64,
            NiftiDatatype::I16 => num!(i16),
            NiftiDatatype::U16 => num!(u16),
            NiftiDatatype::I32 => num!(i32),
            NiftiDatatype::U32 => num!(u32),
            NiftiDatatype::I64 => num!(i64),
            NiftiDatatype::U64 => num!(u64),
            NiftiDatatype::F32 => num!(f32),
            NiftiDatatype::F64 => num!(f64),
        }
    }

    fn name(self) -> &'static str {
        match self {
            NiftiDatatype::U8 => "uint8",
            NiftiDatatype::I8 => "int8",
            NiftiDatatype::I16 => "int16",
            NiftiDatatype::U16 => "uint16",
            NiftiDatatype::I32 => "int32",
            NiftiDatatype::U32 => "uint32",
            NiftiDatatype::I64 => "int64",
            NiftiDatatype::U64 => "uint64",
            NiftiDatatype::F32 => "float32",
            NiftiDatatype::F64 => "float64",
        }
    }
}

/// Which of the header's three methods gave the voxel-to-world mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum AffineSource {
    /// `srow_x/y/z`, used whenever `sform_code` > 0.
    Sform { code: i16 },
    /// The quaternion, offsets, `pixdim` and `qfac`, when only `qform_code` > 0.
    Qform { code: i16 },
    /// `pixdim` alone (the old ANALYZE mapping), when neither code is set.
    Pixdim,
}

/// A NIfTI-1 volume in memory: samples scaled by `scl_slope`/`scl_inter` (HU for CT), the
/// first voxel axis fastest, and the voxel-to-world mapping in mm (RAS+, NIfTI's world:
/// x towards the patient's right, y anterior, z superior; negate x and y for DICOM's LPS).
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiVolume {
    /// Sizes (i, j, k), spacing as the mapping's column lengths in mm, and the voxels.
    pub volume: Volume,
    /// Rows of the 3 x 4 matrix taking voxel (i, j, k, 1) to world (x, y, z) in mm.
    pub affine: [[f64; 4]; 3],
    pub affine_source: AffineSource,
    pub datatype: NiftiDatatype,
    pub big_endian: bool,
    /// The inverse of `affine`'s 3 x 3 part (checked invertible when read).
    inverse: [[f64; 3]; 3],
}

/// One plane of constant k as a CT slice.
#[derive(Debug, Clone, PartialEq)]
pub struct AxialSlice {
    /// The plane's k.
    pub index: usize,
    /// World z (superior positive) of the plane's centre voxel, in mm.
    pub z_mm: f64,
    /// Width i, height j, spacing (i, j) in mm, values as stored (HU for CT).
    pub image: CtImage,
}

impl NiftiVolume {
    pub fn sizes(&self) -> [usize; 3] {
        self.volume.sizes
    }

    pub fn spacing_mm(&self) -> [f32; 3] {
        self.volume.spacing_mm
    }

    /// World position (mm, RAS+) of a voxel position (fractional voxels allowed).
    pub fn voxel_to_world(&self, voxel: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        std::array::from_fn(|r| {
            a[r][0] * voxel[0] + a[r][1] * voxel[1] + a[r][2] * voxel[2] + a[r][3]
        })
    }

    /// Voxel position (fractional) of a world position (mm, RAS+).
    pub fn world_to_voxel(&self, world: [f64; 3]) -> [f64; 3] {
        let d: [f64; 3] = std::array::from_fn(|r| world[r] - self.affine[r][3]);
        let m = &self.inverse;
        std::array::from_fn(|r| m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2])
    }

    /// Distance between planes of consecutive k, in mm.
    pub fn slice_interval_mm(&self) -> f32 {
        self.volume.spacing_mm[2]
    }

    /// Whether the planes of constant k are axial: the k axis points mostly head-foot and i,
    /// j mostly across the body (what [`Self::axial_slice`] needs).
    pub fn planes_are_axial(&self) -> bool {
        let column = |c: usize| [0, 1, 2].map(|r| self.affine[r][c].abs());
        let dominant = |v: [f64; 3]| (0..3).max_by(|&a, &b| v[a].total_cmp(&v[b]));
        dominant(column(2)) == Some(2)
            && dominant(column(0)) != Some(2)
            && dominant(column(1)) != Some(2)
    }

    /// The plane k as a CT slice with its pixel spacing; refused when k is outside the
    /// volume or the planes are not axial (a sagittal or coronal stack needs reorienting).
    pub fn axial_slice(&self, k: usize) -> Result<AxialSlice> {
        let [w, h, d] = self.volume.sizes;
        if k >= d {
            return Err(Error::invalid_argument(
                "slice",
                format!("k = {k} is outside the volume's {d} slices"),
            ));
        }
        if !self.planes_are_axial() {
            return Err(Error::invalid_argument(
                "slice",
                "the volume's k axis is not head-foot, so its planes are not axial",
            ));
        }
        let mut image = CtImage::new_hounsfield(w, h, self.volume.slice(k).to_vec());
        image.spacing_mm = Some((self.volume.spacing_mm[0], self.volume.spacing_mm[1]));
        let centre = [(w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0, k as f64];
        Ok(AxialSlice {
            index: k,
            z_mm: self.voxel_to_world(centre)[2],
            image,
        })
    }

    /// The planes up to `reach` on either side of k that the volume holds, by offset in the
    /// patch extractor's convention (`imaging::SliceStack`: positive towards the feet), for
    /// 2.5-D and 3-D inputs.
    pub fn axial_neighbours(&self, k: usize, reach: usize) -> Result<Vec<(i32, CtImage)>> {
        let depth = self.volume.sizes[2] as i64;
        // One slice towards the feet is k - 1 when k runs towards the head.
        let towards_feet: i64 = if self.affine[2][2] > 0.0 { -1 } else { 1 };
        let mut out = Vec::new();
        for offset in -(reach as i64)..=reach as i64 {
            let plane = k as i64 + offset * towards_feet;
            if offset != 0 && (0..depth).contains(&plane) {
                out.push((offset as i32, self.axial_slice(plane as usize)?.image));
            }
        }
        Ok(out)
    }
}

/// An error naming the header field at fault.
fn field_error(label: &Path, field: &'static str, message: impl Into<String>) -> Error {
    Error::Nifti {
        path: label.to_path_buf(),
        field,
        message: message.into(),
    }
}

/// Reads a `.nii` or `.nii.gz` file (gzip told by its first bytes, not its name).
pub fn load_nifti(path: &Path) -> Result<NiftiVolume> {
    // The most any volume this reader accepts can take on disk, checked before reading, so
    // a huge file or a device is refused instead of read whole.
    let largest = (MAX_VOX_OFFSET + MAX_VOXELS * 8) as u64;
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !metadata.is_file() {
        return Err(field_error(path, "file", "not a regular file"));
    }
    if metadata.len() > largest {
        return Err(field_error(
            path,
            "file",
            format!(
                "{} bytes, more than the {largest} bytes the largest accepted volume takes",
                metadata.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_nifti(&bytes, path)
}

/// Decodes NIfTI-1 bytes, raw or gzip; `label` names the file in errors.
pub fn decode_nifti(bytes: &[u8], label: &Path) -> Result<NiftiVolume> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        decode_gzip(bytes, label)
    } else {
        let header = bytes.get(..HEADER_BYTES).ok_or_else(|| {
            field_error(
                label,
                "sizeof_hdr",
                format!(
                    "the file holds {} bytes, less than the {HEADER_BYTES}-byte header",
                    bytes.len()
                ),
            )
        })?;
        let layout = Layout::of(&Header::parse(header, label)?, label)?;
        let data = layout.samples(bytes, label)?;
        layout.volume(data, label)
    }
}

/// The header inflated first, its sizes checked against what the stream could hold, then
/// the samples inflated no further than they need.
fn decode_gzip(bytes: &[u8], label: &Path) -> Result<NiftiVolume> {
    let damaged = |e: std::io::Error| Error::Image {
        path: label.to_path_buf(),
        message: format!("the gzip stream is damaged: {e}"),
    };
    let mut stream = flate2::read::MultiGzDecoder::new(bytes);
    let mut inflated = Vec::with_capacity(HEADER_BYTES);
    (&mut stream)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut inflated)
        .map_err(damaged)?;
    if inflated.len() < HEADER_BYTES {
        return Err(field_error(
            label,
            "sizeof_hdr",
            format!(
                "the stream inflates to {} bytes, less than the {HEADER_BYTES}-byte header",
                inflated.len()
            ),
        ));
    }
    let layout = Layout::of(&Header::parse(&inflated, label)?, label)?;
    let end = layout.end();
    let ceiling = bytes
        .len()
        .saturating_mul(MAX_DEFLATE_RATIO)
        .saturating_add(1024);
    if end > ceiling {
        return Err(layout.sizes_lie(
            label,
            format!(
                "a {}-byte gzip stream inflates to at most {ceiling}",
                bytes.len()
            ),
        ));
    }
    // Grown as the stream delivers, so a lying header allocates only what was inflated.
    stream
        .take((end - HEADER_BYTES) as u64)
        .read_to_end(&mut inflated)
        .map_err(damaged)?;
    let data = layout.samples(&inflated, label)?;
    layout.volume(data, label)
}

/// The header fields this reader uses, as the file states them.
struct Header {
    little: bool,
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    xyzt_units: u8,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 3],
    qoffset: [f32; 3],
    srow: [[f32; 4]; 3],
}

impl Header {
    /// Reads the 348 bytes, in the byte order that makes `sizeof_hdr` 348.
    fn parse(b: &[u8], label: &Path) -> Result<Header> {
        let size: [u8; 4] = b[0..4].try_into().expect("4 bytes");
        let little = match (i32::from_le_bytes(size), i32::from_be_bytes(size)) {
            (348, _) => true,
            (_, 348) => false,
            (540, _) | (_, 540) => {
                return Err(field_error(
                    label,
                    "sizeof_hdr",
                    "is 540: a NIfTI-2 file, which this reader does not read",
                ))
            }
            (le, _) => {
                return Err(field_error(
                    label,
                    "sizeof_hdr",
                    format!(
                    "is {le}, a NIfTI-1 header says 348 (in either byte order): not a NIfTI-1 file"
                ),
                ))
            }
        };
        match &b[344..348] {
            b"n+1\0" => {}
            b"ni1\0" => {
                return Err(field_error(
                    label,
                    "magic",
                    "is `ni1`: the samples are in a separate .img file, which this reader does not read",
                ))
            }
            other => {
                return Err(field_error(
                    label,
                    "magic",
                    format!(
                        "is {:?}, a single-file NIfTI-1 says `n+1`",
                        String::from_utf8_lossy(other)
                    ),
                ))
            }
        }
        let i16_at = |at: usize| {
            let a = [b[at], b[at + 1]];
            if little {
                i16::from_le_bytes(a)
            } else {
                i16::from_be_bytes(a)
            }
        };
        let f32_at = |at: usize| {
            let a: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
            if little {
                f32::from_le_bytes(a)
            } else {
                f32::from_be_bytes(a)
            }
        };
        Ok(Header {
            little,
            dim: std::array::from_fn(|i| i16_at(40 + 2 * i)),
            datatype: i16_at(70),
            bitpix: i16_at(72),
            pixdim: std::array::from_fn(|i| f32_at(76 + 4 * i)),
            vox_offset: f32_at(108),
            scl_slope: f32_at(112),
            scl_inter: f32_at(116),
            xyzt_units: b[123],
            qform_code: i16_at(252),
            sform_code: i16_at(254),
            quatern: std::array::from_fn(|i| f32_at(256 + 4 * i)),
            qoffset: std::array::from_fn(|i| f32_at(268 + 4 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f32_at(280 + 16 * r + 4 * c))),
        })
    }
}

/// What the header means, checked: sizes, sample type, where the samples are and how to
/// scale and place them.
struct Layout {
    sizes: [usize; 3],
    datatype: NiftiDatatype,
    little: bool,
    data_offset: usize,
    data_bytes: usize,
    /// (slope, intercept), when `scl_slope` asks for scaling.
    scale: Option<(f64, f64)>,
    affine: [[f64; 4]; 3],
    affine_source: AffineSource,
}

impl Layout {
    fn of(h: &Header, label: &Path) -> Result<Layout> {
        let sizes = sizes_of(&h.dim, label)?;
        let datatype = NiftiDatatype::of_code(h.datatype).ok_or_else(|| {
            field_error(
                label,
                "datatype",
                format!("{} is not a scalar type this reader takes (uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64)", h.datatype),
            )
        })?;
        if h.bitpix as usize != 8 * datatype.bytes() {
            return Err(field_error(
                label,
                "bitpix",
                format!(
                    "is {}, datatype {} has {} bits",
                    h.bitpix,
                    datatype.name(),
                    8 * datatype.bytes()
                ),
            ));
        }
        let voxels = sizes
            .iter()
            .try_fold(1usize, |a, &s| a.checked_mul(s))
            .filter(|&n| n <= MAX_VOXELS)
            .ok_or_else(|| {
                field_error(
                    label,
                    "dim",
                    format!("{sizes:?} voxels is more than the {MAX_VOXELS} this reader takes"),
                )
            })?;
        let (affine, affine_source) = affine_of(h, label)?;
        Ok(Layout {
            sizes,
            datatype,
            little: h.little,
            data_offset: vox_offset_of(h.vox_offset, label)?,
            data_bytes: voxels * datatype.bytes(),
            scale: scale_of(h.scl_slope, h.scl_inter, label)?,
            affine,
            affine_source,
        })
    }

    /// Where the samples end in the (inflated) file.
    fn end(&self) -> usize {
        self.data_offset + self.data_bytes
    }

    /// The error for a file that holds less than the header says: `dim` is at fault unless
    /// even `vox_offset` is past the end.
    fn sizes_lie(&self, label: &Path, holds: String) -> Error {
        field_error(
            label,
            "dim",
            format!(
                "{:?} voxels of {} need {} bytes from vox_offset {}, but {holds} (truncated, or the header's sizes lie)",
                self.sizes,
                self.datatype.name(),
                self.data_bytes,
                self.data_offset
            ),
        )
    }

    /// Exactly the samples' bytes of the whole (inflated) file.
    fn samples<'a>(&self, file: &'a [u8], label: &Path) -> Result<&'a [u8]> {
        if file.len() < self.data_offset {
            return Err(field_error(
                label,
                "vox_offset",
                format!(
                    "is {}, past the file's end at {} bytes",
                    self.data_offset,
                    file.len()
                ),
            ));
        }
        file.get(self.data_offset..self.end())
            .ok_or_else(|| self.sizes_lie(label, format!("the file holds {} bytes", file.len())))
    }

    fn volume(&self, data: &[u8], label: &Path) -> Result<NiftiVolume> {
        let bytes = self.datatype.bytes();
        let (slope, intercept) = self.scale.unwrap_or((1.0, 0.0));
        let mut voxels = Vec::with_capacity(data.len() / bytes);
        for (n, sample) in data.chunks_exact(bytes).enumerate() {
            let value = (self.datatype.value(sample, self.little) * slope + intercept) as f32;
            if !value.is_finite() {
                let [w, h, _] = self.sizes;
                return Err(Error::Image {
                    path: label.to_path_buf(),
                    message: format!(
                        "voxel ({}, {}, {}) is {value} after scaling: not an intensity",
                        n % w,
                        (n / w) % h,
                        n / (w * h)
                    ),
                });
            }
            voxels.push(value);
        }
        let spacing_mm = [0, 1, 2].map(|c| {
            (0..3)
                .map(|r| self.affine[r][c] * self.affine[r][c])
                .sum::<f64>()
                .sqrt() as f32
        });
        Ok(NiftiVolume {
            volume: Volume {
                sizes: self.sizes,
                spacing_mm,
                voxels,
            },
            affine: self.affine,
            affine_source: self.affine_source,
            datatype: self.datatype,
            big_endian: !self.little,
            inverse: inverse_3x3(&self.affine).expect("checked invertible by affine_of"),
        })
    }
}

/// (i, j, k) sizes from `dim`: 1 to 3 spatial dimensions, or more when every further size
/// is 1 (a 4-D series of one volume).
fn sizes_of(dim: &[i16; 8], label: &Path) -> Result<[usize; 3]> {
    let rank = dim[0];
    if !(1..=7).contains(&rank) {
        return Err(field_error(
            label,
            "dim",
            format!("dim[0] is {rank}, NIfTI-1 has 1 to 7 dimensions"),
        ));
    }
    let rank = rank as usize;
    if let Some(i) = (1..=rank).find(|&i| dim[i] < 1) {
        return Err(field_error(
            label,
            "dim",
            format!("dim[{i}] is {}, sizes must be positive", dim[i]),
        ));
    }
    if let Some(i) = (4..=rank).find(|&i| dim[i] != 1) {
        return Err(field_error(
            label,
            "dim",
            format!(
                "dim[{i}] is {}: only 3-D volumes are read (a 4-D series of one volume is)",
                dim[i]
            ),
        ));
    }
    Ok(std::array::from_fn(|a| {
        if a < rank {
            dim[a + 1] as usize
        } else {
            1
        }
    }))
}

/// Where the samples start: a whole number of bytes after the header.
fn vox_offset_of(vox_offset: f32, label: &Path) -> Result<usize> {
    let whole = vox_offset.is_finite() && vox_offset.fract() == 0.0;
    if !whole || vox_offset < HEADER_BYTES as f32 || vox_offset > MAX_VOX_OFFSET as f32 {
        return Err(field_error(
            label,
            "vox_offset",
            format!("is {vox_offset}, needs a whole number of bytes from {HEADER_BYTES} to {MAX_VOX_OFFSET}"),
        ));
    }
    Ok(vox_offset as usize)
}

/// The scaling `scl_slope` asks for: none when it is 0 or not a number (NIfTI's rule).
fn scale_of(slope: f32, intercept: f32, label: &Path) -> Result<Option<(f64, f64)>> {
    if slope == 0.0 || !slope.is_finite() {
        return Ok(None);
    }
    if !intercept.is_finite() {
        return Err(field_error(
            label,
            "scl_inter",
            format!("is {intercept} while scl_slope is {slope}"),
        ));
    }
    Ok(Some((slope as f64, intercept as f64)))
}

/// Millimetres per unit of `xyzt_units`' spatial code (unknown read as mm).
fn mm_per_unit(xyzt_units: u8) -> f64 {
    match xyzt_units & 0x07 {
        1 => 1000.0,
        3 => 0.001,
        _ => 1.0,
    }
}

/// The voxel-to-world mapping in mm: sform when `sform_code` > 0, else the qform when
/// `qform_code` > 0, else `pixdim` alone; refused unless finite and invertible.
fn affine_of(h: &Header, label: &Path) -> Result<([[f64; 4]; 3], AffineSource)> {
    let unit = mm_per_unit(h.xyzt_units);
    let (affine, source, field) = if h.sform_code > 0 {
        const ROWS: [&str; 3] = ["srow_x", "srow_y", "srow_z"];
        for (row, name) in h.srow.iter().zip(ROWS) {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(field_error(label, name, format!("{row:?} is not finite")));
            }
        }
        let affine = h.srow.map(|row| row.map(|v| v as f64 * unit));
        (affine, AffineSource::Sform { code: h.sform_code }, "srow_x")
    } else {
        let spacing = pixdim_spacing(h, label)?.map(|s| s * unit);
        if h.qform_code > 0 {
            let rotation = quaternion_rotation(h.quatern, label)?;
            if h.qoffset.iter().any(|v| !v.is_finite()) {
                return Err(field_error(
                    label,
                    "qoffset_x",
                    format!("{:?} is not finite", h.qoffset),
                ));
            }
            // qfac (pixdim[0]) of -1 flips k; 0 is read as 1, as the standard says.
            let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let scale = [spacing[0], spacing[1], spacing[2] * qfac];
            let affine: [[f64; 4]; 3] = std::array::from_fn(|r| {
                std::array::from_fn(|c| match c {
                    3 => h.qoffset[r] as f64 * unit,
                    _ => rotation[r][c] * scale[c],
                })
            });
            (
                affine,
                AffineSource::Qform { code: h.qform_code },
                "quatern_b",
            )
        } else {
            let mut affine = [[0.0; 4]; 3];
            for (a, row) in affine.iter_mut().enumerate() {
                row[a] = spacing[a];
            }
            (affine, AffineSource::Pixdim, "pixdim")
        }
    };
    let lengths = [0, 1, 2].map(|c| (0..3).map(|r| affine[r][c].powi(2)).sum::<f64>().sqrt());
    if inverse_3x3(&affine).is_none() || lengths.iter().any(|&l| !(1e-3..=1e4).contains(&l)) {
        return Err(field_error(
            label,
            field,
            format!(
                "the voxel-to-world mapping {:?} is singular or its spacing {lengths:?} mm is not a voxel size",
                affine
            ),
        ));
    }
    Ok((affine, source))
}

/// `pixdim[1..3]` as spacing, each positive and finite.
fn pixdim_spacing(h: &Header, label: &Path) -> Result<[f64; 3]> {
    const NAMES: [&str; 3] = ["pixdim[1]", "pixdim[2]", "pixdim[3]"];
    let mut spacing = [0.0; 3];
    for (a, name) in NAMES.into_iter().enumerate() {
        let v = h.pixdim[a + 1];
        if !(v.is_finite() && v > 0.0) {
            return Err(field_error(
                label,
                name,
                format!("is {v}, a voxel size must be positive"),
            ));
        }
        spacing[a] = v as f64;
    }
    Ok(spacing)
}

/// The rotation of NIfTI's unit quaternion (b, c, d; a from the unit length).
fn quaternion_rotation([b, c, d]: [f32; 3], label: &Path) -> Result<[[f64; 3]; 3]> {
    let (b, c, d) = (b as f64, c as f64, d as f64);
    let squares = b * b + c * c + d * d;
    if !squares.is_finite() || squares > 1.0 + 1e-4 {
        return Err(field_error(
            label,
            "quatern_b",
            format!("(b, c, d) = ({b}, {c}, {d}) is longer than a unit quaternion allows"),
        ));
    }
    // Rounding can leave 1 - squares a hair below zero: a 180-degree rotation.
    let a = (1.0 - squares).max(0.0).sqrt();
    Ok([
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ])
}

/// The inverse of the 3 x 3 part, when it is finite and not singular.
fn inverse_3x3(a: &[[f64; 4]; 3]) -> Option<[[f64; 3]; 3]> {
    let m = |r: usize, c: usize| a[r][c];
    let cofactor = |r: usize, c: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
        m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)
    };
    let det = (0..3).map(|c| m(0, c) * cofactor(0, c)).sum::<f64>();
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    // The inverse is the transposed cofactor matrix over the determinant.
    Some(std::array::from_fn(|r| {
        std::array::from_fn(|c| cofactor(c, r) / det)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inverse_undoes_a_rotated_scaled_mapping() {
        let rotation = quaternion_rotation([0.1, -0.2, 0.3], Path::new("q")).unwrap();
        let affine: [[f64; 4]; 3] = std::array::from_fn(|r| {
            std::array::from_fn(|c| match c {
                3 => [10.0, -20.0, 30.0][r],
                _ => rotation[r][c] * [0.7, 0.8, 2.5][c],
            })
        });
        let inverse = inverse_3x3(&affine).unwrap();
        let product =
            |r: usize, c: usize| (0..3).map(|k| affine[r][k] * inverse[k][c]).sum::<f64>();
        for r in 0..3 {
            for c in 0..3 {
                let identity = if r == c { 1.0 } else { 0.0 };
                assert!((product(r, c) - identity).abs() < 1e-9);
            }
        }
    }
}
