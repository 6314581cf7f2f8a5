//! The bone-lesion measures of `evaluate-model --real`: on a BLDS-format folder this test
//! writes (phantom volumes, a table in DICOM patient coordinates), and on BLDS' five real
//! volumes and seven lesions (skipped when `../shared/data/blds` is absent).

use std::path::{Path, PathBuf};

use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::eval::bone_lesions::{
    bone_lesion_markdown, evaluate_bone_lesions, load_bone_lesions, read_bone_lesion_table,
    BONE_HU, BONE_LESION_TABLE, NORMAL_BOXES_PER_LESION,
};
use lesion_search::eval::real_ct::PERTURBATIONS;

/// A 1 mm float32 NIfTI cube stored as BLDS stores it (i towards the left, j towards the
/// back: sform diag(-1, -1, 1)), with `origin` the world (RAS) position of voxel 0.
fn nifti(side: usize, origin: [f32; 3], voxel: impl Fn(usize, usize, usize) -> f32) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    let put =
        |b: &mut Vec<u8>, at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut b, 0, &348i32.to_le_bytes());
    for (i, d) in [3i16, side as i16, side as i16, side as i16, 1, 1, 1, 1]
        .iter()
        .enumerate()
    {
        put(&mut b, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut b, 70, &16i16.to_le_bytes());
    put(&mut b, 72, &32i16.to_le_bytes());
    for i in 0..4 {
        put(&mut b, 76 + 4 * i, &1f32.to_le_bytes());
    }
    put(&mut b, 108, &352f32.to_le_bytes());
    put(&mut b, 254, &1i16.to_le_bytes());
    let rows = [
        [-1.0, 0.0, 0.0, origin[0]],
        [0.0, -1.0, 0.0, origin[1]],
        [0.0, 0.0, 1.0, origin[2]],
    ];
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut b, 280 + 16 * r + 4 * c, &f32::to_le_bytes(*v));
        }
    }
    put(&mut b, 344, b"n+1\0");
    for k in 0..side {
        for j in 0..side {
            for i in 0..side {
                b.extend(voxel(i, j, k).to_le_bytes());
            }
        }
    }
    b
}

const SIDE: usize = 64;

/// The LPS position (mm) of voxel (i, j, k) in a phantom with `origin`.
fn lps_of(origin: [f32; 3], [i, j, k]: [f32; 3]) -> [f32; 3] {
    let ras = [origin[0] - i, origin[1] - j, origin[2] + k];
    [-ras[0], -ras[1], ras[2]]
}

/// A BLDS-format folder of phantoms: soft tissue with a bone column (300 HU) down the middle
/// of each volume, and dense spheres (1200 HU, radius 5 mm) in the bone as the lesions: one
/// in `a.nii.gz` and two in `b.nii.gz`, `c.nii` (stored raw).
fn phantom_folder() -> (tempfile::TempDir, Vec<[f32; 3]>) {
    let dir = tempfile::tempdir().unwrap();
    let volumes = [
        ("a.nii.gz", [20.0, 100.0, -300.0], vec![[32.0, 32.0, 20.0]]),
        (
            "b.nii.gz",
            [-15.0, 40.0, -50.0],
            vec![[30.0, 34.0, 12.0], [33.0, 30.0, 50.0]],
        ),
        ("c.nii", [5.0, -60.0, 120.0], vec![[32.0, 31.0, 30.0]]),
    ];
    let mut table = String::from("image_path,class,x,y,z,width,height,depth\n");
    let mut centres = Vec::new();
    for (name, origin, lesions) in &volumes {
        let bytes = nifti(SIDE, *origin, |i, j, k| {
            let (x, y, z) = (i as f32, j as f32, k as f32);
            let in_lesion = lesions.iter().any(|c| {
                ((x - c[0]).powi(2) + (y - c[1]).powi(2) + (z - c[2]).powi(2)).sqrt() < 5.0
            });
            let in_bone = (x - 32.0).hypot(y - 32.0) < 14.0;
            // A little texture so that the views of one place differ from another's.
            let texture = ((x * 0.7 + y * 1.3 + z * 0.9).sin() * 30.0).round();
            if in_lesion {
                1200.0
            } else if in_bone {
                300.0 + texture
            } else {
                40.0 + texture
            }
        });
        let bytes = if name.ends_with(".gz") {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        } else {
            bytes
        };
        std::fs::write(dir.path().join(name), bytes).unwrap();
        for c in lesions {
            let [x, y, z] = lps_of(*origin, *c);
            table.push_str(&format!("{name},osteoma,{x},{y},{z},10,10,10\n"));
            centres.push(*c);
        }
    }
    std::fs::write(dir.path().join(BONE_LESION_TABLE), table).unwrap();
    (dir, centres)
}

#[test]
fn lesions_land_on_their_voxels_and_normal_bone_is_bone_clear_of_them() {
    let (dir, centres) = phantom_folder();
    let set = load_bone_lesions(dir.path()).unwrap();
    assert_eq!(set.volumes.len(), 3);
    assert_eq!(set.lesions.len(), 4);
    for (placed, want) in set.lesions.iter().zip(&centres) {
        for a in 0..3 {
            assert!(
                (placed.centre[a] - want[a] as f64).abs() < 1e-3,
                "{placed:?} {want:?}"
            );
            assert!((placed.half[a] - 5.0).abs() < 1e-3, "{placed:?}");
        }
    }
    // Every lesion found its normal-bone boxes, each on bone and clear of every lesion.
    for lesion in 0..4 {
        let count = set.normal_bone.iter().filter(|(l, _)| *l == lesion).count();
        assert_eq!(count, NORMAL_BOXES_PER_LESION, "lesion {lesion}");
    }
    for (lesion, b) in &set.normal_bone {
        assert_eq!(b.half, set.lesions[*lesion].half);
        let volume = &set.volumes[b.volume].1;
        let [i, j, k] = b.centre.map(|v| v as usize);
        let hu = volume.volume.voxels[(k * SIDE + j) * SIDE + i];
        assert!(BONE_HU.contains(&hu) && hu < 1000.0, "{b:?}: {hu}");
        for other in set.lesions.iter().filter(|l| l.volume == b.volume) {
            let apart = (0..3).any(|a| (b.centre[a] - other.centre[a]).abs() >= 15.0);
            assert!(apart, "{b:?} overlaps {other:?}");
        }
    }
    // The same boxes on every run.
    assert_eq!(
        load_bone_lesions(dir.path()).unwrap().normal_bone,
        set.normal_bone
    );
}

#[test]
fn every_lesion_is_queried_under_every_perturbation_and_counted() {
    let (dir, _) = phantom_folder();
    let set = load_bone_lesions(dir.path()).unwrap();
    let model = bundled_lesion_cnn().unwrap();
    let f = evaluate_bone_lesions("lesion-cnn", &model, &set).unwrap();
    assert_eq!((f.volumes, f.lesions), (3, 4));
    assert_eq!(f.normal_bone_boxes, 4 * NORMAL_BOXES_PER_LESION);
    assert_eq!(f.reidentification.queries, 4 * PERTURBATIONS.len());
    assert_eq!(
        f.reidentification_among_normal_bone.queries,
        4 * PERTURBATIONS.len()
    );
    assert!(f.reidentification_among_normal_bone.rank_1 <= f.reidentification.rank_1);
    assert_eq!(
        f.reidentification_by_perturbation.len(),
        PERTURBATIONS.len()
    );
    // Every view has a lesion in another volume to be scored against.
    assert_eq!((f.auc_lesions, f.auc_normal_bone), (4, 16));
    let auc = f.lesion_vs_normal_bone_auc.unwrap();
    assert!((0.0..=1.0).contains(&auc));
    // Bright spheres are far likelier to each other than to plain bone.
    assert!(auc > 0.7, "{f:?}");
    let table = bone_lesion_markdown(&[f]);
    assert!(table.contains("| `lesion-cnn` | 3 | 4 | 16 |"), "{table}");
}

#[test]
fn bad_tables_are_refused_naming_the_line_and_column() {
    let (dir, _) = phantom_folder();
    let table = dir.path().join(BONE_LESION_TABLE);
    let good = std::fs::read_to_string(&table).unwrap();
    let refused = |text: &str| {
        std::fs::write(&table, text).unwrap();
        load_bone_lesions(dir.path()).unwrap_err().to_string()
    };
    let message = refused(&good.replacen("depth", "deep", 1));
    assert!(message.contains("missing column `depth`"), "{message}");
    let message = refused(&good.replacen(",10,10,10", ",10,-4,ten", 1));
    assert!(
        message.contains(":2: height") && message.contains(":2: depth"),
        "{message}"
    );
    let message = refused(&good.replacen("a.nii.gz", "../a.nii.gz", 1));
    assert!(message.contains("image_path"), "{message}");
    // A centre 100 mm off the volume.
    let first = good.lines().nth(1).unwrap();
    let fields: Vec<&str> = first.split(',').collect();
    let moved = format!(
        "{},{},{},{}",
        fields[..2].join(","),
        fields[2].parse::<f32>().unwrap() + 100.0,
        fields[3],
        fields[4..].join(",")
    );
    let message = refused(&good.replacen(first, &moved, 1));
    assert!(message.contains("outside a.nii.gz"), "{message}");
    std::fs::write(&table, "image_path,class,x,y,z,width,height,depth\n").unwrap();
    assert!(load_bone_lesions(dir.path())
        .unwrap_err()
        .to_string()
        .contains("no lesion"));
}

/// `../shared/data/blds`, or `None` with a message saying the test skips.
fn blds(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/blds");
    if dir.join(BONE_LESION_TABLE).is_file() {
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
fn the_real_blds_lesions_lie_on_bone_and_are_measured() {
    let Some(dir) = blds("the_real_blds_lesions_lie_on_bone_and_are_measured") else {
        return;
    };
    let rows = read_bone_lesion_table(&dir.join(BONE_LESION_TABLE)).unwrap();
    assert_eq!(rows.len(), 7);
    let set = load_bone_lesions(&dir).unwrap();
    assert_eq!((set.volumes.len(), set.lesions.len()), (5, 7));
    let bone_fraction =
        |values: &[f32]| values.iter().filter(|v| **v > 150.0).count() as f32 / values.len() as f32;
    for (row, lesion) in set.rows.iter().zip(&set.lesions) {
        let volume = &set.volumes[lesion.volume].1;
        // 1 mm voxels: the box's half sides in voxels are half its sides in mm.
        for a in 0..3 {
            assert!((lesion.half[a] - row.size_mm[a] / 2.0).abs() < 1e-3);
        }
        let mut inside = Vec::new();
        let range = |a: usize| {
            let lo = (lesion.centre[a] - lesion.half[a]).ceil().max(0.0) as usize;
            let hi = (lesion.centre[a] + lesion.half[a]).floor().min(95.0) as usize;
            lo..=hi
        };
        for k in range(2) {
            for j in range(1) {
                for i in range(0) {
                    inside.push(volume.volume.voxels[(k * 96 + j) * 96 + i]);
                }
            }
        }
        inside.sort_by(f32::total_cmp);
        // Where LPS was read as RAS the boxes would fall off the volumes or on soft tissue:
        // each box holds dense bone, and more of it is bone than of its volume.
        let p90 = inside[inside.len() * 9 / 10];
        assert!(p90 > 300.0, "line {}: 90th percentile {p90} HU", row.line);
        assert!(
            bone_fraction(&inside) > bone_fraction(&volume.volume.voxels),
            "line {}",
            row.line
        );
    }
    assert!(set.normal_bone.len() >= 7, "{}", set.normal_bone.len());
    let model = bundled_lesion_cnn().unwrap();
    let f = evaluate_bone_lesions("lesion-cnn", &model, &set).unwrap();
    eprintln!("{}", bone_lesion_markdown(std::slice::from_ref(&f)));
    assert_eq!(f.reidentification.queries, 42);
    assert!(f.lesion_vs_normal_bone_auc.is_some());
}
