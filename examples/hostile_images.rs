//! Writes the lying images of `lesion_search::imaging::lies` to a folder, one file each,
//! plus the full-size bombs of issue 25 (4 million empty DICOM elements, a deflated frame
//! that would inflate to 4.6 GB, a deflated dataset that would inflate to 3.5 GB), for
//! `bench/hostile/bombs.py --dir` to send to a running server.
//! `cargo run --release --example hostile_images -- target/bench/hostile-images`

use std::path::PathBuf;

use lesion_search::imaging::lies;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/bench/hostile-images".into()),
    );
    std::fs::create_dir_all(&out)?;
    let mut samples = lies::lying_images();
    samples.push(lies::Sample {
        name: "element-bomb-4m".into(),
        bytes: lies::element_bomb(4_000_000, false),
    });
    samples.push(lies::Sample {
        name: "deflated-frame-bomb-4600MB".into(),
        bytes: lies::deflated_frame_bomb(4600 << 20),
    });
    samples.push(lies::Sample {
        name: "deflated-dataset-bomb-3500MB".into(),
        bytes: lies::deflated_dataset_bomb(3500 << 20),
    });
    for sample in &samples {
        let name: String = sample
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-._".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        std::fs::write(out.join(name), &sample.bytes)?;
    }
    println!("{} files in {}", samples.len(), out.display());
    Ok(())
}
