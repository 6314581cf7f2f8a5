//! Index generations: build, open, verify, resume, lock.

mod common;

use lesion_search::archive::{add, build, delete, AddOptions, Archive, BuildOptions, WriteLock};
use lesion_search::embed::{bundled_lesion_cnn, Embedder};
use lesion_search::index::GraphParams;

fn options<'a>(dataset: &std::path::Path, model: &'a dyn Embedder) -> BuildOptions<'a> {
    BuildOptions {
        dataset: dataset.to_path_buf(),
        reports: None,
        model,
        graph: GraphParams::default(),
        labels: None,
    }
}

#[test]
fn a_built_index_verifies_and_answers_by_vector_and_text() {
    let archive = common::synth_archive(40, 41, true);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = build(dir.path(), &options(archive.path(), &model), &|_| {}).unwrap();
    assert_eq!((summary.generation, summary.lesions), (1, 40));
    let index = Archive::open(dir.path()).unwrap();
    assert!(index.verify().unwrap().is_empty());
    assert!(index.check_model(&model).is_ok());
    // A lesion's own vector finds it first.
    let (hits, _) = index.vectors.search(index.vectors.vector(7), 3, None);
    assert_eq!(hits[0].id, 7);
    let stored = index.records.get(7).unwrap().unwrap();
    assert_eq!(index.records.id_of(&stored.key).unwrap(), Some(7));
    assert!(index
        .records
        .thumbnail(7)
        .unwrap()
        .unwrap()
        .starts_with(b"\x89PNG"));
    let (text_hits, _) = index.text.search("mm", 5, &|_| true).unwrap();
    assert_eq!(text_hits.len(), 5);
}

#[test]
fn an_interrupted_build_leaves_the_last_generation_and_resumes() {
    let archive = common::synth_archive(30, 42, true);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &options(archive.path(), &model), &|_| {}).unwrap();
    let first = Archive::open(dir.path()).unwrap();
    let ten: Vec<u8> = first.vectors.flat().data()[..10 * model.card().output_dim]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    drop(first);
    // What a build killed after ten embeddings leaves: a staging file and a partial generation.
    let staging = dir.path().join("staging");
    let sha = lesion_search::embed::sha256_file(&archive.path().join("DL_info.csv")).unwrap();
    let name = format!(
        "embeddings-{}-{}.f32",
        &model.card().weights_sha256[..12],
        &sha[..12]
    );
    std::fs::write(staging.join(name), &ten).unwrap();
    std::fs::create_dir_all(dir.path().join("gen-000002.partial/records")).unwrap();
    assert_eq!(
        Archive::open(dir.path()).unwrap().manifest.generation,
        1,
        "the last good generation stays readable"
    );

    let summary = build(dir.path(), &options(archive.path(), &model), &|_| {}).unwrap();
    assert_eq!((summary.generation, summary.resumed_embeddings), (2, 10));
    let second = Archive::open(dir.path()).unwrap();
    assert!(second.verify().unwrap().is_empty());
}

#[test]
fn a_second_writer_is_refused_and_tampering_is_reported() {
    let archive = common::synth_archive(20, 43, true);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &options(archive.path(), &model), &|_| {}).unwrap();
    let lock = WriteLock::acquire(dir.path()).unwrap();
    let err = build(dir.path(), &options(archive.path(), &model), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another writer"), "{err}");
    drop(lock);

    let index = Archive::open(dir.path()).unwrap();
    let vectors = index.dir.join("vectors/vectors.bin");
    drop(index);
    let mut bytes = std::fs::read(&vectors).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&vectors, bytes).unwrap();
    // One flipped bit in a vector: the file's own checksum refuses it at open, by name.
    let err = Archive::open(dir.path())
        .err()
        .expect("a corrupt vector file is refused");
    let err = err.to_string();
    assert!(
        err.contains("vectors.bin") && err.contains("checksum mismatch"),
        "{err}"
    );
}

#[test]
fn lesanet_labels_become_searchable_tags_and_a_short_table_is_refused() {
    let archive = common::synth_archive(12, 44, true);
    let model = bundled_lesion_cnn().unwrap();
    let labels = archive.path().join("labels.json");
    std::fs::write(
        &labels,
        r#"{"term_list": ["chest", "pneumatocele", "lung"], "train_lesion_idxs": [3], "train_relevant_labels": [[1, 2, 1]],
            "val_lesion_idxs": [5], "val_relevant_labels": [[0]], "test_lesion_idxs": [], "test_relevant_labels": []}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(archive.path(), &model);
    o.labels = Some(labels.clone());
    build(dir.path(), &o, &|_| {}).unwrap();
    let index = Archive::open(dir.path()).unwrap();
    assert_eq!(
        index.records.get(3).unwrap().unwrap().tags,
        ["pneumatocele", "lung"]
    );
    let (hits, _) = index.text.search("pneumatocele", 5, &|_| true).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [3]);

    std::fs::write(
        &labels,
        r#"{"term_list": ["chest"], "train_lesion_idxs": [24120], "train_relevant_labels": [[0]]}"#,
    )
    .unwrap();
    let other = tempfile::tempdir().unwrap();
    let err = build(other.path(), &o, &|_| {}).unwrap_err().to_string();
    assert!(
        err.contains("refers to row 24120") && err.contains("has 12 rows"),
        "{err}"
    );
}

#[test]
fn real_lesanet_labels_are_refused_against_a_partial_table() {
    let Some(shared) =
        common::shared_data("real_lesanet_labels_are_refused_against_a_partial_table")
    else {
        return;
    };
    let dataset = tempfile::tempdir().unwrap();
    std::fs::copy(
        shared.join("deeplesion/DL_info_partial.csv"),
        dataset.path().join("DL_info.csv"),
    )
    .unwrap();
    let model = bundled_lesion_cnn().unwrap();
    let mut o = options(dataset.path(), &model);
    o.labels = Some(shared.join("lesanet/text_mined_labels_171_and_split.json"));
    let dir = tempfile::tempdir().unwrap();
    let err = build(dir.path(), &o, &|_| {}).unwrap_err().to_string();
    assert!(
        err.contains("has 10857 rows") && err.contains("full DeepLesion table"),
        "{err}"
    );
    assert!(!dir.path().join("CURRENT").exists());
}

#[test]
fn added_lesions_are_found_and_deleted_ones_vanish_from_every_store() {
    let archive = common::synth_archive(30, 44, true);
    let (older, newer) = common::split_archive(archive.path(), 20);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &options(older.path(), &model), &|_| {}).unwrap();

    let add_options = AddOptions {
        dataset: newer.path().to_path_buf(),
        reports: None,
        model: &model,
        graph: GraphParams::default(),
    };
    let added = add(dir.path(), &add_options, &|_| {}).unwrap();
    assert_eq!((added.generation, added.live), (2, 30));
    assert_eq!(
        added.changed.first().unwrap().0,
        20,
        "ids continue after the last"
    );
    let index = Archive::open(dir.path()).unwrap();
    assert_eq!(index.verify().unwrap(), Vec::<String>::new());
    let (id, key) = added.changed[3].clone();
    let (hits, _) = index.vectors.search(index.vectors.vector(id), 1, None);
    assert_eq!(hits[0].id, id);
    let stored = index.records.get(id).unwrap().unwrap();
    assert_eq!(stored.key, key);
    assert!(index
        .dataset_of(&stored)
        .load_key_slice(&stored.record)
        .is_ok());
    let (text_hits, _) = index.text.search(&stored.report, 30, &|_| true).unwrap();
    assert!(text_hits.iter().any(|h| h.id == id));
    drop(index);

    // The same lesions again: refused, every key named, nothing published.
    let again = add(dir.path(), &add_options, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(again.contains(&key), "{again}");
    assert_eq!(Archive::current_manifest(dir.path()).unwrap().generation, 2);

    // Delete one old and one added lesion.
    let old_key = Archive::open(dir.path())
        .unwrap()
        .records
        .get(5)
        .unwrap()
        .unwrap()
        .key;
    let deleted = delete(
        dir.path(),
        &[old_key.clone(), key.clone()],
        GraphParams::default(),
    )
    .unwrap();
    assert_eq!((deleted.generation, deleted.live), (3, 28));
    let index = Archive::open(dir.path()).unwrap();
    assert_eq!(index.verify().unwrap(), Vec::<String>::new());
    for (gone, k) in [(5, &old_key), (id, &key)] {
        assert!(index.records.get(gone).unwrap().is_none());
        assert_eq!(index.records.id_of(k).unwrap(), None);
        let (hits, _) = index.vectors.search(index.vectors.vector(gone), 30, None);
        assert!(hits.iter().all(|h| h.id != gone));
        let (text_hits, _) = index.text.search("mm", 100, &|_| true).unwrap();
        assert!(text_hits.iter().all(|h| h.id != gone));
    }
    drop(index);

    let unknown = delete(
        dir.path(),
        &["nope_1_2_3.png".into()],
        GraphParams::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(unknown.contains("nope_1_2_3.png"), "{unknown}");
    assert_eq!(Archive::current_manifest(dir.path()).unwrap().generation, 3);
    assert!(
        !dir.path().join("gen-000001").exists(),
        "generations older than the previous one are pruned"
    );
}

#[test]
fn readers_share_a_generation_through_its_record_table_without_copying_it() {
    let archive = common::synth_archive(24, 43, true);
    let model = bundled_lesion_cnn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &options(archive.path(), &model), &|_| {}).unwrap();
    let generation = dir.path().join("gen-000001");
    // Another holder of the sled store (sled's lock is per open file, so this stands in for
    // a second process): readers must not need it, nor copy it anywhere.
    let holder = lesion_search::store::RecordStore::open(&generation.join("records")).unwrap();
    // Both readers serve the sealed table, so nothing of the held store is copied (counting
    // the temporary folder would race the other tests that run beside this one).
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let generation_before = listing(&generation);
    let first = Archive::open(dir.path()).unwrap();
    let second = Archive::open(dir.path()).unwrap();
    assert!(first.records.is_table() && second.records.is_table());
    assert!(first.verify().unwrap().is_empty());
    assert_eq!(
        first.records.checksum().unwrap(),
        holder.checksum().unwrap()
    );
    assert_eq!(first.records.all().unwrap(), holder.all().unwrap());
    assert_eq!(
        second.records.thumbnail(5).unwrap(),
        holder.thumbnail(5).unwrap()
    );
    assert_eq!(
        listing(&generation),
        generation_before,
        "opening a held generation wrote beside it"
    );
    drop((first, second, holder));

    // A damaged table is refused at open with what is wrong, never served.
    let table = generation.join(lesion_search::store::RECORDS_TABLE);
    let mut bytes = std::fs::read(&table).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&table, &bytes).unwrap();
    let err = Archive::open(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("records.table") && err.contains("checksum"),
        "{err}"
    );
    // A truncated one too, whatever it declares.
    std::fs::write(&table, &bytes[..middle]).unwrap();
    assert!(Archive::open(dir.path()).is_err());
}

#[test]
fn an_index_built_from_shards_equals_one_built_in_one_process() {
    use lesion_search::archive::{build_from_shards, embed_shard, Shard};
    // More lesions than one embedding batch, so the shards' batches differ from the build's.
    let archive = common::synth_archive(150, 44, true);
    let model = bundled_lesion_cnn().unwrap();
    let whole = tempfile::tempdir().unwrap();
    build(whole.path(), &options(archive.path(), &model), &|_| {}).unwrap();
    let shards = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut lesions = 0;
    for index in 0..3 {
        let file = shards.path().join(format!("{index}.lshard"));
        let summary = embed_shard(
            archive.path(),
            Shard { index, count: 3 },
            &model,
            &file,
            &|_, _| {},
        )
        .unwrap();
        assert!(summary.lesions > 0 && summary.patients > 0);
        lesions += summary.lesions;
        files.push(file);
    }
    assert_eq!(lesions, 150);
    let sharded = tempfile::tempdir().unwrap();
    // The order of the files does not matter.
    files.reverse();
    build_from_shards(
        sharded.path(),
        &options(archive.path(), &model),
        &files,
        &|_| {},
    )
    .unwrap();
    let (a, b) = (
        Archive::open(whole.path()).unwrap(),
        Archive::open(sharded.path()).unwrap(),
    );
    assert_eq!(
        a.vectors.flat().data(),
        b.vectors.flat().data(),
        "same vectors"
    );
    assert_eq!(
        a.manifest.records_sha256, b.manifest.records_sha256,
        "same records"
    );
    assert_eq!(a.manifest.vectors_sha256, b.manifest.vectors_sha256);
    assert!(b.verify().unwrap().is_empty());

    // A missing, repeated or foreign shard is refused, naming what is wrong.
    let fresh = tempfile::tempdir().unwrap();
    let refuse = |files: &[std::path::PathBuf]| {
        build_from_shards(
            fresh.path(),
            &options(archive.path(), &model),
            files,
            &|_| {},
        )
        .unwrap_err()
        .to_string()
    };
    assert!(refuse(&files[..2]).contains("missing shard files"));
    let repeated = [files[0].clone(), files[0].clone(), files[1].clone()];
    assert!(refuse(&repeated).contains("given twice"));
    let other = common::synth_archive(20, 45, true);
    let foreign = shards.path().join("foreign.lshard");
    embed_shard(
        other.path(),
        Shard { index: 0, count: 3 },
        &model,
        &foreign,
        &|_, _| {},
    )
    .unwrap();
    let mixed = [foreign.clone(), files[1].clone(), files[2].clone()];
    let message = refuse(&mixed);
    assert!(message.contains("another DL_info.csv") && message.contains("foreign.lshard"));
    assert!(std::fs::read_dir(fresh.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("gen-0")));
}
