//! The bodies of the fuzz targets (`fuzz/`), kept here so that the corpora replay as
//! ordinary tests on the stable toolchain (`tests/fuzz_corpora.rs`) through the very same
//! code. Each function takes arbitrary bytes and must return without panicking, hanging or
//! allocating much more than its input.

use std::io::Cursor;
use std::path::Path;

use crate::dataset::DlInfoReader;
use crate::imaging::{decode_image_within, decode_png16_within, scan_dicom, DecodeLimits};

/// Caps small enough that a fuzzer finds size checks quickly.
fn limits() -> DecodeLimits {
    DecodeLimits::for_slices(2048)
}

/// The DL_info.csv reader: every row, typed or refused.
pub fn dl_info(data: &[u8]) {
    let Ok(reader) = DlInfoReader::from_reader(Cursor::new(data), Path::new("fuzz.csv")) else {
        return;
    };
    for row in reader.take(10_000) {
        let _ = row;
    }
}

/// 16-bit DeepLesion PNG, then the general decoder (8-bit PNG, JPEG).
pub fn png16(data: &[u8]) {
    let _ = decode_png16_within(data, Path::new("fuzz.png"), &limits());
    let _ = decode_image_within(data, Path::new("fuzz.png"), &limits());
}

/// DICOM: the bounded scan, then the whole decode. Inputs without the preamble are tried
/// with one, so the fuzzer reaches the dataset parser from the first byte.
pub fn dicom(data: &[u8]) {
    let _ = scan_dicom(data, &limits());
    if data.len() >= 132 && &data[128..132] == b"DICM" {
        let _ = decode_image_within(data, Path::new("fuzz.dcm"), &limits());
    } else {
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend_from_slice(data);
        let _ = decode_image_within(&file, Path::new("fuzz.dcm"), &limits());
    }
}

/// Lying images (`imaging::lies`): the input as a whole file (DICOM, PNG or JPEG), then as
/// the fragments of a small DICOM whose syntax and geometry its first two bytes pick, so the
/// fuzzer works on codestream headers directly. The fuzz target also holds each input's
/// peak allocation under a ceiling.
pub fn lying_images(data: &[u8]) {
    let _ = decode_image_within(data, Path::new("fuzz.img"), &limits());
    if let Some(file) = crate::imaging::lies::dicom_of_fuzz_input(data) {
        let _ = decode_image_within(&file, Path::new("fuzz.dcm"), &limits());
    }
}

/// The vector index files. The input is split into the description, the vector file and the
/// graph file; each file is tried as it is and with a correct checksum appended, so the
/// fuzzer reaches the structure behind the checksum.
pub fn index_load(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let meta_len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 4);
    let vectors_len =
        usize::from(u16::from_le_bytes([data[2], data[3]])).min(data.len() - 4 - meta_len);
    let rest = &data[4..];
    let (meta, rest) = rest.split_at(meta_len);
    let (vectors, graph) = rest.split_at(vectors_len);
    let with_sum = |body: &[u8]| {
        let mut file = body.to_vec();
        file.extend_from_slice(&u64::from(crc32fast::hash(body)).to_le_bytes());
        file
    };
    let dir = Path::new("fuzz-index");
    for (v, g) in [
        (vectors.to_vec(), graph.to_vec()),
        (with_sum(vectors), with_sum(graph)),
    ] {
        if let Ok(index) = crate::index::vector_index_from_bytes(dir, meta, &v, Some(&g)) {
            // A loaded index must answer a query without panicking.
            let query = vec![0.5f32; index.dim()];
            let _ = index.search(&query, 5, None);
        }
    }
}

/// A generation's record table (`store::RecordTable`), tried as it is and with a correct
/// checksum appended; whatever opens must answer every read without panicking.
pub fn record_table(data: &[u8]) {
    let path = std::env::temp_dir().join(format!("lesion-fuzz-{}.table", std::process::id()));
    let mut summed = data.to_vec();
    summed.extend_from_slice(&u64::from(crc32fast::hash(data)).to_le_bytes());
    for bytes in [data, &summed[..]] {
        if std::fs::write(&path, bytes).is_err() {
            return;
        }
        if let Ok(table) = crate::store::RecordTable::open(&path) {
            let _ = table.all();
            let _ = table.checksum();
            let _ = table.get(0);
            let _ = table.thumbnail(0);
            let _ = table.id_of("000001_01_01_001.png");
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Panics seen anywhere in the process, caught or not: a decoder fenced with
/// `catch_unwind` must not panic on a corpus input either (the fuzzer counts those too).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Replays every input of a committed corpus folder through `harness`, failing on any panic
/// (the corpus-replay tests of both crates).
pub fn replay_corpus(dir: &Path, harness: fn(&[u8])) {
    use std::sync::atomic::Ordering::SeqCst;
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, SeqCst);
            default(info);
        }));
    });
    let mut inputs: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no corpus", dir.display());
    for input in &inputs {
        let bytes = std::fs::read(input).expect("a corpus file");
        let before = PANICS.load(SeqCst);
        let outcome = std::panic::catch_unwind(|| harness(&bytes));
        assert!(outcome.is_ok(), "{} panicked", input.display());
        assert_eq!(
            PANICS.load(SeqCst),
            before,
            "{} panicked inside a fence",
            input.display()
        );
    }
}
