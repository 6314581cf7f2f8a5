//! The LesaNet lesion ontology: 333 terms (body parts, types, attributes) with synonyms,
//! parents, children and mutually exclusive terms, adapted from RadLex by NIH CADLab.
//!
//! The table ships inside the library (`data/lesanet/`, BSD-style licence beside it), so
//! report generation and query expansion never depend on the working directory.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;

const LESANET_CSV: &str = include_str!("../data/lesanet/lesion_ontology_181022.csv");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TermClass {
    BodyPart,
    Type,
    Attribute,
}

#[derive(Debug, Clone, Serialize)]
pub struct Term {
    pub id: u32,
    pub class: TermClass,
    pub term: String,
    /// Other spellings, the term itself included, as the source lists them.
    pub synonyms: Vec<String>,
    pub parents: Vec<String>,
    pub children: Vec<String>,
    pub exclusive: Vec<String>,
}

/// The ontology, with lookup by term or synonym (case-insensitive).
#[derive(Debug)]
pub struct Ontology {
    terms: Vec<Term>,
    by_name: HashMap<String, usize>,
}

impl Ontology {
    /// The LesaNet ontology bundled with the library.
    pub fn lesanet() -> &'static Ontology {
        static ONTOLOGY: OnceLock<Ontology> = OnceLock::new();
        ONTOLOGY.get_or_init(|| {
            Ontology::parse(LESANET_CSV).expect("bundled LesaNet ontology is well-formed")
        })
    }

    /// Parses the LesaNet CSV layout:
    /// `id,class,term,synonyms,num_detected,term_exclusive,term_parents,term_children`.
    pub fn parse(csv_text: &str) -> Result<Ontology, String> {
        // The source file has ragged rows (trailing empty fields dropped or doubled).
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(csv_text.as_bytes());
        let list = |s: &str| -> Vec<String> {
            s.split('|')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        };
        let mut terms = Vec::new();
        for (i, row) in reader.records().enumerate() {
            let row = row.map_err(|e| format!("ontology row {}: {e}", i + 2))?;
            let field = |n: usize| row.get(n).unwrap_or("");
            let class = match field(1) {
                "bodypart" => TermClass::BodyPart,
                "type" => TermClass::Type,
                "attribute" => TermClass::Attribute,
                other => return Err(format!("ontology row {}: unknown class `{other}`", i + 2)),
            };
            terms.push(Term {
                id: field(0)
                    .parse()
                    .map_err(|_| format!("ontology row {}: id `{}`", i + 2, field(0)))?,
                class,
                term: field(2).trim().to_string(),
                synonyms: list(field(3)),
                exclusive: list(field(5)),
                parents: list(field(6)),
                children: list(field(7)),
            });
        }
        let mut by_name = HashMap::new();
        for (i, t) in terms.iter().enumerate() {
            for name in t.synonyms.iter().chain(std::iter::once(&t.term)) {
                by_name.entry(name.to_lowercase()).or_insert(i);
            }
        }
        // A term's own name wins over another term's synonym.
        for (i, t) in terms.iter().enumerate() {
            by_name.insert(t.term.to_lowercase(), i);
        }
        Ok(Ontology { terms, by_name })
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The term named or spelled `name` (any synonym), case-insensitive.
    pub fn find(&self, name: &str) -> Option<&Term> {
        self.by_name
            .get(&name.trim().to_lowercase())
            .map(|&i| &self.terms[i])
    }

    /// Every ancestor of a term, nearest first.
    pub fn ancestors(&self, name: &str) -> Vec<&Term> {
        let mut out: Vec<&Term> = Vec::new();
        let mut frontier: Vec<&Term> = self.find(name).into_iter().collect();
        while let Some(t) = frontier.pop() {
            for p in &t.parents {
                if let Some(parent) = self.find(p) {
                    if !out.iter().any(|o| o.id == parent.id) {
                        out.push(parent);
                        frontier.push(parent);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_ontology_has_every_term_and_its_synonyms() {
        let o = Ontology::lesanet();
        assert_eq!(o.terms().len(), 333);
        assert_eq!(o.find("renal").unwrap().term, "kidney");
        assert_eq!(o.find("Hepatic").unwrap().term, "liver");
        let ancestors: Vec<&str> = o
            .ancestors("right lower lobe")
            .iter()
            .map(|t| t.term.as_str())
            .collect();
        assert!(ancestors.contains(&"lung"), "{ancestors:?}");
    }
}
