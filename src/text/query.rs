//! From what a researcher types to a tantivy query that keeps every word in proportion.
//!
//! A plain query (no operators, quotes or field names) is read as a list of concepts:
//! lay words become the clinical words they stand for (`armpit` -> axilla; those that only
//! suggest one, like `lump` -> mass, rank without narrowing), stop words go, abbreviations
//! become what they stand for (`LN` -> lymph node), compounds
//! are split or joined the way the archive spells them (`lymphnode` -> lymph node),
//! misspelt words of five letters or more become the nearest archive or ontology word
//! (`kidny` -> kidney), and runs of words that name a LesaNet term become that term
//! (`hepatic lesion` -> liver). Each concept is one disjunction-max clause over its
//! spellings, so ten synonyms of one word weigh what one word weighs and the words beside it
//! keep their share of the score. Every concept that the archive can match is required
//! (generic words such as "lesion" are not); when no lesion has them all, any of them will
//! do. Queries with operators go to tantivy's own parser, as written.

use std::collections::HashMap;
use std::sync::OnceLock;

use tantivy::query::{
    BooleanQuery, BoostQuery, DisjunctionMaxQuery, EmptyQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

use crate::ontology::{Ontology, Term as OntologyTerm};

/// Which parts of query understanding apply; all by default. The text benchmark turns each
/// off to measure what it brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryFeatures {
    /// LesaNet synonyms, and the ontology terms (with their ancestors) a report mentions.
    pub ontology: bool,
    /// Radiology abbreviations (`data/lesanet/abbreviations.tsv`).
    pub abbreviations: bool,
    /// Lay words for anatomy and findings (`data/lesanet/lay_terms.tsv`): armpit -> axilla.
    pub lay_terms: bool,
    /// Compounds split and joined as the archive spells them.
    pub compounds: bool,
    /// Misspellings of words of five letters or more, by edit distance.
    pub fuzzy: bool,
}

impl QueryFeatures {
    pub const ALL: QueryFeatures = QueryFeatures {
        ontology: true,
        abbreviations: true,
        lay_terms: true,
        compounds: true,
        fuzzy: true,
    };
    /// The report's own words as typed (stemmed), nothing else.
    pub const NONE: QueryFeatures = QueryFeatures {
        ontology: false,
        abbreviations: false,
        lay_terms: false,
        compounds: false,
        fuzzy: false,
    };
}

impl Default for QueryFeatures {
    fn default() -> Self {
        QueryFeatures::ALL
    }
}

/// Shortest word that may be read as a misspelling.
pub const FUZZY_MIN_CHARS: usize = 5;
/// Score share of a corrected spelling against the word as typed.
const CORRECTED_BOOST: f32 = 0.6;
/// Weight of the report's own words, the tags, and the ontology terms a report mentions.
const REPORT_BOOST: f32 = 2.0;
const TAGS_BOOST: f32 = 1.5;
const EXPANDED_BOOST: f32 = 1.0;
/// A concept matched both in the report and through the ontology scores a little more.
const TIE_BREAKER: f32 = 0.1;

const ABBREVIATIONS_TSV: &str = include_str!("../../data/lesanet/abbreviations.tsv");
const LAY_TERMS_TSV: &str = include_str!("../../data/lesanet/lay_terms.tsv");

/// Words that carry no concept in a query ("a lesion in the liver that got bigger").
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "in", "of", "on", "at", "to", "for", "from", "by", "with", "and", "or",
    "that", "which", "who", "is", "are", "was", "were", "be", "been", "has", "have", "had", "got",
    "get", "gets", "this", "these", "those", "there", "it", "its", "as", "near", "into", "show",
    "find", "me", "any", "all", "some", "than", "very", "s",
];

/// Words that say "a finding" without saying which: they rank, but are not required.
const GENERIC_WORDS: &[&str] = &[
    "lesion",
    "lesions",
    "finding",
    "findings",
    "abnormality",
    "abnormalities",
    "area",
    "areas",
    "spot",
    "spots",
    "thing",
];

/// The fields a plain query reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct SearchedFields {
    pub report: Field,
    pub expanded: Field,
    pub tags: Field,
}

/// One way a concept may appear in a document: stemmed tokens (a phrase when several).
#[derive(Debug, Clone, PartialEq)]
struct Spelling {
    stems: Vec<String>,
    boost: f32,
}

/// One thing the user asked for, with every spelling that counts as it.
#[derive(Debug, Clone)]
struct Concept {
    /// Spellings searched in the report and the tags.
    words: Vec<Spelling>,
    /// Ontology terms searched among the terms a report mentions.
    terms: Vec<Spelling>,
    /// For a term of several words, each word's own concept: a report that has them all
    /// apart ("cyst in the left kidney" for `kidney cyst`) matches too, a little lower.
    parts: Vec<Concept>,
    required: bool,
}

/// Score share of a multi-word term found as its words apart.
const PARTS_BOOST: f32 = 0.7;

/// A query read for searching: the tantivy query and what was changed on the way.
pub struct Analysed {
    pub query: Box<dyn Query>,
    /// The words of the query with each correction applied, for "did you mean".
    pub respelled: Option<String>,
}

/// A word of the query: lower-cased as typed, and its stem as the index holds it.
#[derive(Debug, Clone)]
struct Word {
    raw: String,
    stem: String,
    /// Set when the word was put in place of a misspelling.
    corrected: bool,
    /// The stem as typed, when the archive holds it too (a rare spelling of a common
    /// ontology word, like "speculated" beside "spiculated"; a lay word reports use too,
    /// like "lump"): searched as well.
    typed_stem: Option<String>,
    /// Put in place of a lay word that only suggests it ("lump" -> mass): it ranks, but
    /// does not narrow the matches.
    ranks_only: bool,
    /// Put in place of a lay word: neither misspelt nor a compound to mend.
    from_lay_term: bool,
}

impl Word {
    fn typed(raw: String, stem: String) -> Word {
        Word {
            raw,
            stem,
            corrected: false,
            typed_stem: None,
            ranks_only: false,
            from_lay_term: false,
        }
    }
}

/// What a plain query's analysis needs from the index: stems, document frequencies and the
/// vocabulary for corrections.
pub(super) struct Lexicon<'a> {
    pub searcher: &'a Searcher,
    pub analyzer: TextAnalyzer,
    pub fields: SearchedFields,
    /// Every stemmed term of the report field with its document frequency.
    pub vocabulary: &'a [(String, u64)],
}

impl Lexicon<'_> {
    fn stems(&mut self, text: &str) -> Vec<String> {
        stems_with(&mut self.analyzer, text)
    }

    /// Documents holding the stem in the report, the tags or the expanded terms.
    fn doc_freq(&self, stem: &str) -> u64 {
        let f = self.fields;
        [f.report, f.tags, f.expanded]
            .iter()
            .map(|&field| {
                self.searcher
                    .doc_freq(&Term::from_field_text(field, stem))
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// True when the text uses tantivy's query syntax: quotes, field names, `+`/`-` operators,
/// brackets, boosts, wildcards or upper-case AND/OR/NOT.
pub fn has_syntax(text: &str) -> bool {
    text.contains(['"', ':', '(', ')', '[', ']', '{', '}', '^', '*', '~'])
        || text
            .split_whitespace()
            .any(|w| w.starts_with(['+', '-']) || matches!(w, "AND" | "OR" | "NOT" | "IN" | "TO"))
}

/// Reads a plain query into concepts and builds its query; `None` when it holds no word.
pub(super) fn analyse_plain(
    text: &str,
    lexicon: &mut Lexicon<'_>,
    features: QueryFeatures,
) -> Analysed {
    let mut words = words_of(text, lexicon, features.lay_terms);
    if features.abbreviations {
        words = expand_abbreviations(words, lexicon);
    }
    if features.compounds {
        words = mend_compounds(words, lexicon);
    }
    let mut corrected = false;
    if features.fuzzy {
        for word in words.iter_mut().filter(|w| !w.from_lay_term) {
            if let Some(better) = correction(word, lexicon, features.ontology) {
                *word = better;
                corrected = true;
            }
        }
    }
    let concepts = concepts_of(&words, lexicon, features.ontology);
    let respelled = corrected.then(|| {
        words
            .iter()
            .map(|w| w.raw.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let query = build(&concepts, lexicon);
    Analysed { query, respelled }
}

fn words_of(text: &str, lexicon: &mut Lexicon<'_>, lay_terms: bool) -> Vec<Word> {
    let raw: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        // Lay phrases are looked up before stop words go: "near the aorta", "water on the lung".
        if lay_terms {
            if let Some((len, words)) = lay_phrase_at(&raw[i..], lexicon) {
                out.extend(words);
                i += len;
                continue;
            }
        }
        let word = &raw[i];
        i += 1;
        if STOP_WORDS.contains(&word.as_str()) {
            continue;
        }
        if let Some(stem) = lexicon.stems(word).into_iter().next() {
            out.push(Word::typed(word.clone(), stem));
        }
    }
    out
}

/// A lay term, by its words: the clinical words it stands for and whether it names them
/// exactly (`armpit` -> axilla) or only suggests them (`lump` -> mass).
struct LayTerm {
    clinical: String,
    exact: bool,
}

/// The curated lay terms by their lower-case words, and the most words any has.
fn lay_terms() -> &'static (HashMap<String, LayTerm>, usize) {
    static TABLE: OnceLock<(HashMap<String, LayTerm>, usize)> = OnceLock::new();
    TABLE.get_or_init(|| {
        let table: HashMap<String, LayTerm> = LAY_TERMS_TSV
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cells = line.split('\t');
                let lay = plain_words(cells.next()?);
                let clinical = cells.next()?.trim().to_lowercase();
                let exact = cells.next()?.trim() == "exact";
                (!lay.is_empty() && !clinical.is_empty())
                    .then_some((lay, LayTerm { clinical, exact }))
            })
            .collect();
        let longest = table
            .keys()
            .map(|k| k.split(' ').count())
            .max()
            .unwrap_or(0);
        (table, longest)
    })
}

/// The longest lay term that `words` start with: how many words it spans and the clinical
/// words in its place. A one-word lay term the archive holds as written is searched too.
fn lay_phrase_at(words: &[String], lexicon: &mut Lexicon<'_>) -> Option<(usize, Vec<Word>)> {
    let (table, longest) = lay_terms();
    let (len, term) = (1..=(*longest).min(words.len()))
        .rev()
        .find_map(|len| table.get(&words[..len].join(" ")).map(|t| (len, t)))?;
    let lay_stem = (len == 1)
        .then(|| lexicon.stems(&words[0]).into_iter().next())
        .flatten()
        .filter(|stem| lexicon.doc_freq(stem) > 0);
    let clinical: Vec<&str> = term
        .clinical
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let replaced = clinical
        .iter()
        .filter_map(|raw| {
            let stem = lexicon.stems(raw).into_iter().next()?;
            Some(Word {
                typed_stem: if clinical.len() == 1 {
                    lay_stem.clone()
                } else {
                    None
                },
                ranks_only: !term.exact,
                from_lay_term: true,
                ..Word::typed(raw.to_string(), stem)
            })
        })
        .collect();
    Some((len, replaced))
}

/// Radiology abbreviations by their words (lower-case, `T-spine` as `t spine`): what each
/// stands for, from the curated list. Rows the list marks non-anatomical (SUV, HU) name no
/// finding and are left out.
fn abbreviations() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ABBREVIATIONS_TSV
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cells = line.split('\t');
                let short = cells.next()?.trim();
                let long = cells.next()?.trim();
                let source = cells.next().unwrap_or("");
                let usable = !short.is_empty() && !long.is_empty();
                (usable && !source.contains("NON-ANATOMICAL"))
                    .then(|| (plain_words(short), long.to_lowercase()))
            })
            .collect()
    })
}

/// Lower-case words separated by single spaces.
fn plain_words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An abbreviation (of one or two words) is replaced by the words it stands for.
fn expand_abbreviations(words: Vec<Word>, lexicon: &mut Lexicon<'_>) -> Vec<Word> {
    let table = abbreviations();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let found = (1..=2.min(words.len() - i)).rev().find_map(|len| {
            let key: Vec<&str> = words[i..i + len].iter().map(|w| w.raw.as_str()).collect();
            table.get(&key.join(" ")).map(|long| (len, long))
        });
        let Some((len, long)) = found else {
            out.push(words[i].clone());
            i += 1;
            continue;
        };
        for raw in long.split(|c: char| !c.is_alphanumeric()) {
            if raw.is_empty() {
                continue;
            }
            if let Some(stem) = lexicon.stems(raw).into_iter().next() {
                out.push(Word {
                    from_lay_term: words[i].from_lay_term,
                    ranks_only: words[i].ranks_only,
                    ..Word::typed(raw.to_string(), stem)
                });
            }
        }
        i += len;
    }
    out
}

/// Splits a word the archive does not hold into two it does (`lymphnode`), and joins two
/// words into one when the archive holds the joined form and not one of the parts
/// (`retro peritoneal`).
fn mend_compounds(words: Vec<Word>, lexicon: &mut Lexicon<'_>) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::with_capacity(words.len() + 1);
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        let mendable = |w: &Word| !w.from_lay_term;
        if let Some(next) = words.get(i + 1).filter(|n| mendable(word) && mendable(n)) {
            let joined = format!("{}{}", word.raw, next.raw);
            if let Some(stem) = lexicon.stems(&joined).into_iter().next() {
                let part_missing =
                    lexicon.doc_freq(&word.stem) == 0 || lexicon.doc_freq(&next.stem) == 0;
                if part_missing && lexicon.doc_freq(&stem) > 0 {
                    out.push(Word::typed(joined, stem));
                    i += 2;
                    continue;
                }
            }
        }
        let split = if mendable(word) {
            split_compound(word, lexicon)
        } else {
            None
        };
        match split {
            Some((left, right)) => {
                out.push(left);
                out.push(right);
            }
            None => out.push(word.clone()),
        }
        i += 1;
    }
    out
}

fn split_compound(word: &Word, lexicon: &mut Lexicon<'_>) -> Option<(Word, Word)> {
    let chars: Vec<char> = word.raw.chars().collect();
    if chars.len() < 6 || lexicon.doc_freq(&word.stem) > 0 {
        return None;
    }
    let mut best: Option<(u64, Word, Word)> = None;
    for cut in 3..=chars.len() - 3 {
        let left: String = chars[..cut].iter().collect();
        let right: String = chars[cut..].iter().collect();
        let (Some(left_stem), Some(right_stem)) = (
            lexicon.stems(&left).into_iter().next(),
            lexicon.stems(&right).into_iter().next(),
        ) else {
            continue;
        };
        let support = lexicon
            .doc_freq(&left_stem)
            .min(lexicon.doc_freq(&right_stem));
        if support > 0 && best.as_ref().is_none_or(|(b, ..)| support > *b) {
            best = Some((
                support,
                Word::typed(left, left_stem),
                Word::typed(right, right_stem),
            ));
        }
    }
    best.map(|(_, left, right)| (left, right))
}

/// The most edits a word of `chars` characters may be away from its correction.
fn max_edits(chars: usize) -> usize {
    if chars >= 8 {
        2
    } else {
        1
    }
}

/// For a word of five letters or more that nothing in the archive holds: the nearest word
/// of the ontology or, failing that, of the archive's vocabulary (fewest edits, then most
/// documents). A word the archive holds but rarely, one edit from an ontology word at least
/// [`RARE_SPELLING_RATIO`] times as common, is read as both (reports misspell too).
fn correction(word: &Word, lexicon: &mut Lexicon<'_>, ontology: bool) -> Option<Word> {
    let chars = word.raw.chars().count();
    if chars < FUZZY_MIN_CHARS || word.raw.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    if ontology && ontology_words().contains_key(&word.raw) {
        return None;
    }
    let typed_freq = lexicon.doc_freq(&word.stem);
    if typed_freq > 0 {
        return ontology
            .then(|| rare_spelling(word, typed_freq, lexicon))
            .flatten();
    }
    let limit = max_edits(chars);
    // (edits, documents, word, stem): fewest edits, then most documents.
    let mut best: Option<(usize, u64, String, String)> = None;
    let consider = |best: &mut Option<(usize, u64, String, String)>,
                    distance: usize,
                    freq: u64,
                    raw: &str,
                    stem: &str| {
        let better = best
            .as_ref()
            .is_none_or(|(d, f, ..)| distance < *d || (distance == *d && freq > *f));
        if better {
            *best = Some((distance, freq, raw.to_string(), stem.to_string()));
        }
    };
    if ontology {
        for (raw, stem) in ontology_words() {
            if let Some(distance) = edit_distance(&word.raw, raw, limit) {
                let freq = lexicon.doc_freq(stem);
                consider(&mut best, distance, freq, raw, stem);
            }
        }
    }
    if best.is_none() {
        for (term, freq) in lexicon.vocabulary {
            if let Some(distance) = edit_distance(&word.stem, term, limit) {
                consider(&mut best, distance, *freq, term, term);
            }
        }
    }
    let (_, freq, raw, stem) = best?;
    // A correction nothing can match corrects nothing.
    let in_ontology = ontology && ontology_words().contains_key(&raw);
    (freq > 0 || in_ontology).then_some(Word {
        corrected: true,
        ..Word::typed(raw, stem)
    })
}

/// How much more common an ontology word must be than a rare spelling one edit away.
const RARE_SPELLING_RATIO: u64 = 3;

fn rare_spelling(word: &Word, typed_freq: u64, lexicon: &mut Lexicon<'_>) -> Option<Word> {
    let mut best: Option<(u64, &String, &String)> = None;
    for (raw, stem) in ontology_words() {
        if edit_distance(&word.raw, raw, 1).is_none() {
            continue;
        }
        let freq = lexicon.doc_freq(stem);
        if freq >= RARE_SPELLING_RATIO * typed_freq && best.is_none_or(|(f, ..)| freq > f) {
            best = Some((freq, raw, stem));
        }
    }
    let (_, raw, stem) = best?;
    Some(Word {
        corrected: true,
        typed_stem: Some(word.stem.clone()),
        ..Word::typed(raw.clone(), stem.clone())
    })
}

/// Every word of an ontology term or synonym, with its stem.
fn ontology_words() -> &'static HashMap<String, String> {
    static WORDS: OnceLock<HashMap<String, String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        let mut analyzer = english_analyzer();
        let mut words = HashMap::new();
        for term in Ontology::lesanet().terms() {
            for name in term.synonyms.iter().chain(std::iter::once(&term.term)) {
                for raw in name.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
                    if raw.chars().count() < FUZZY_MIN_CHARS || words.contains_key(raw) {
                        continue;
                    }
                    let mut stream = analyzer.token_stream(raw);
                    if let Some(token) = stream.next() {
                        words.insert(raw.to_string(), token.text.clone());
                    }
                }
            }
        }
        words
    })
}

/// The tokens `analyzer` makes of `text`: the stems the index holds.
fn stems_with(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// The analyzer the text fields are indexed with (`en_stem`): tantivy's default tokens,
/// lower-cased, Porter-stemmed.
pub(super) fn english_analyzer() -> TextAnalyzer {
    use tantivy::tokenizer::{Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer};
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Ontology terms by the stems of every name and synonym, joined by spaces.
fn ontology_by_stems() -> &'static HashMap<String, &'static OntologyTerm> {
    static BY_STEMS: OnceLock<HashMap<String, &'static OntologyTerm>> = OnceLock::new();
    BY_STEMS.get_or_init(|| {
        let mut analyzer = english_analyzer();
        let mut stems_of = |name: &str| stems_with(&mut analyzer, name).join(" ");
        let ontology = Ontology::lesanet();
        let mut map = HashMap::new();
        for term in ontology.terms() {
            for name in &term.synonyms {
                map.entry(stems_of(name)).or_insert(term);
            }
        }
        // A term's own name wins over another term's synonym.
        for term in ontology.terms() {
            map.insert(stems_of(&term.term), term);
        }
        map
    })
}

/// For each ontology term of several words, a one-word name or synonym of its own (stemmed)
/// that finds exactly the reports whose mentioned terms include it. A report's expanded
/// field holds every name of each term it mentions and of their ancestors, so the word finds
/// the term's reports; it finds no others when every term whose names hold the word is the
/// term or a descendant of it ("lymph" qualifies for lymph node; "bladder" does not for
/// urinary bladder, since the gallbladder is also called "gall bladder").
fn exact_words_of_terms() -> &'static HashMap<String, String> {
    static WORDS: OnceLock<HashMap<String, String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        let ontology = Ontology::lesanet();
        let mut analyzer = english_analyzer();
        let mut stems_of = |name: &str| stems_with(&mut analyzer, name);
        let names = |t: &'static OntologyTerm| std::iter::once(&t.term).chain(&t.synonyms);
        // Which terms hold each stem among their names.
        let mut holders: HashMap<String, Vec<&'static OntologyTerm>> = HashMap::new();
        let mut own_words: Vec<(&'static OntologyTerm, Vec<String>)> = Vec::new();
        for term in ontology.terms() {
            let mut single = Vec::new();
            for name in names(term) {
                let stems = stems_of(name);
                if stems.len() == 1 {
                    single.push(stems[0].clone());
                }
                for stem in stems {
                    let list = holders.entry(stem).or_default();
                    if !list.iter().any(|t| std::ptr::eq(*t, term)) {
                        list.push(term);
                    }
                }
            }
            if stems_of(&term.term).len() > 1 {
                own_words.push((term, single));
            }
        }
        let within = |holder: &OntologyTerm, term: &OntologyTerm| {
            holder.term == term.term
                || ontology
                    .ancestors(&holder.term)
                    .iter()
                    .any(|a| a.term == term.term)
        };
        own_words
            .into_iter()
            .filter_map(|(term, words)| {
                let exact = words
                    .into_iter()
                    .find(|word| holders[word].iter().all(|holder| within(holder, term)))?;
                Some((term.term.clone(), exact))
            })
            .collect()
    })
}

/// Longest runs of words naming an ontology term first; every other word is a concept of
/// its own.
fn concepts_of(words: &[Word], lexicon: &mut Lexicon<'_>, ontology: bool) -> Vec<Concept> {
    let by_stems = ontology_by_stems();
    let mut concepts = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let term = ontology
            .then(|| {
                (1..=5.min(words.len() - i)).rev().find_map(|len| {
                    // A word a lay term only suggests does not join a term with words that
                    // were typed: "liver lump" is liver, ranked by mass, not "liver mass".
                    let run = &words[i..i + len];
                    if run.iter().any(|w| w.ranks_only != run[0].ranks_only) {
                        return None;
                    }
                    let key: Vec<&str> = run.iter().map(|w| w.stem.as_str()).collect();
                    by_stems.get(&key.join(" ")).map(|t| (len, *t))
                })
            })
            .flatten();
        match term {
            Some((len, term)) => {
                let run = &words[i..i + len];
                concepts.push(term_concept(run, term, lexicon));
                i += len;
            }
            None => {
                let word = &words[i];
                let boost = if word.corrected { CORRECTED_BOOST } else { 1.0 };
                let mut spellings = vec![Spelling {
                    stems: vec![word.stem.clone()],
                    boost,
                }];
                if let Some(typed) = &word.typed_stem {
                    spellings.push(Spelling {
                        stems: vec![typed.clone()],
                        boost: 1.0,
                    });
                }
                concepts.push(Concept {
                    words: spellings,
                    terms: Vec::new(),
                    parts: Vec::new(),
                    required: !word.ranks_only && !GENERIC_WORDS.contains(&word.raw.as_str()),
                });
                i += 1;
            }
        }
    }
    concepts
}

/// A run of words naming an ontology term: the words as typed, every synonym, and the term
/// among the terms reports mention (which holds the reports that name a descendant).
fn term_concept(run: &[Word], term: &OntologyTerm, lexicon: &mut Lexicon<'_>) -> Concept {
    let boost = if run.iter().any(|w| w.corrected) {
        CORRECTED_BOOST
    } else {
        1.0
    };
    let mut words = vec![Spelling {
        stems: run.iter().map(|w| w.stem.clone()).collect(),
        boost,
    }];
    if run.iter().any(|w| w.typed_stem.is_some()) {
        words.push(Spelling {
            stems: run
                .iter()
                .map(|w| w.typed_stem.clone().unwrap_or_else(|| w.stem.clone()))
                .collect(),
            boost: 1.0,
        });
    }
    for name in term.synonyms.iter().chain(std::iter::once(&term.term)) {
        let stems = lexicon.stems(name);
        if !stems.is_empty() && !words.iter().any(|s| s.stems == stems) {
            words.push(Spelling { stems, boost });
        }
    }
    // Among the terms a report mentions, a word of the term's own that no unrelated term
    // holds finds it without reading positions ("lymph" for lymph node).
    let stems = match exact_words_of_terms().get(&term.term) {
        Some(word) => vec![word.clone()],
        None => lexicon.stems(&term.term),
    };
    let terms = vec![Spelling { stems, boost }];
    let generic = run
        .iter()
        .all(|w| w.ranks_only || GENERIC_WORDS.contains(&w.raw.as_str()));
    let mut parts: Vec<Concept> = Vec::new();
    let mut names_the_whole = false;
    if run.len() > 1 {
        let words_apart = run
            .iter()
            .filter(|w| !w.ranks_only && !GENERIC_WORDS.contains(&w.raw.as_str()));
        for word in words_apart {
            for part in concepts_of(std::slice::from_ref(word), lexicon, true) {
                // A word that names the whole term again ("lymph" of "lymph node") matches
                // only what the term matches, so the words apart can add nothing; two words
                // of one term count once. Each would be one more scorer over every match.
                if !part.terms.is_empty() && part.terms == terms {
                    names_the_whole = true;
                }
                let repeated = parts
                    .iter()
                    .any(|p| p.terms == part.terms && p.words == part.words);
                if !repeated {
                    parts.push(part);
                }
            }
        }
    }
    if names_the_whole {
        parts.clear();
    }
    Concept {
        words,
        terms,
        parts,
        required: !generic,
    }
}

fn spelling_query(field: Field, spelling: &Spelling, boost: f32) -> Box<dyn Query> {
    let terms: Vec<Term> = spelling
        .stems
        .iter()
        .map(|s| Term::from_field_text(field, s))
        .collect();
    let query: Box<dyn Query> = if terms.len() == 1 {
        Box::new(TermQuery::new(
            terms.into_iter().next().expect("one term"),
            IndexRecordOption::WithFreqs,
        ))
    } else {
        Box::new(PhraseQuery::new(terms))
    };
    Box::new(BoostQuery::new(query, boost * spelling.boost))
}

/// One disjunction-max clause over every spelling of the concept in every field.
fn concept_query(concept: &Concept, fields: SearchedFields) -> Box<dyn Query> {
    let mut spellings: Vec<Box<dyn Query>> = Vec::new();
    // A phrase one of whose words alone spells the concept ("lymph node" beside "lymph")
    // matches nothing that word does not, and reading its positions over every match was
    // most of a query's time.
    let single_words: Vec<&str> = concept
        .words
        .iter()
        .filter(|s| s.stems.len() == 1)
        .map(|s| s.stems[0].as_str())
        .collect();
    let needed = |spelling: &&Spelling| {
        spelling.stems.len() == 1
            || !spelling
                .stems
                .iter()
                .any(|stem| single_words.contains(&stem.as_str()))
    };
    for spelling in concept.words.iter().filter(needed) {
        spellings.push(spelling_query(fields.report, spelling, REPORT_BOOST));
        spellings.push(spelling_query(fields.tags, spelling, TAGS_BOOST));
    }
    for spelling in &concept.terms {
        spellings.push(spelling_query(fields.expanded, spelling, EXPANDED_BOOST));
    }
    if concept.parts.len() > 1 {
        let apart = concept
            .parts
            .iter()
            .map(|part| (Occur::Must, concept_query(part, fields)))
            .collect();
        spellings.push(Box::new(BoostQuery::new(
            Box::new(BooleanQuery::new(apart)),
            PARTS_BOOST,
        )));
    }
    Box::new(DisjunctionMaxQuery::with_tie_breaker(
        spellings,
        TIE_BREAKER,
    ))
}

/// Whether any document holds a spelling of the concept (phrases by their rarest word).
fn matchable(concept: &Concept, lexicon: &Lexicon<'_>) -> bool {
    let spelt = concept
        .words
        .iter()
        .chain(&concept.terms)
        .any(|s| s.stems.iter().all(|stem| lexicon.doc_freq(stem) > 0));
    spelt || (concept.parts.len() > 1 && concept.parts.iter().all(|p| matchable(p, lexicon)))
}

/// Every matchable concept required, the rest ranking only; any concept at all when no
/// document holds every required one.
fn build(concepts: &[Concept], lexicon: &Lexicon<'_>) -> Box<dyn Query> {
    if concepts.is_empty() {
        return Box::new(EmptyQuery);
    }
    let fields = lexicon.fields;
    let required: Vec<bool> = concepts
        .iter()
        .map(|c| c.required && matchable(c, lexicon))
        .collect();
    let clauses = |all: bool| -> Vec<(Occur, Box<dyn Query>)> {
        concepts
            .iter()
            .zip(&required)
            .map(|(c, &req)| {
                let occur = if all && req {
                    Occur::Must
                } else {
                    Occur::Should
                };
                (occur, concept_query(c, fields))
            })
            .collect()
    };
    if required.iter().any(|&r| r) {
        let all = BooleanQuery::new(clauses(true));
        if matches_any(&all, lexicon.searcher) {
            return Box::new(all);
        }
    }
    Box::new(BooleanQuery::new(clauses(false)))
}

/// Whether `query` matches any document: the first match of each segment's scorer, not a
/// count over every match (the match set is collected once, by the search itself).
fn matches_any(query: &dyn Query, searcher: &Searcher) -> bool {
    let Ok(weight) = query.weight(tantivy::query::EnableScoring::disabled_from_searcher(
        searcher,
    )) else {
        return false;
    };
    searcher.segment_readers().iter().any(|segment| {
        weight
            .scorer(segment, 1.0)
            .is_ok_and(|scorer| scorer.doc() != tantivy::TERMINATED)
    })
}

/// Optimal-string-alignment distance (a swap of neighbours is one edit), or `None` when it
/// is more than `limit`.
pub fn edit_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let width = b.len() + 1;
    let mut rows = vec![vec![0usize; width]; 3];
    for (j, cell) in rows[1].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        let (cur, prev, prev2) = (i % 3, (i + 2) % 3, (i + 1) % 3);
        rows[cur][0] = i;
        let mut row_min = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[prev][j] + 1)
                .min(rows[cur][j - 1] + 1)
                .min(rows[prev][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[prev2][j - 2] + 1);
            }
            rows[cur][j] = d;
            row_min = row_min.min(d);
        }
        if row_min > limit {
            return None;
        }
    }
    let d = rows[a.len() % 3][b.len()];
    (d <= limit).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_swaps_once_and_stops_at_the_limit() {
        assert_eq!(edit_distance("kidny", "kidney", 1), Some(1));
        assert_eq!(edit_distance("nodlue", "nodule", 1), Some(1));
        assert_eq!(edit_distance("pulmonery", "pulmonary", 2), Some(1));
        assert_eq!(edit_distance("liver", "liver", 1), Some(0));
        assert_eq!(edit_distance("liver", "spleen", 2), None);
        assert_eq!(edit_distance("abc", "abcdef", 2), None);
    }

    #[test]
    fn operators_quotes_and_fields_are_syntax_plain_words_are_not() {
        for plain in [
            "hepatic lesion",
            "para-aortic lymph node",
            "LN",
            "kidny cyst",
        ] {
            assert!(!has_syntax(plain), "{plain}");
        }
        for syntax in [
            "\"lymph node\"",
            "report:liver",
            "liver -cyst",
            "+liver cyst",
            "liver OR kidney",
            "(liver)",
            "nod*",
        ] {
            assert!(has_syntax(syntax), "{syntax}");
        }
    }

    #[test]
    fn the_curated_abbreviations_load() {
        let table = abbreviations();
        assert!(table.len() >= 20, "{} abbreviations", table.len());
        assert_eq!(table.get("ln").map(String::as_str), Some("lymph node"));
    }

    #[test]
    fn the_curated_lay_terms_load_with_their_strength() {
        let (table, longest) = lay_terms();
        assert!(table.len() >= 100, "{} lay terms", table.len());
        assert!(*longest >= 4, "longest lay term {longest} words");
        let armpit = table.get("armpit").expect("armpit");
        assert_eq!((armpit.clinical.as_str(), armpit.exact), ("axilla", true));
        let lump = table.get("lump").expect("lump");
        assert_eq!((lump.clinical.as_str(), lump.exact), ("mass", false));
        assert!(
            table.contains_key("near the aorta"),
            "stop words kept in lay phrases"
        );
        assert!(
            table.contains_key("non cancerous"),
            "hyphens read as spaces"
        );
        // Every row is read: none repeated, each strength spelt exactly.
        let rows: Vec<&str> = LAY_TERMS_TSV.lines().skip(1).collect();
        assert_eq!(table.len(), rows.len(), "a lay term is listed twice");
        for row in rows {
            let strength = row.split('\t').nth(2).unwrap_or("");
            assert!(matches!(strength, "exact" | "broad"), "{row}");
        }
    }

    #[test]
    fn a_term_is_found_by_one_word_only_where_no_unrelated_term_holds_it() {
        let words = exact_words_of_terms();
        assert_eq!(words.get("lymph node").map(String::as_str), Some("lymph"));
        // The gallbladder is also "gall bladder": the bladder needs its phrase.
        assert_eq!(words.get("urinary bladder"), None);
        assert!(words.len() >= 5, "{words:?}");
    }

    #[test]
    fn ontology_names_are_found_by_their_stems() {
        let by_stems = ontology_by_stems();
        assert_eq!(
            by_stems.get("hepat").map(|t| t.term.as_str()),
            Some("liver")
        );
        assert_eq!(
            by_stems.get("lymph node").map(|t| t.term.as_str()),
            Some("lymph node")
        );
    }
}
