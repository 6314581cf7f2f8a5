//! BERT's uncased tokenizer: text to WordPiece ids with `[CLS]` and `[SEP]`.
//!
//! The steps and their order are those of the reference ("BertNormalizer", then
//! "BertPreTokenizer", then WordPiece):
//!
//! 1. Clean: drop NUL, U+FFFD and control or format characters; every whitespace character
//!    becomes a space.
//! 2. Put spaces around CJK ideographs, so each becomes a word of its own.
//! 3. Uncased models: decompose (NFD) and drop non-spacing marks (`Hépatique` → `Hepatique`),
//!    then lowercase.
//! 4. Split on whitespace; every punctuation character (ASCII punctuation or a Unicode `P*`
//!    category) is a word of its own.
//! 5. WordPiece: the longest vocabulary entry from the start of the word, then the longest
//!    `##` continuation, and so on; a word that cannot be covered, or is longer than 100
//!    characters, is one `[UNK]`.
//! 6. `[CLS]` + the first `max_tokens - 2` pieces + `[SEP]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use crate::error::{Error, Result};

/// Words longer than this many characters are `[UNK]` (the reference's
/// `max_input_chars_per_word`).
const MAX_WORD_CHARS: usize = 100;
const CONTINUATION: &str = "##";

/// A BERT WordPiece tokenizer read from a `vocab.txt` (one token per line, the id is the
/// line's index).
#[derive(Debug, Clone)]
pub struct WordPieceTokenizer {
    vocab: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
    pad: u32,
    uncased: bool,
    max_tokens: usize,
}

impl WordPieceTokenizer {
    /// Reads `vocab.txt`; `uncased` lowercases and strips accents; `max_tokens` (at least 2)
    /// bounds every encoding, `[CLS]` and `[SEP]` included.
    pub fn from_vocab_file(path: &Path, uncased: bool, max_tokens: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_vocab(&text, path, uncased, max_tokens)
    }

    /// As [`WordPieceTokenizer::from_vocab_file`], from the file's text; `label` names it in
    /// errors.
    pub fn from_vocab(text: &str, label: &Path, uncased: bool, max_tokens: usize) -> Result<Self> {
        let mut vocab = HashMap::new();
        for (id, line) in text.lines().enumerate() {
            let id = u32::try_from(id).map_err(|_| vocab_error(label, "more than 2^32 lines"))?;
            // A token listed twice keeps its last id, as the reference reads it.
            vocab.insert(line.to_string(), id);
        }
        let special = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| vocab_error(label, &format!("no `{token}` token")))
        };
        if max_tokens < 2 {
            return Err(Error::invalid_argument(
                "max_tokens",
                format!("{max_tokens} leaves no room for [CLS] and [SEP]"),
            ));
        }
        Ok(WordPieceTokenizer {
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            pad: special("[PAD]")?,
            vocab,
            uncased,
            max_tokens,
        })
    }

    /// `[CLS]`, the text's first `max_tokens - 2` pieces, `[SEP]`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(16);
        ids.push(self.cls);
        let room = self.max_tokens - 2;
        'words: for word in pre_tokenize(&self.normalize(text)) {
            for id in self.word_pieces(&word) {
                if ids.len() > room {
                    break 'words;
                }
                ids.push(id);
            }
        }
        ids.push(self.sep);
        ids
    }

    /// The pieces of `text` as strings (no `[CLS]`, `[SEP]` or truncation), for inspection.
    pub fn pieces(&self, text: &str) -> Vec<String> {
        let names = self.id_to_token();
        pre_tokenize(&self.normalize(text))
            .iter()
            .flat_map(|w| self.word_pieces(w))
            .map(|id| names.get(&id).cloned().unwrap_or_default())
            .collect()
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The most ids [`WordPieceTokenizer::encode`] returns.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn id_to_token(&self) -> HashMap<u32, String> {
        self.vocab.iter().map(|(t, &id)| (id, t.clone())).collect()
    }

    /// Steps 1 to 3.
    fn normalize(&self, text: &str) -> String {
        let mut cleaned = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || is_control(c) {
                continue;
            }
            if is_whitespace(c) {
                cleaned.push(' ');
            } else if is_cjk(c) {
                cleaned.push(' ');
                cleaned.push(c);
                cleaned.push(' ');
            } else {
                cleaned.push(c);
            }
        }
        if !self.uncased {
            return cleaned;
        }
        let stripped: String = cleaned
            .nfd()
            .map(|(c, _)| c)
            .filter(|c| !c.is_mark_nonspacing())
            .collect();
        stripped.to_lowercase()
    }

    /// Step 5 for one word.
    fn word_pieces(&self, word: &str) -> Vec<u32> {
        if word.chars().count() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + CONTINUATION.len());
        while start < word.len() {
            let rest = &word[start..];
            let mut found = None;
            // Longest first: shorten the candidate one character at a time.
            let mut ends: Vec<usize> = rest.char_indices().map(|(i, _)| i).skip(1).collect();
            ends.push(rest.len());
            for &end in ends.iter().rev() {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(CONTINUATION);
                }
                candidate.push_str(&rest[..end]);
                if let Some(&id) = self.vocab.get(candidate.as_str()) {
                    found = Some((id, end));
                    break;
                }
            }
            match found {
                Some((id, end)) => {
                    pieces.push(id);
                    start += end;
                }
                None => return vec![self.unk],
            }
        }
        pieces
    }
}

fn vocab_error(path: &Path, message: &str) -> Error {
    Error::Model {
        path: PathBuf::from(path),
        message: format!("not a BERT vocabulary: {message}"),
    }
}

/// Step 4: whitespace separates words and is dropped; punctuation is a word of its own.
fn pre_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else if is_punctuation(c) {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            words.push(c.to_string());
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// Control, format and private-use characters, tab and line breaks excepted (they are
/// whitespace).
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// ASCII punctuation (which includes symbols such as `$`, `+` and `~`) or a Unicode
/// punctuation category.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// The CJK ideograph blocks BERT's tokenizer isolates.
fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nnod\n##ule\n##s\nliver\n.\n,\n-\nhe\n##pa\n##tique\n中\nmass\n";

    fn tokenizer(max_tokens: usize) -> WordPieceTokenizer {
        WordPieceTokenizer::from_vocab(VOCAB, Path::new("test-vocab"), true, max_tokens).unwrap()
    }

    #[test]
    fn word_pieces_take_the_longest_match_and_continue_with_hashes() {
        let t = tokenizer(64);
        assert_eq!(t.pieces("Nodules"), ["nod", "##ule", "##s"]);
        assert_eq!(t.encode("the nodule."), [2, 4, 5, 6, 9, 3]);
        // A word no sequence of pieces covers is one [UNK], whatever part of it matched.
        assert_eq!(t.encode("nodulex"), [2, 1, 3]);
        assert_eq!(t.encode(""), [2, 3]);
    }

    #[test]
    fn accents_case_punctuation_and_whitespace_are_normalised() {
        let t = tokenizer(64);
        assert_eq!(t.pieces("HÉPATIQUE"), ["he", "##pa", "##tique"]);
        // A decomposed accent (e + U+0301) is stripped the same way.
        assert_eq!(t.pieces("he\u{301}patique"), ["he", "##pa", "##tique"]);
        assert_eq!(
            t.pieces("liver,mass\t-\u{200b}the\u{a0}liver"),
            ["liver", ",", "mass", "-", "the", "liver"]
        );
        // Ideographs are words of their own; unknown scripts become [UNK], nothing panics.
        assert_eq!(t.pieces("mass中mass"), ["mass", "中", "mass"]);
        assert_eq!(t.encode("Ωμέγα \u{0}\u{fffd} 😀"), [2, 1, 1, 3]);
        // Non-ASCII symbols are not punctuation; Unicode punctuation is.
        assert_eq!(t.encode("mass±"), [2, 1, 3]);
        assert_eq!(t.pieces("mass\u{2013}liver"), ["mass", "[UNK]", "liver"]);
    }

    #[test]
    fn long_words_are_unknown_and_encodings_are_truncated() {
        let t = tokenizer(64);
        let long = "s".repeat(MAX_WORD_CHARS + 1);
        assert_eq!(t.encode(&format!("nod{long}")), [2, 1, 3]);
        let t = tokenizer(5);
        assert_eq!(t.encode("the nodules liver"), [2, 4, 5, 6, 3]);
        assert_eq!(t.max_tokens(), 5);
    }

    #[test]
    fn a_vocabulary_without_special_tokens_is_refused() {
        let err = WordPieceTokenizer::from_vocab("a\nb\n", Path::new("v.txt"), true, 8)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no `[UNK]` token"), "{err}");
        assert!(WordPieceTokenizer::from_vocab(VOCAB, Path::new("v"), true, 1).is_err());
    }
}
