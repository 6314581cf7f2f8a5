//! NRRD volumes (the format of pyradiomics' real chest CT and tumour masks): a text header,
//! a blank line, then raw or gzip-compressed samples. Sizes are checked against a voxel cap
//! before a byte is inflated, and the inflated stream is read no further than the header
//! promises.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// A 3-D scalar volume, x fastest.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub sizes: [usize; 3],
    /// Voxel spacing (x, y, z) in mm, from `space directions` (or `spacings`).
    pub spacing_mm: [f32; 3],
    pub voxels: Vec<f32>,
}

impl Volume {
    /// One axial slice (fixed z) as a row-major image.
    pub fn slice(&self, z: usize) -> &[f32] {
        let plane = self.sizes[0] * self.sizes[1];
        &self.voxels[z * plane..(z + 1) * plane]
    }
}

/// Most voxels a volume may declare: 512 x 512 x 1024.
pub const MAX_VOXELS: usize = 512 * 512 * 1024;

#[derive(Clone, Copy)]
enum Sample {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl Sample {
    fn parse(text: &str) -> Option<Sample> {
        Some(match text {
            "signed char" | "int8" | "int8_t" => Sample::I8,
            "uchar" | "unsigned char" | "uint8" | "uint8_t" => Sample::U8,
            "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
                Sample::I16
            }
            "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
                Sample::U16
            }
            "int" | "signed int" | "int32" | "int32_t" => Sample::I32,
            "uint" | "unsigned int" | "uint32" | "uint32_t" => Sample::U32,
            "float" => Sample::F32,
            "double" => Sample::F64,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            Sample::I8 | Sample::U8 => 1,
            Sample::I16 | Sample::U16 => 2,
            Sample::I32 | Sample::U32 | Sample::F32 => 4,
            Sample::F64 => 8,
        }
    }

    fn value(self, b: &[u8], little: bool) -> f32 {
        macro_rules! num {
            ($t:ty, $n:expr) => {{
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                if little {
                    <$t>::from_le_bytes(a) as f32
                } else {
                    <$t>::from_be_bytes(a) as f32
                }
            }};
        }
        match self {
            Sample::I8 => b[0] as i8 as f32,
            Sample::U8 => b[0] as f32,
            Sample::I16 => num!(i16, 2),
            Sample::U16 => num!(u16, 2),
            Sample::I32 => num!(i32, 4),
            Sample::U32 => num!(u32, 4),
            Sample::F32 => num!(f32, 4),
            Sample::F64 => num!(f64, 8),
        }
    }
}

fn bad(path: &Path, message: String) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads a 3-D NRRD file (raw or gzip encoding, any scalar sample type).
pub fn load_nrrd(path: &Path) -> Result<Volume> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_nrrd(&bytes, path)
}

/// Decodes NRRD bytes; `label` names the file in errors.
pub fn decode_nrrd(bytes: &[u8], label: &Path) -> Result<Volume> {
    let (header, data) = split_header(bytes, label)?;
    let fields = HeaderFields::parse(header, label)?;
    let sample = fields
        .sample
        .ok_or_else(|| bad(label, "the header has no `type`".into()))?;
    let sizes = fields
        .sizes
        .ok_or_else(|| bad(label, "the header has no `sizes`".into()))?;
    let want = voxel_count(sizes, label)? * sample.bytes();
    let raw = sample_bytes(data, fields.encoding.as_deref(), want, label)?;
    let voxels = raw
        .chunks_exact(sample.bytes())
        .map(|b| sample.value(b, fields.little_endian))
        .collect();
    Ok(Volume {
        sizes,
        spacing_mm: fields.spacing.unwrap_or([1.0, 1.0, 1.0]),
        voxels,
    })
}

/// The text header (magic line included) and the bytes after the blank line.
fn split_header<'a>(bytes: &'a [u8], label: &Path) -> Result<(&'a str, &'a [u8])> {
    if !bytes.starts_with(b"NRRD000") {
        return Err(bad(label, "not an NRRD file (no NRRD000x magic)".into()));
    }
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| bad(label, "the header never ends (no blank line)".into()))?;
    let header = std::str::from_utf8(&bytes[..end])
        .map_err(|_| bad(label, "the header is not text".into()))?;
    Ok((header, &bytes[end + 2..]))
}

/// The header fields this reader uses, as the header gives them.
struct HeaderFields {
    sample: Option<Sample>,
    sizes: Option<[usize; 3]>,
    encoding: Option<String>,
    little_endian: bool,
    spacing: Option<[f32; 3]>,
}

impl HeaderFields {
    /// Reads the header's `field: value` lines after the magic, refusing at the first line
    /// this reader cannot honour.
    fn parse(header: &str, label: &Path) -> Result<HeaderFields> {
        let mut fields = HeaderFields {
            sample: None,
            sizes: None,
            encoding: None,
            little_endian: true,
            spacing: None,
        };
        for (n, line) in header.lines().enumerate().skip(1) {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_start_matches('=').trim();
            let at = |m: &str| bad(label, format!("header line {}: `{field}`: {m}", n + 1));
            fields.read(field.trim(), value, at)?;
        }
        Ok(fields)
    }

    /// Takes one field; `at` makes an error naming its line.
    fn read(&mut self, field: &str, value: &str, at: impl Fn(&str) -> Error) -> Result<()> {
        match field {
            "type" => {
                self.sample = Some(
                    Sample::parse(value)
                        .ok_or_else(|| at(&format!("`{value}` is not a scalar type")))?,
                )
            }
            "dimension" if value != "3" => return Err(at("only 3-D volumes are read")),
            "sizes" => self.sizes = Some(parse_sizes(value, &at)?),
            "encoding" => self.encoding = Some(value.to_string()),
            "endian" => self.little_endian = value == "little",
            "space directions" => {
                if let Some(spacing) = spacing_of_directions(value) {
                    self.spacing = Some(spacing);
                }
            }
            "spacings" => {
                if let Some(spacing) = spacing_of_spacings(value) {
                    self.spacing = Some(spacing);
                }
            }
            "data file" | "datafile" => {
                return Err(at(
                    "detached data files are not read; keep the data in the file",
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// Three positive sizes.
fn parse_sizes(value: &str, at: &impl Fn(&str) -> Error) -> Result<[usize; 3]> {
    let s: Vec<usize> = value
        .split_whitespace()
        .map(|v| v.parse().map_err(|_| at(&format!("`{v}` is not a size"))))
        .collect::<Result<_>>()?;
    if s.len() != 3 || s.contains(&0) {
        return Err(at("needs three positive sizes"));
    }
    Ok([s[0], s[1], s[2]])
}

/// Spacing as the lengths of the three `space directions` vectors.
fn spacing_of_directions(value: &str) -> Option<[f32; 3]> {
    let vectors: Vec<f32> = value
        .split(')')
        .filter(|v| v.contains('('))
        .map(|v| {
            let numbers: Vec<f32> = v
                .trim()
                .trim_start_matches('(')
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect();
            numbers.iter().map(|x| x * x).sum::<f32>().sqrt()
        })
        .collect();
    (vectors.len() == 3).then(|| [vectors[0], vectors[1], vectors[2]])
}

/// Spacing as the three numbers of `spacings`.
fn spacing_of_spacings(value: &str) -> Option<[f32; 3]> {
    let v: Vec<f32> = value
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// The number of voxels `sizes` declares, refused past [`MAX_VOXELS`].
fn voxel_count(sizes: [usize; 3], label: &Path) -> Result<usize> {
    sizes
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .filter(|&n| n <= MAX_VOXELS)
        .ok_or_else(|| {
            bad(
                label,
                format!("{sizes:?} voxels is more than the {MAX_VOXELS} this reader takes"),
            )
        })
}

/// Exactly `want` bytes of samples, inflated no further than that.
fn sample_bytes(data: &[u8], encoding: Option<&str>, want: usize, label: &Path) -> Result<Vec<u8>> {
    match encoding {
        Some("raw") => data.get(..want).map(<[u8]>::to_vec).ok_or_else(|| {
            bad(
                label,
                format!("{} bytes of samples, the header needs {want}", data.len()),
            )
        }),
        Some("gzip" | "gz") => {
            let mut out = Vec::with_capacity(want);
            flate2::read::GzDecoder::new(data)
                .take(want as u64)
                .read_to_end(&mut out)
                .map_err(|e| bad(label, format!("the gzip stream is damaged: {e}")))?;
            if out.len() != want {
                return Err(bad(
                    label,
                    format!(
                        "{} bytes of samples inflated, the header needs {want}",
                        out.len()
                    ),
                ));
            }
            Ok(out)
        }
        Some(other) => Err(bad(label, format!("encoding `{other}` is not read"))),
        None => Err(bad(label, "the header has no `encoding`".into())),
    }
}

/// Writes a gzip NRRD of 16-bit samples (tests and tools).
pub fn encode_nrrd_i16(sizes: [usize; 3], spacing_mm: [f32; 3], voxels: &[i16]) -> Vec<u8> {
    use std::io::Write;
    let mut out = format!(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {} {} {}\nspace directions: ({},0,0) (0,{},0) (0,0,{})\nkinds: domain domain domain\nendian: little\nencoding: gzip\n\n",
        sizes[0], sizes[1], sizes[2], spacing_mm[0], spacing_mm[1], spacing_mm[2]
    )
    .into_bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for v in voxels {
        gz.write_all(&v.to_le_bytes()).expect("writing to memory");
    }
    out.extend(gz.finish().expect("writing to memory"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzip_volume_reads_back_with_its_spacing() {
        let voxels: Vec<i16> = (0..4 * 3 * 2).map(|i| i as i16 * 10 - 1000).collect();
        let bytes = encode_nrrd_i16([4, 3, 2], [0.5, 0.5, 5.0], &voxels);
        let v = decode_nrrd(&bytes, Path::new("v.nrrd")).unwrap();
        assert_eq!(v.sizes, [4, 3, 2]);
        assert_eq!(v.spacing_mm, [0.5, 0.5, 5.0]);
        assert_eq!(v.voxels[5], -950.0);
        assert_eq!(v.slice(1)[0], voxels[12] as f32);
    }

    #[test]
    fn bad_headers_and_short_or_huge_data_are_refused_with_the_reason() {
        let voxels = vec![0i16; 8];
        let good = encode_nrrd_i16([2, 2, 2], [1.0, 1.0, 1.0], &voxels);
        let text =
            String::from_utf8_lossy(&good[..good.windows(2).position(|w| w == b"\n\n").unwrap()])
                .to_string();
        let body = &good[text.len() + 2..];
        let with =
            |h: String, body: &[u8]| [h.into_bytes(), b"\n\n".to_vec(), body.to_vec()].concat();
        let err = |bytes: &[u8]| {
            decode_nrrd(bytes, Path::new("x.nrrd"))
                .unwrap_err()
                .to_string()
        };
        assert!(err(b"P5 2 2").contains("not an NRRD"));
        let huge = with(
            text.replace("sizes: 2 2 2", "sizes: 100000 100000 100000"),
            body,
        );
        assert!(err(&huge).contains("more than"), "{}", err(&huge));
        let typed = with(text.replace("type: short", "type: quaternion"), body);
        assert!(err(&typed).contains("`type`"), "{}", err(&typed));
        let short = with(text.clone(), &body[..body.len() / 2]);
        assert!(err(&short).contains("x.nrrd"), "{}", err(&short));
        let raw = with(text.replace("encoding: gzip", "encoding: raw"), &[0u8; 10]);
        assert!(err(&raw).contains("needs 16"), "{}", err(&raw));
    }
}
