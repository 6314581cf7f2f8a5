//! The NIfTI-1 reader: on files this test writes (both byte orders, every datatype it
//! takes, sform against qform against pixdim, scaling, truncated and lying headers, gzip
//! streams that inflate past what the header needs) and on BLDS' five real CT volumes
//! (skipped when `../shared/data/blds` is absent).

use std::io::Write;
use std::path::{Path, PathBuf};

use lesion_search::imaging::{decode_nifti, load_nifti, AffineSource, NiftiDatatype};

/// What a test file's header says; [`Header::plain`] is a truthful little-endian int16
/// volume with only `pixdim`.
#[derive(Clone)]
struct Header {
    little: bool,
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 3],
    qoffset: [f32; 3],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
    sizeof_hdr: i32,
}

impl Header {
    fn plain(sizes: [i16; 3]) -> Header {
        Header {
            little: true,
            dim: [3, sizes[0], sizes[1], sizes[2], 1, 1, 1, 1],
            datatype: 4,
            bitpix: 16,
            pixdim: [1.0, 0.8, 0.9, 2.5, 0.0, 0.0, 0.0, 0.0],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            magic: *b"n+1\0",
            sizeof_hdr: 348,
        }
    }

    /// The 348 header bytes and the 4-byte extension flag.
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 352];
        let little = self.little;
        let put = |b: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes)
        };
        let i16b = |v: i16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let f32b = |v: f32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let size = if little {
            self.sizeof_hdr.to_le_bytes()
        } else {
            self.sizeof_hdr.to_be_bytes()
        };
        put(&mut b, 0, &size);
        for (i, d) in self.dim.iter().enumerate() {
            put(&mut b, 40 + 2 * i, &i16b(*d));
        }
        put(&mut b, 70, &i16b(self.datatype));
        put(&mut b, 72, &i16b(self.bitpix));
        for (i, p) in self.pixdim.iter().enumerate() {
            put(&mut b, 76 + 4 * i, &f32b(*p));
        }
        put(&mut b, 108, &f32b(self.vox_offset));
        put(&mut b, 112, &f32b(self.scl_slope));
        put(&mut b, 116, &f32b(self.scl_inter));
        b[123] = 2; // mm
        put(&mut b, 252, &i16b(self.qform_code));
        put(&mut b, 254, &i16b(self.sform_code));
        for (i, q) in self.quatern.iter().chain(&self.qoffset).enumerate() {
            put(&mut b, 256 + 4 * i, &f32b(*q));
        }
        for (r, row) in self.srow.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                put(&mut b, 280 + 16 * r + 4 * c, &f32b(*v));
            }
        }
        put(&mut b, 344, &self.magic);
        b
    }
}

/// A whole file: header, then samples `values` encoded as the header's datatype (int16 for
/// one the reader refuses).
fn file(header: &Header, values: &[f64]) -> Vec<u8> {
    let mut out = header.bytes();
    out.resize(header.vox_offset.max(352.0) as usize, 0);
    let little = header.little;
    macro_rules! push {
        ($t:ty) => {
            for v in values {
                let x = *v as $t;
                out.extend(if little {
                    x.to_le_bytes()
                } else {
                    x.to_be_bytes()
                });
            }
        };
    }
    match header.datatype {
        2 => push!(u8),
        8 => push!(i32),
        16 => push!(f32),
        64 => push!(f64),
        // A datatype the reader refuses: any samples will do.
        _ => push!(i16),
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn error(bytes: &[u8]) -> String {
    decode_nifti(bytes, Path::new("t.nii"))
        .unwrap_err()
        .to_string()
}

/// Ramp values `scale * n - 1000` for the n-th voxel.
fn ramp(count: usize, scale: f64) -> Vec<f64> {
    (0..count).map(|n| n as f64 * scale - 1000.0).collect()
}

#[test]
fn both_byte_orders_and_every_datatype_read_back_with_scaling() {
    for little in [true, false] {
        for (datatype, bitpix) in [(2i16, 8i16), (4, 16), (8, 32), (16, 32), (64, 64)] {
            let mut h = Header::plain([4, 3, 2]);
            h.little = little;
            h.datatype = datatype;
            h.bitpix = bitpix;
            // uint8 cannot hold the ramp's negatives: scale it into place instead.
            let values: Vec<f64> = if datatype == 2 {
                (0..24).map(f64::from).collect()
            } else {
                ramp(24, 7.0)
            };
            let v = decode_nifti(&file(&h, &values), Path::new("t.nii")).unwrap();
            assert_eq!(v.big_endian, !little);
            assert_eq!(v.datatype.code(), datatype);
            assert_eq!(v.sizes(), [4, 3, 2]);
            assert_eq!(v.volume.voxels.len(), 24);
            for (got, want) in v.volume.voxels.iter().zip(&values) {
                assert_eq!(*got as f64, *want, "datatype {datatype}, little {little}");
            }
        }
    }
    // scl_slope and scl_inter: stored int16 0..23 read as 2 * v - 1024.
    let mut h = Header::plain([4, 3, 2]);
    h.scl_slope = 2.0;
    h.scl_inter = -1024.0;
    let v = decode_nifti(
        &file(&h, &(0..24).map(f64::from).collect::<Vec<_>>()),
        Path::new("t.nii"),
    )
    .unwrap();
    assert_eq!(v.volume.voxels[0], -1024.0);
    assert_eq!(v.volume.voxels[23], 2.0 * 23.0 - 1024.0);
    assert_eq!(v.datatype, NiftiDatatype::I16);
}

#[test]
fn sform_is_preferred_then_the_quaternion_then_pixdim() {
    let values = ramp(4 * 3 * 2, 1.0);
    // Only pixdim: a diagonal mapping, no offset.
    let plain = Header::plain([4, 3, 2]);
    let v = decode_nifti(&file(&plain, &values), Path::new("t.nii")).unwrap();
    assert_eq!(v.affine_source, AffineSource::Pixdim);
    assert_eq!(v.spacing_mm(), [0.8, 0.9, 2.5]);
    assert_close(v.voxel_to_world([1.0, 2.0, 1.0]), [0.8, 1.8, 2.5]);

    // The quaternion (0, 0, 1) turns x and y around (the usual radiological storage), with
    // qfac -1 flipping k.
    let mut q = plain.clone();
    q.qform_code = 1;
    q.quatern = [0.0, 0.0, 1.0];
    q.qoffset = [10.0, 20.0, -30.0];
    q.pixdim[0] = -1.0;
    for little in [true, false] {
        q.little = little;
        let v = decode_nifti(&file(&q, &values), Path::new("t.nii")).unwrap();
        assert_eq!(v.affine_source, AffineSource::Qform { code: 1 });
        assert_close(
            v.voxel_to_world([1.0, 2.0, 1.0]),
            [10.0 - 0.8, 20.0 - 1.8, -30.0 - 2.5],
        );
        assert_eq!(v.spacing_mm(), [0.8, 0.9, 2.5]);
    }

    // An sform beside that qform wins; an oblique one is inverted exactly.
    let mut s = q.clone();
    s.sform_code = 2;
    s.srow = [
        [0.7, 0.1, 0.0, -5.0],
        [-0.1, 0.7, 0.2, 6.0],
        [0.0, 0.0, 3.0, 100.0],
    ];
    for little in [true, false] {
        s.little = little;
        let v = decode_nifti(&file(&s, &values), Path::new("t.nii")).unwrap();
        assert_eq!(v.affine_source, AffineSource::Sform { code: 2 });
        assert_close(v.voxel_to_world([0.0, 0.0, 1.0]), [-5.0, 6.2, 103.0]);
        let voxel = [1.5, 2.25, 0.5];
        assert_close(v.world_to_voxel(v.voxel_to_world(voxel)), voxel);
        assert!(v.planes_are_axial());
    }
}

fn assert_close(got: [f64; 3], want: [f64; 3]) {
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{got:?} against {want:?}");
    }
}

#[test]
fn gzip_files_read_as_their_raw_bytes_and_4d_of_one_volume_too() {
    let mut h = Header::plain([5, 4, 3]);
    h.dim[0] = 4; // a 4-D series of one volume
    let values = ramp(60, 3.0);
    let raw = file(&h, &values);
    let from_raw = decode_nifti(&raw, Path::new("t.nii")).unwrap();
    let from_gzip = decode_nifti(&gzip(&raw), Path::new("t.nii.gz")).unwrap();
    assert_eq!(from_raw, from_gzip);
    assert_eq!(from_gzip.sizes(), [5, 4, 3]);

    // Written to disk and read by path, with an extension before vox_offset.
    let mut extended = h.clone();
    extended.vox_offset = 368.0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.nii.gz");
    std::fs::write(&path, gzip(&file(&extended, &values))).unwrap();
    assert_eq!(load_nifti(&path).unwrap().volume, from_raw.volume);

    // A 2-D image is a volume of one slice.
    let mut flat = Header::plain([5, 4, 1]);
    flat.dim[0] = 2;
    let v = decode_nifti(&file(&flat, &ramp(20, 1.0)), Path::new("t.nii")).unwrap();
    assert_eq!(v.sizes(), [5, 4, 1]);
}

#[test]
fn axial_slices_carry_spacing_and_z_and_neighbours_follow_the_patch_convention() {
    let mut h = Header::plain([4, 3, 5]);
    h.sform_code = 1;
    // k runs towards the head: one slice towards the feet is k - 1.
    h.srow = [
        [-0.8, 0.0, 0.0, 0.0],
        [0.0, -0.9, 0.0, 0.0],
        [0.0, 0.0, 2.0, -50.0],
    ];
    let values = ramp(60, 1.0);
    let v = decode_nifti(&file(&h, &values), Path::new("t.nii")).unwrap();
    let slice = v.axial_slice(2).unwrap();
    assert_eq!(slice.index, 2);
    assert!((slice.z_mm - -46.0).abs() < 1e-9, "{}", slice.z_mm);
    assert_eq!((slice.image.width, slice.image.height), (4, 3));
    assert_eq!(slice.image.spacing_mm, Some((0.8, 0.9)));
    assert_eq!(slice.image.pixels[0], values[24] as f32);
    let neighbours = v.axial_neighbours(2, 1).unwrap();
    let offsets: Vec<i32> = neighbours.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [-1, 1]);
    // Offset +1 (towards the feet) is plane 1, offset -1 plane 3.
    assert_eq!(neighbours[1].1.pixels[0], values[12] as f32);
    assert_eq!(neighbours[0].1.pixels[0], values[36] as f32);
    // At the volume's end only the neighbours that exist come back.
    assert_eq!(v.axial_neighbours(0, 2).unwrap().len(), 2);
    assert!(v
        .axial_slice(5)
        .unwrap_err()
        .to_string()
        .contains("outside"));

    // A sagittal stack (k along x) is not read as axial slices.
    let mut sagittal = h.clone();
    sagittal.srow = [
        [0.0, 0.0, 2.0, 0.0],
        [0.0, -0.9, 0.0, 0.0],
        [-0.8, 0.0, 0.0, 0.0],
    ];
    let v = decode_nifti(&file(&sagittal, &values), Path::new("t.nii")).unwrap();
    assert!(!v.planes_are_axial());
    assert!(v
        .axial_slice(0)
        .unwrap_err()
        .to_string()
        .contains("not axial"));
}

/// One lie told to a truthful header.
type Change = fn(&mut Header);

#[test]
fn headers_this_reader_cannot_honour_are_refused_naming_the_field() {
    let values = ramp(24, 1.0);
    let good = Header::plain([4, 3, 2]);
    let cases: &[(&str, Change)] = &[
        ("`sizeof_hdr`", |h: &mut Header| h.sizeof_hdr = 1000),
        ("NIfTI-2", |h: &mut Header| h.sizeof_hdr = 540),
        ("`magic`", |h: &mut Header| h.magic = *b"ni1\0"),
        ("`magic`", |h: &mut Header| h.magic = *b"xyz\0"),
        ("`datatype`", |h: &mut Header| h.datatype = 128),
        ("`bitpix`", |h: &mut Header| h.bitpix = 8),
        ("`dim`", |h: &mut Header| h.dim[0] = 9),
        ("`dim`", |h: &mut Header| h.dim[2] = -3),
        ("`dim`", |h: &mut Header| (h.dim[0], h.dim[4]) = (4, 3)),
        ("`vox_offset`", |h: &mut Header| h.vox_offset = 100.0),
        ("`vox_offset`", |h: &mut Header| h.vox_offset = 352.5),
        ("`pixdim[1]`", |h: &mut Header| h.pixdim[1] = 0.0),
        ("`pixdim[3]`", |h: &mut Header| h.pixdim[3] = f32::NAN),
        ("`scl_inter`", |h: &mut Header| {
            (h.scl_slope, h.scl_inter) = (2.0, f32::NAN)
        }),
        ("`quatern_b`", |h: &mut Header| {
            (h.qform_code, h.quatern) = (1, [1.0, 1.0, 1.0])
        }),
        ("`srow_y`", |h: &mut Header| {
            h.sform_code = 1;
            h.srow = [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, f32::INFINITY, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
            ];
        }),
        ("`srow_x`", |h: &mut Header| {
            // Singular: every voxel on one plane.
            h.sform_code = 1;
            h.srow = [
                [1.0, 0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
            ];
        }),
    ];
    for (field, change) in cases {
        let mut h = good.clone();
        change(&mut h);
        for bytes in [file(&h, &values), gzip(&file(&h, &values))] {
            let message = error(&bytes);
            assert!(
                message.starts_with("t.nii: NIfTI header field ") && message.contains(field),
                "{field}: {message}"
            );
        }
    }
    assert!(error(b"tiny").contains("`sizeof_hdr`"));
    assert!(error(&gzip(b"tiny")).contains("`sizeof_hdr`"));
    // NaN samples are no intensity.
    let mut floats = good.clone();
    (floats.datatype, floats.bitpix) = (16, 32);
    let mut nan = values.clone();
    nan[5] = f64::NAN;
    assert!(error(&file(&floats, &nan)).contains("voxel (1, 1, 0)"));
}

#[test]
fn truncated_files_and_lying_sizes_are_refused_before_allocating() {
    let h = Header::plain([4, 3, 2]);
    let whole = file(&h, &ramp(24, 1.0));
    // Cut inside the samples: `dim` (or the file) is at fault, in raw and gzip alike.
    for bytes in [
        whole[..whole.len() - 5].to_vec(),
        gzip(&whole[..whole.len() - 5]),
    ] {
        let message = error(&bytes);
        assert!(
            message.contains("`dim`") && message.contains("truncated"),
            "{message}"
        );
    }
    // Cut before vox_offset.
    let mut far = h.clone();
    far.vox_offset = 4096.0;
    let message = error(&far.bytes());
    assert!(message.contains("`vox_offset`"), "{message}");

    // A header claiming 512 x 512 x 1000 int16 (500 MB) in a 1 kB file.
    let liar = Header::plain([512, 512, 1000]);
    let small = file(&liar, &ramp(300, 1.0));
    let message = error(&small);
    assert!(
        message.contains("`dim`") && message.contains("[512, 512, 1000]"),
        "{message}"
    );
    // Gzip: the claim is past what the stream could ever inflate to, so nothing is inflated.
    let message = error(&gzip(&small));
    assert!(message.contains("inflates to at most"), "{message}");
    // Past the reader's voxel cap outright.
    let huge = Header::plain([30000, 30000, 30000]);
    assert!(error(&file(&huge, &[])).contains("more than"));
}

#[test]
fn a_gzip_stream_that_inflates_far_past_the_header_is_read_only_as_far_as_needed() {
    let h = Header::plain([8, 8, 8]);
    let mut bytes = file(&h, &ramp(512, 1.0));
    // 16 MB of zeros after the samples: a bomb for a reader that inflates it all.
    bytes.resize(bytes.len() + (16 << 20), 0);
    let bomb = gzip(&bytes);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let v = decode_nifti(&bomb, Path::new("bomb.nii.gz")).unwrap();
    assert_eq!(v.volume.voxels.len(), 512);
    assert_eq!(v.volume.voxels[511], 511.0 - 1000.0);
}

/// `../shared/data/blds`, or `None` with a message saying the test skips.
fn blds(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/blds");
    if dir.join("image_bone_lesions.csv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: the real BLDS volumes are not at {}",
            dir.display()
        );
        None
    }
}

#[test]
fn the_five_real_blds_volumes_read_as_1mm_hounsfield_cubes() {
    let Some(dir) = blds("the_five_real_blds_volumes_read_as_1mm_hounsfield_cubes") else {
        return;
    };
    for n in 1..=5 {
        let path = dir.join(format!("{n}.nii.gz"));
        let v = load_nifti(&path).unwrap();
        assert_eq!(v.sizes(), [96, 96, 96], "{n}");
        assert_eq!(v.spacing_mm(), [1.0, 1.0, 1.0], "{n}");
        assert_eq!(v.datatype, NiftiDatatype::F32);
        assert_eq!(v.affine_source, AffineSource::Sform { code: 1 });
        assert!(!v.big_endian);
        assert!(v.planes_are_axial());
        // Stored radiologically: i towards the patient's left, j towards the back.
        assert!(v.affine[0][0] < 0.0 && v.affine[1][1] < 0.0 && v.affine[2][2] > 0.0);
        let (low, high) = v
            .volume
            .voxels
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        // Hounsfield units: air or padding at the bottom, dense bone at the top.
        assert!((-3100.0..=-500.0).contains(&low), "{n}: {low}");
        assert!((500.0..=4000.0).contains(&high), "{n}: {high}");
        let slice = v.axial_slice(48).unwrap();
        assert_eq!(slice.image.spacing_mm, Some((1.0, 1.0)));
        assert!((slice.z_mm - v.voxel_to_world([47.5, 47.5, 48.0])[2]).abs() < 1e-9);
    }
}

#[test]
fn devices_and_folders_are_refused_before_a_byte_is_read() {
    // /dev/zero would read forever; a folder is not a volume.
    for path in ["/dev/zero", "/tmp"] {
        let path = Path::new(path);
        if !path.exists() {
            continue;
        }
        let message = load_nifti(path).unwrap_err().to_string();
        assert!(message.contains("not a regular file"), "{message}");
    }
}
