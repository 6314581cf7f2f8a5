//! Writes the starting inputs of the fuzz corpora that are built by code (`fuzz/README.md`):
//! generated PNG slices, a generated DL_info table and small vector index files.
//! `cargo run --example fuzz_seeds -- fuzz/corpus`

use std::path::PathBuf;

use lesion_search::imaging::encode_png16;
use lesion_search::index::{save_vector_index, FlatIndex, GraphParams, VectorIndex};
use lesion_search::synth::{generate, SynthOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );

    let hu: Vec<f32> = (0..64).map(|i| i as f32 * 30.0 - 1000.0).collect();
    std::fs::write(out.join("png16/slice-8x8.png"), encode_png16(8, 8, &hu))?;
    let hu: Vec<f32> = (0..32 * 24)
        .map(|i| (i % 97) as f32 * 11.0 - 500.0)
        .collect();
    std::fs::write(out.join("png16/slice-32x24.png"), encode_png16(32, 24, &hu))?;

    let archive = std::env::temp_dir().join(format!("fuzz-seed-archive-{}", std::process::id()));
    std::fs::create_dir_all(&archive)?;
    generate(
        &archive,
        &SynthOptions {
            lesions: 6,
            seed: 3,
            ..Default::default()
        },
        &|_, _| {},
    )?;
    let table = std::fs::read_to_string(archive.join("DL_info.csv"))?;
    std::fs::write(out.join("dl_info/generated.csv"), &table)?;
    let first_rows: Vec<&str> = table.lines().take(2).collect();
    std::fs::write(out.join("dl_info/one-row.csv"), first_rows.join("\n"))?;
    std::fs::remove_dir_all(&archive)?;

    for (name, count, dim, graph) in [("exact", 5, 4, false), ("graph", 40, 8, true)] {
        let data: Vec<f32> = (0..count * dim)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
            .collect();
        let flat = FlatIndex::from_data(dim, data);
        let index = if graph {
            VectorIndex::with_graph(
                flat,
                GraphParams {
                    m: 4,
                    ef_construction: 16,
                    ..GraphParams::default()
                },
            )
            .0
        } else {
            VectorIndex::exact(flat)
        };
        let dir =
            std::env::temp_dir().join(format!("fuzz-seed-index-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        save_vector_index(&index, &dir)?;
        let meta = std::fs::read(dir.join("vectors.json"))?;
        let strip = |file: Vec<u8>| file[..file.len().saturating_sub(8)].to_vec();
        let vectors = strip(std::fs::read(dir.join("vectors.bin"))?);
        let graph = std::fs::read(dir.join("graph.bin"))
            .map(strip)
            .unwrap_or_default();
        let mut seed = Vec::new();
        seed.extend_from_slice(&(meta.len() as u16).to_le_bytes());
        seed.extend_from_slice(&(vectors.len() as u16).to_le_bytes());
        seed.extend(meta);
        seed.extend(vectors);
        seed.extend(graph);
        std::fs::write(out.join(format!("index_load/{name}")), seed)?;
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
