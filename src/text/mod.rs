//! Report text and searchable metadata in tantivy: BM25 with English stemming, ontology
//! synonyms and parent terms, highlighted snippets. tantivy is named in this module only.
//!
//! Each report is indexed twice: as written (`report`, stemmed) and expanded (`expanded`):
//! every LesaNet term the report mentions, by any synonym, contributes the term, all its
//! synonyms and all its ancestors, so "renal" finds "kidney" and "lung" finds "right lower
//! lobe". Matches in the report's own words weigh more than matches through the ontology.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST,
    INDEXED, STORED, STRING,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

use crate::dataset::LesionRecord;
use crate::error::{Error, Result};
use crate::ontology::Ontology;

mod query;

pub use query::{edit_distance, has_syntax, QueryFeatures, FUZZY_MIN_CHARS};
use query::{Analysed, Lexicon, SearchedFields};

/// What the text index holds for one lesion.
#[derive(Debug, Clone)]
pub struct TextEntry<'a> {
    pub id: u32,
    pub key: &'a str,
    pub record: &'a LesionRecord,
    pub report: &'a str,
    pub tags: &'a [String],
}

/// One text hit: dense id, BM25 score, and the part of the report that matched.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextHit {
    pub id: u32,
    pub score: f32,
    pub snippet: Snippet,
}

/// A passage of a report and the byte ranges in it that the query matched (ascending, not
/// overlapping, on character boundaries). Plain text: each edge marks it up its own way.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snippet {
    pub text: String,
    pub highlights: Vec<std::ops::Range<usize>>,
}

impl Snippet {
    /// The passage with each matched range wrapped in `open` and `close`, nothing escaped.
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + self.highlights.len() * 4);
        let mut from = 0;
        for range in &self.highlights {
            out.push_str(&self.text[from..range.start]);
            out.push_str(open);
            out.push_str(&self.text[range.clone()]);
            out.push_str(close);
            from = range.end;
        }
        out.push_str(&self.text[from..]);
        out
    }

    /// The matched words, in order.
    pub fn matched(&self) -> impl Iterator<Item = &str> {
        self.highlights.iter().map(|r| &self.text[r.clone()])
    }
}

/// A BM25 hit before its snippet is made.
#[derive(Debug, Clone, Copy)]
pub struct RankedText {
    pub id: u32,
    pub score: f32,
    /// Where tantivy holds the document; `None` for a hit another engine ranked (its
    /// snippet is made from the document found by id).
    address: Option<tantivy::DocAddress>,
}

impl RankedText {
    /// A hit ranked outside this index (Milvus BM25).
    pub fn ranked_elsewhere(id: u32, score: f32) -> Self {
        RankedText {
            id,
            score,
            address: None,
        }
    }
}

/// What a BM25 engine other than tantivy indexes for a lesion: the report, its tags and
/// the ontology terms both mention (the fields tantivy searches, in one text).
pub fn document_text(report: &str, tags: &[String]) -> String {
    format!(
        "{report}\n{}\n{}",
        tags.join(" ; "),
        expand_with_ontology(&format!("{} {}", report, tags.join(" ")))
    )
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    key: Field,
    report: Field,
    expanded: Field,
    tags: Field,
    coarse_type: Field,
    sex: Field,
    split: Field,
    age: Field,
    long_mm: Field,
    location_z: Field,
    patient: Field,
    study: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stemmed = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let number = NumericOptions::default()
        .set_indexed()
        .set_fast()
        .set_stored();
    let fields = Fields {
        id: b.add_u64_field("id", INDEXED | STORED | FAST),
        key: b.add_text_field("key", STRING | STORED),
        report: b.add_text_field("report", stemmed.clone()),
        expanded: b.add_text_field("expanded", stemmed.clone()),
        tags: b.add_text_field("tags", stemmed),
        coarse_type: b.add_text_field("type", STRING | STORED | FAST),
        sex: b.add_text_field("sex", STRING | STORED | FAST),
        split: b.add_text_field("split", STRING | STORED | FAST),
        age: b.add_f64_field("age", number.clone()),
        long_mm: b.add_f64_field("long_mm", number.clone()),
        location_z: b.add_f64_field("location_z", number.clone()),
        patient: b.add_u64_field("patient", number.clone()),
        study: b.add_u64_field("study", number),
    };
    (b.build(), fields)
}

fn text_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        message: format!("text index: {e}"),
    }
}

/// Ontology terms a text mentions (by any synonym), expanded with synonyms and ancestors.
pub fn expand_with_ontology(text: &str) -> String {
    let ontology = Ontology::lesanet();
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for len in (1..=4).rev() {
        for window in words.windows(len) {
            if let Some(term) = ontology.find(&window.join(" ")) {
                for t in std::iter::once(term).chain(ontology.ancestors(&term.term)) {
                    out.push(t.term.clone());
                    out.extend(t.synonyms.iter().cloned());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out.join(" ; ")
}

/// Builds a text index in a new folder.
pub struct TextIndexWriter {
    path: PathBuf,
    writer: IndexWriter,
    fields: Fields,
}

impl TextIndexWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema).map_err(|e| text_error(dir, e))?;
        let writer = index
            .writer(64 * 1024 * 1024)
            .map_err(|e| text_error(dir, e))?;
        Ok(TextIndexWriter {
            path: dir.to_path_buf(),
            writer,
            fields,
        })
    }

    /// Opens an existing index (a copy of a published generation) to change it.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = Index::open_in_dir(dir).map_err(|e| text_error(dir, e))?;
        let (_, fields) = schema();
        let writer = index
            .writer(64 * 1024 * 1024)
            .map_err(|e| text_error(dir, e))?;
        Ok(TextIndexWriter {
            path: dir.to_path_buf(),
            writer,
            fields,
        })
    }

    /// Removes the lesion's document (at commit).
    pub fn delete(&mut self, id: u32) {
        self.writer
            .delete_term(tantivy::Term::from_field_u64(self.fields.id, u64::from(id)));
    }

    pub fn add(&mut self, entry: &TextEntry) -> Result<()> {
        let f = self.fields;
        let r = entry.record;
        let mut document = doc!(
            f.id => u64::from(entry.id),
            f.key => entry.key,
            f.report => entry.report,
            f.expanded => expand_with_ontology(&format!("{} {}", entry.report, entry.tags.join(" "))),
            f.tags => entry.tags.join(" ; "),
            f.coarse_type => r.coarse_type.name(),
            f.sex => r.sex.code(),
            f.split => r.split.name(),
            f.long_mm => f64::from(r.long_diameter_mm()),
            f.location_z => f64::from(r.location.z),
            f.patient => u64::from(r.patient),
            f.study => u64::from(r.study),
        );
        if let Some(age) = r.age {
            document.add_f64(f.age, f64::from(age));
        }
        self.writer
            .add_document(document)
            .map_err(|e| text_error(&self.path, e))?;
        Ok(())
    }

    /// Commits; until then nothing is visible (and a crash loses the uncommitted documents,
    /// which is why an index generation is only published after this returns).
    pub fn commit(mut self) -> Result<()> {
        self.writer
            .commit()
            .map_err(|e| text_error(&self.path, e))?;
        self.writer
            .wait_merging_threads()
            .map_err(|e| text_error(&self.path, e))
    }
}

/// A committed text index, open for searching.
pub struct TextIndex {
    path: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// The report field's stemmed terms with their document frequencies, read once (a
    /// generation's index never changes) for spelling corrections.
    vocabulary: OnceLock<Vec<(String, u64)>>,
    /// The last few queries evaluated, newest first: a search asks for its text's match set,
    /// its ranked list, its respelling and its snippets, and paging and exports ask again,
    /// so each text is analysed and run once while it is recent.
    recent: Mutex<VecDeque<Arc<Evaluated>>>,
}

/// How many evaluated queries a text index keeps (a few hundred KiB each at 32k lesions).
const RECENT_QUERIES: usize = 8;

/// How many of a query's best matches are ranked at once; the rest only when a page or an
/// export reaches past them (sorting 10,000 matches for a first page of 20 was a third of
/// a text query's time at 32k lesions).
const RANKED_AT_ONCE: usize = 256;

/// A query as analysed, and every document it matches with its BM25 score.
struct Evaluated {
    text: String,
    features: QueryFeatures,
    analysed: Analysed,
    /// How many documents match.
    total: usize,
    /// Every match, unsorted, until a page reaches past `best`: then it is moved, sorted,
    /// into `all_ranked`, so a query never holds its matches twice.
    unranked: Mutex<Vec<RankedText>>,
    /// The best [`RANKED_AT_ONCE`] matches, best first, equal scores by id.
    best: Vec<RankedText>,
    /// Every match in that order, sorted on first need past `best`.
    all_ranked: OnceLock<Vec<RankedText>>,
    /// The ids of every match, ascending.
    ids: Vec<u32>,
}

/// Best score first, equal scores by id: one order for every page of a query.
fn rank_order(a: &RankedText, b: &RankedText) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

impl Evaluated {
    fn new(
        text: &str,
        features: QueryFeatures,
        analysed: Analysed,
        mut matches: Vec<RankedText>,
    ) -> Self {
        if matches.len() > RANKED_AT_ONCE {
            matches.select_nth_unstable_by(RANKED_AT_ONCE - 1, rank_order);
        }
        let mut best = matches[..matches.len().min(RANKED_AT_ONCE)].to_vec();
        best.sort_unstable_by(rank_order);
        Evaluated {
            text: text.to_string(),
            features,
            analysed,
            ids: ascending_ids(&matches),
            total: matches.len(),
            unranked: Mutex::new(matches),
            best,
            all_ranked: OnceLock::new(),
        }
    }

    /// The first `k` matches that `keep` lets through, in rank order.
    fn ranked(&self, k: usize, keep: &dyn Fn(u32) -> bool) -> Vec<RankedText> {
        let first = |list: &[RankedText]| -> Vec<RankedText> {
            list.iter()
                .filter(|hit| keep(hit.id))
                .take(k)
                .copied()
                .collect()
        };
        let hits = first(&self.best);
        if hits.len() == k || self.best.len() == self.total {
            return hits;
        }
        first(self.all_ranked.get_or_init(|| {
            let mut unranked = self.unranked.lock().unwrap_or_else(|e| e.into_inner());
            let mut all = std::mem::take(&mut *unranked);
            all.sort_unstable_by(rank_order);
            all
        }))
    }
}

/// The ids of `matches` ascending, through a bit per id instead of a sort.
fn ascending_ids(matches: &[RankedText]) -> Vec<u32> {
    let Some(highest) = matches.iter().map(|hit| hit.id).max() else {
        return Vec::new();
    };
    let mut bits = vec![0u64; highest as usize / 64 + 1];
    for hit in matches {
        bits[hit.id as usize / 64] |= 1 << (hit.id % 64);
    }
    let mut ids = Vec::with_capacity(matches.len());
    for (word_at, &word) in bits.iter().enumerate() {
        let mut rest = word;
        while rest != 0 {
            ids.push(word_at as u32 * 64 + rest.trailing_zeros());
            rest &= rest - 1;
        }
    }
    ids
}

impl TextIndex {
    pub fn open(dir: &Path) -> Result<Self> {
        let index = Index::open_in_dir(dir).map_err(|e| text_error(dir, e))?;
        let (_, fields) = schema();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| text_error(dir, e))?;
        Ok(TextIndex {
            path: dir.to_path_buf(),
            index,
            reader,
            fields,
            vocabulary: OnceLock::new(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_QUERIES)),
        })
    }

    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// BM25 top `k` for free text, read with every query feature; syntax errors in the
    /// query are forgiven (a clinician's "mass (left" still searches). `keep` decides which
    /// ids may come back.
    pub fn search(
        &self,
        text: &str,
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<(Vec<TextHit>, usize)> {
        self.search_with(text, k, keep, QueryFeatures::ALL)
    }

    /// [`TextIndex::search`] with only the given query features (the text benchmark turns
    /// each off).
    pub fn search_with(
        &self,
        text: &str,
        k: usize,
        keep: &dyn Fn(u32) -> bool,
        features: QueryFeatures,
    ) -> Result<(Vec<TextHit>, usize)> {
        let (ranked, total) = self.ranked(text, k, keep, features)?;
        let snippets = self.snippets(text, &ranked, features)?;
        let hits = ranked
            .into_iter()
            .zip(snippets)
            .map(|(r, snippet)| TextHit {
                id: r.id,
                score: r.score,
                snippet,
            })
            .collect();
        Ok((hits, total))
    }

    /// The query `text` reads as: tantivy's parser for queries with operators, quotes or
    /// fields; concepts kept in proportion for plain words (see [`query`]).
    fn analyse(&self, text: &str, features: QueryFeatures) -> Result<Analysed> {
        check_query(text)?;
        let f = self.fields;
        if has_syntax(text) {
            let fields = if features.ontology {
                vec![f.report, f.expanded, f.tags]
            } else {
                vec![f.report, f.tags]
            };
            let mut parser = QueryParser::for_index(&self.index, fields);
            parser.set_field_boost(f.report, 2.0);
            parser.set_field_boost(f.tags, 1.5);
            return Ok(Analysed {
                query: parser.parse_query_lenient(text).0,
                respelled: None,
            });
        }
        let searcher = self.reader.searcher();
        let mut lexicon = Lexicon {
            searcher: &searcher,
            analyzer: self
                .index
                .tokenizer_for_field(f.report)
                .map_err(|e| text_error(&self.path, e))?,
            fields: SearchedFields {
                report: f.report,
                expanded: f.expanded,
                tags: f.tags,
            },
            vocabulary: self.vocabulary(&searcher),
        };
        Ok(query::analyse_plain(text, &mut lexicon, features))
    }

    fn vocabulary(&self, searcher: &tantivy::Searcher) -> &[(String, u64)] {
        self.vocabulary.get_or_init(|| {
            let mut freq: std::collections::BTreeMap<String, u64> = Default::default();
            for segment in searcher.segment_readers() {
                let Ok(inverted) = segment.inverted_index(self.fields.report) else {
                    continue;
                };
                let Ok(mut stream) = inverted.terms().stream() else {
                    continue;
                };
                while stream.advance() {
                    if let Ok(term) = std::str::from_utf8(stream.key()) {
                        *freq.entry(term.to_string()).or_default() +=
                            u64::from(stream.value().doc_freq);
                    }
                }
            }
            freq.into_iter().collect()
        })
    }

    /// BM25 top `k` ids without snippets (ids come from a fast field, so no stored document
    /// is read): the deep candidate list of a hybrid search. Returns the matches in total.
    pub fn ranked(
        &self,
        text: &str,
        k: usize,
        keep: &dyn Fn(u32) -> bool,
        features: QueryFeatures,
    ) -> Result<(Vec<RankedText>, usize)> {
        self.ranked_with(text, k, keep, 1.0, features)
    }

    /// [`TextIndex::ranked`] knowing roughly what share of documents `keep` lets through,
    /// so the first fetch is deep enough without over-fetching four times.
    pub fn ranked_with(
        &self,
        text: &str,
        k: usize,
        keep: &dyn Fn(u32) -> bool,
        keep_share: f32,
        features: QueryFeatures,
    ) -> Result<(Vec<RankedText>, usize)> {
        // Every match is scored once (`evaluated`), so no over-fetching is needed
        // whatever share `keep` lets through.
        let _ = keep_share;
        let evaluated = self.evaluated(text, features)?;
        Ok((evaluated.ranked(k, keep), evaluated.total))
    }

    /// `text` analysed and run over the whole index (every match scored, in one pass), or
    /// the recent evaluation of the same text.
    fn evaluated(&self, text: &str, features: QueryFeatures) -> Result<Arc<Evaluated>> {
        let recent = |index: &TextIndex| {
            let recent = index.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent
                .iter()
                .find(|e| e.text == text && e.features == features)
                .cloned()
        };
        if let Some(found) = recent(self) {
            return Ok(found);
        }
        let analysed = self.analyse(text, features)?;
        let searcher = self.reader.searcher();
        let matches = searcher
            .search(&*analysed.query, &ScoredIdCollector)
            .map_err(|e| text_error(&self.path, e))?;
        let evaluated = Arc::new(Evaluated::new(text, features, analysed, matches));
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_QUERIES {
            recent.pop_back();
        }
        recent.push_front(evaluated.clone());
        Ok(evaluated)
    }

    /// Every lesion whose text matches `text`, ascending: the exact match set that totals,
    /// facets and exports are computed over (the ranked lists are only as deep as a page).
    pub fn matching_ids(&self, text: &str, features: QueryFeatures) -> Result<Vec<u32>> {
        Ok(self.evaluated(text, features)?.ids.clone())
    }

    /// The query with each misspelt word replaced by the archive's or the ontology's word
    /// ("kidny cyst" -> "kidney cyst"); `None` when no word needed it.
    pub fn did_you_mean(&self, text: &str) -> Result<Option<String>> {
        Ok(self
            .evaluated(text, QueryFeatures::ALL)?
            .analysed
            .respelled
            .clone())
    }

    /// The passage of each ranked hit's report that `text` matched, with the matched ranges.
    pub fn snippets(
        &self,
        text: &str,
        hits: &[RankedText],
        features: QueryFeatures,
    ) -> Result<Vec<Snippet>> {
        let f = self.fields;
        let evaluated = self.evaluated(text, features)?;
        let query = &evaluated.analysed.query;
        let searcher = self.reader.searcher();
        let generator = SnippetGenerator::create(&searcher, &**query, f.report)
            .map_err(|e| text_error(&self.path, e))?;
        hits.iter()
            .map(|hit| {
                let address = match hit.address {
                    Some(address) => address,
                    None => self.address_of(&searcher, hit.id)?,
                };
                let document: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| text_error(&self.path, e))?;
                let mut snippet = generator.snippet_from_doc(&document);
                if snippet.is_empty() {
                    // Matched through the ontology only: show the report as it is.
                    snippet = generator.snippet(
                        document
                            .get_first(f.report)
                            .and_then(|v| v.as_str())
                            .unwrap_or(""),
                    );
                }
                let mut highlights = snippet.highlighted().to_vec();
                highlights.sort_by_key(|r| r.start);
                // Two terms may match overlapping words (a stem and a synonym): one range.
                highlights.dedup_by(|next, kept| {
                    let overlaps = next.start <= kept.end;
                    if overlaps {
                        kept.end = kept.end.max(next.end);
                    }
                    overlaps
                });
                Ok(Snippet {
                    text: snippet.fragment().to_string(),
                    highlights,
                })
            })
            .collect()
    }
}

impl TextIndex {
    fn address_of(&self, searcher: &tantivy::Searcher, id: u32) -> Result<tantivy::DocAddress> {
        let term = tantivy::Term::from_field_u64(self.fields.id, u64::from(id));
        let query = tantivy::query::TermQuery::new(term, IndexRecordOption::Basic);
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(|e| text_error(&self.path, e))?;
        top.first()
            .map(|(_, address)| *address)
            .ok_or_else(|| text_error(&self.path, format!("no document for lesion {id}")))
    }
}

/// Collects the lesion id of every matching document from the `id` fast field.
/// Every match's lesion id (from the fast field), BM25 score and address.
struct ScoredIdCollector;

struct SegmentScoredIds {
    segment_ord: tantivy::SegmentOrdinal,
    column: tantivy::columnar::Column<u64>,
    hits: Vec<RankedText>,
}

impl tantivy::collector::Collector for ScoredIdCollector {
    type Fruit = Vec<RankedText>;
    type Child = SegmentScoredIds;

    fn for_segment(
        &self,
        segment_ord: tantivy::SegmentOrdinal,
        segment: &tantivy::SegmentReader,
    ) -> tantivy::Result<SegmentScoredIds> {
        Ok(SegmentScoredIds {
            segment_ord,
            column: segment.fast_fields().u64("id")?,
            hits: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Vec<RankedText>>) -> tantivy::Result<Vec<RankedText>> {
        Ok(fruits.concat())
    }
}

impl tantivy::collector::SegmentCollector for SegmentScoredIds {
    type Fruit = Vec<RankedText>;

    fn collect(&mut self, doc: tantivy::DocId, score: tantivy::Score) {
        if let Some(id) = self.column.first(doc) {
            self.hits.push(RankedText {
                id: id as u32,
                score,
                address: Some(tantivy::DocAddress::new(self.segment_ord, doc)),
            });
        }
    }

    fn harvest(self) -> Vec<RankedText> {
        self.hits
    }
}

/// Longest text query, in characters.
pub const MAX_QUERY_CHARS: usize = 2_000;
/// Deepest nesting of `(`, `[` and `{` in a text query.
pub const MAX_QUERY_DEPTH: usize = 8;
/// Most terms (whitespace-separated words) in a text query.
pub const MAX_QUERY_TERMS: usize = 64;

/// Refuses, before tantivy's recursive parser sees it, a query nested or long enough to
/// exhaust its stack (100,000 opening parentheses once aborted the server) or its time.
pub fn check_query(text: &str) -> Result<()> {
    let too_complex = |message: String| Err(Error::QueryTooComplex { message });
    let chars = text.chars().count();
    if chars > MAX_QUERY_CHARS {
        return too_complex(format!(
            "{chars} characters, more than the {MAX_QUERY_CHARS} allowed"
        ));
    }
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_QUERY_DEPTH {
        return too_complex(format!(
            "brackets nested {deepest} deep, more than the {MAX_QUERY_DEPTH} allowed"
        ));
    }
    let terms = text
        .split(|c: char| c.is_whitespace() || "()[]{}".contains(c))
        .filter(|t| !t.is_empty())
        .count();
    if terms > MAX_QUERY_TERMS {
        return too_complex(format!(
            "{terms} terms, more than the {MAX_QUERY_TERMS} allowed"
        ));
    }
    check_fields(text)
}

/// The fields a query may name (`report:nodule`); the metadata have filters of their own.
pub const QUERY_FIELDS: [&str; 3] = ["report", "tags", "expanded"];

/// Refuses what tantivy's grammar reads as a field other than the searchable text fields,
/// an exists query (`report:*`), a range or a regular expression: tantivy would fail on
/// them deep in the search with an error naming the index's folder, or walk every term.
/// The query is parsed by tantivy's own lenient grammar, so `report :*` is seen as tantivy
/// sees it.
fn check_fields(text: &str) -> Result<()> {
    use tantivy::query_grammar::{parse_query_lenient, UserInputAst, UserInputLeaf};
    fn refusal(leaf: &UserInputLeaf) -> Option<String> {
        let unknown = |field: &str| {
            (!QUERY_FIELDS.contains(&field)).then(|| {
                format!(
                    "`{field}:` names no searchable text field (fields: {}); filter metadata with the filters, or quote the words (\"{field}: ...\")",
                    QUERY_FIELDS.join(", ")
                )
            })
        };
        match leaf {
            UserInputLeaf::Literal(literal) => literal.field_name.as_deref().and_then(unknown),
            UserInputLeaf::All => None,
            UserInputLeaf::Exists { field } => unknown(field).or_else(|| {
                Some(format!(
                    "`{field}:*` asks for no words; give a word after `{field}:`"
                ))
            }),
            UserInputLeaf::Range { .. } | UserInputLeaf::Set { .. } => Some(
                "ranges and sets of terms are not text queries; use the filters (age, size_mm, ...)"
                    .into(),
            ),
            UserInputLeaf::Regex { .. } => {
                Some("regular expressions are not supported in text queries".into())
            }
        }
    }
    fn walk(ast: &UserInputAst) -> Option<String> {
        match ast {
            UserInputAst::Clause(clauses) => clauses.iter().find_map(|(_, sub)| walk(sub)),
            UserInputAst::Boost(sub, _) => walk(sub),
            UserInputAst::Leaf(leaf) => refusal(leaf),
        }
    }
    match walk(&parse_query_lenient(text).0) {
        Some(message) => Err(Error::InvalidArgument {
            name: "text".into(),
            message,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod query_limit_tests {
    use super::*;

    #[test]
    fn refuses_deep_long_and_wordy_queries() {
        assert!(check_query("enlarged (mediastinal OR hilar) lymph node").is_ok());
        let deep = format!("{}liver", "(".repeat(100_000));
        assert!(matches!(
            check_query(&deep),
            Err(Error::QueryTooComplex { .. })
        ));
        let nested = format!("{}liver{}", "(".repeat(9), ")".repeat(9));
        assert!(check_query(&nested).is_err());
        let ok_nested = format!("{}liver{}", "(".repeat(8), ")".repeat(8));
        assert!(check_query(&ok_nested).is_ok());
        assert!(check_query(&"a ".repeat(65)).is_err());
        assert!(check_query(&"a".repeat(2_001)).is_err());
    }

    #[test]
    fn field_prefixes_must_name_a_text_field_and_a_word() {
        for fine in [
            "report:nodule",
            "tags:lung +report:spiculated",
            "\"size: 2 cm\" liver",
            "liver lesion",
            "mass (left",
            "(report:liver OR tags:kidney)",
            "report:(liver OR kidney)",
            "*",
        ] {
            assert!(check_query(fine).is_ok(), "{fine}");
        }
        for refused in [
            "report:*",
            "report :*",
            "type :*",
            "type:liver",
            "path:/etc/passwd",
            "impression: liver lesion",
            "(age:50)",
            "report:[a TO z]",
            "report:/live.*/",
            "report: IN [liver kidney]",
        ] {
            let error = check_query(refused).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidArgument { name, .. } if name == "text"),
                "{refused}: {error}"
            );
        }
    }
}

#[cfg(test)]
mod ranking_tests {
    use super::*;

    fn matches(n: u32) -> Vec<RankedText> {
        // Scores with many ties, ids out of order, as a segment collector leaves them.
        (0..n)
            .map(|i| RankedText {
                id: (i * 7919) % n,
                score: ((i * 31) % 97) as f32 / 4.0,
                address: None,
            })
            .collect()
    }

    fn evaluated(n: u32) -> Evaluated {
        let analysed = Analysed {
            query: Box::new(tantivy::query::EmptyQuery),
            respelled: None,
        };
        Evaluated::new("q", QueryFeatures::ALL, analysed, matches(n))
    }

    #[test]
    fn pages_of_the_best_and_of_the_rest_are_one_ranking() {
        for n in [0, 5, RANKED_AT_ONCE as u32, 1_000] {
            let mut expected = matches(n);
            expected.sort_by(rank_order);
            let all = evaluated(n);
            let ids = |hits: &[RankedText]| hits.iter().map(|h| h.id).collect::<Vec<_>>();
            assert_eq!(ids(&all.ranked(n as usize + 5, &|_| true)), ids(&expected));
            assert_eq!(
                ids(&all.ranked(20, &|_| true)),
                ids(&expected[..20.min(n as usize)])
            );
            // A filter that few of the best pass reaches into the rest.
            let rare = |id: u32| id % 50 == 3;
            let kept: Vec<u32> = ids(&expected).into_iter().filter(|&id| rare(id)).collect();
            assert_eq!(ids(&evaluated(n).ranked(kept.len(), &rare)), kept);
            let mut ascending = ids(&expected);
            ascending.sort_unstable();
            assert_eq!(all.ids, ascending, "n = {n}");
        }
    }
}
