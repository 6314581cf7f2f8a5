//! A search as a user states it ([`SearchInput`]) and as the engine runs it
//! ([`SearchRequest`]), with the defaults and caps every edge shares: the server and the
//! command line fill in a `SearchInput` and call [`SearchInput::into_request`], so they
//! accept and refuse the same requests with the same messages, naming the part at fault.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::input::{FilterInput, LesionRef};
use super::Engine;
use crate::dataset::PixelBox;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::imaging::{check_box, check_file_spacing, check_pixel_spacing, CtImage};
use crate::util::Cancel;

/// Hits per page when a request does not say.
pub const DEFAULT_K: usize = 20;
/// The image list's share under weighted fusion when a request gives no weight.
pub const DEFAULT_IMAGE_WEIGHT: f32 = 0.5;
/// Largest `k` the engine answers at all (exports of whole cohorts included); the edges'
/// caps ([`SearchLimits`]) are lower.
pub const MAX_K: usize = 10_000;
/// Pixel spacing assumed for an uploaded slice that states none (DeepLesion's median is
/// about 0.78 mm).
pub const ASSUMED_SPACING_MM: f32 = 0.8;

/// How deep and how long a request may ask: checked before any work is done on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// Most hits per page.
    pub max_k: usize,
    /// Deepest page offset.
    pub max_offset: usize,
    /// Longest list a request may carry (liked and disliked lesions, types, patients to
    /// exclude).
    pub max_list: usize,
}

impl SearchLimits {
    /// What the server answers by default and the command line always.
    pub const DEFAULT: SearchLimits = SearchLimits {
        max_k: 200,
        max_offset: 10_000,
        max_list: 1_000,
    };
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits::DEFAULT
    }
}

/// An uploaded slice and the box drawn on it; [`ImageQuery::new`] checks both.
#[derive(Debug, Clone)]
pub struct ImageQuery {
    pub image: CtImage,
    pub bbox: PixelBox,
    /// Overrides the spacing the file states (or the lack of one).
    pub spacing_mm: Option<f32>,
}

impl ImageQuery {
    /// A query whose slice is CT, whose box is on the slice and whose spacing (given, or the
    /// file's) is a CT pixel spacing; errors name `image`, `box` or `spacing_mm`.
    pub fn new(image: CtImage, bbox: PixelBox, spacing_mm: Option<f32>) -> Result<Self> {
        let query = ImageQuery {
            image,
            bbox,
            spacing_mm,
        };
        query.check()?;
        Ok(query)
    }

    /// The checks of [`ImageQuery::new`]; the engine repeats them for queries built
    /// field by field.
    pub fn check(&self) -> Result<()> {
        self.image.require_ct(Path::new("image"))?;
        check_box(&self.bbox, self.image.width, self.image.height)?;
        self.spacing().map(|_| ())
    }

    /// The (x, y) spacing to embed with, and the spacing assumed when neither the request
    /// nor the file gave one.
    pub fn spacing(&self) -> Result<((f32, f32), Option<f32>)> {
        match (self.spacing_mm, self.image.spacing_mm) {
            (Some(s), _) => {
                let s = check_pixel_spacing(s, "spacing_mm")?;
                Ok(((s, s), None))
            }
            (None, Some(stated)) => Ok((check_file_spacing(stated)?, None)),
            (None, None) => Ok((
                (ASSUMED_SPACING_MM, ASSUMED_SPACING_MM),
                Some(ASSUMED_SPACING_MM),
            )),
        }
    }
}

/// How the image and text lists become one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Fusion {
    /// Reciprocal rank fusion with k = 60: robust to the lists' unlike score scales.
    Rrf,
    /// Each list's scores scaled to 0..1 over its candidates, then
    /// `image_weight * image + (1 - image_weight) * text`.
    Weighted { image_weight: f32 },
}

impl Fusion {
    /// The fusion a user names (`rrf`, `weighted`; weighted when only a weight is given,
    /// rrf when neither), the weight held to 0..1; errors name `fusion` or `image_weight`.
    pub fn from_input(name: Option<&str>, image_weight: Option<f32>) -> Result<Self> {
        if let Some(w) = image_weight.filter(|w| !(0.0..=1.0).contains(w)) {
            return Err(Error::invalid_argument(
                "image_weight",
                format!("{w} is outside 0..1"),
            ));
        }
        let default = if image_weight.is_some() {
            "weighted"
        } else {
            "rrf"
        };
        match name.unwrap_or(default) {
            "rrf" => Ok(Fusion::Rrf),
            "weighted" => Ok(Fusion::Weighted {
                image_weight: image_weight.unwrap_or(DEFAULT_IMAGE_WEIGHT),
            }),
            other => Err(Error::invalid_argument(
                "fusion",
                format!("`{other}` is not rrf or weighted"),
            )),
        }
    }
}

/// One search, checked, as the engine runs it.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub text: Option<String>,
    pub image: Option<ImageQuery>,
    /// "More like this": a lesion of the archive as the example.
    pub lesion: Option<u32>,
    /// Liked and disliked results (refine).
    pub positives: Vec<u32>,
    pub negatives: Vec<u32>,
    pub filter: Filter,
    /// Leave out the patients of the example lesions (their other lesions are not news).
    pub exclude_query_patient: bool,
    pub k: usize,
    pub offset: usize,
    /// One hit per patient, the best.
    pub group_by_patient: bool,
    pub fusion: Fusion,
    /// Budget of the image path; past it the answer is text-only and flagged degraded.
    pub image_deadline: Option<Duration>,
    /// The whole request's deadline: checked between the steps, so a search its caller has
    /// given up on stops instead of running on.
    pub cancel: Cancel,
    /// Fuse the text's semantic list (report sentence vectors, cosine at least
    /// [`super::SEMANTIC_MIN_COSINE`]) with its BM25 list; the matches are then the BM25
    /// matches and the semantic ones. Needs text and an archive with report vectors.
    pub semantic: bool,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            text: None,
            image: None,
            lesion: None,
            positives: Vec::new(),
            negatives: Vec::new(),
            filter: Filter::default(),
            exclude_query_patient: true,
            k: DEFAULT_K,
            offset: 0,
            group_by_patient: true,
            fusion: Fusion::Rrf,
            image_deadline: None,
            cancel: Cancel::never(),
            semantic: false,
        }
    }
}

/// A search as a user states it, every part unchecked: what the server's JSON body or form
/// and `lesion-indexer query`'s flags fill in. [`SearchInput::default`] holds the defaults
/// both edges use.
#[derive(Debug, Clone)]
pub struct SearchInput {
    pub text: Option<String>,
    /// A slice to search by example, with `bbox` (`x1,y1,x2,y2`) drawn on it.
    pub image: Option<CtImage>,
    pub bbox: Option<String>,
    /// Pixel spacing in mm of `image`, when its file does not state it.
    pub spacing_mm: Option<f32>,
    pub lesion: Option<LesionRef>,
    pub positives: Vec<LesionRef>,
    pub negatives: Vec<LesionRef>,
    pub filters: FilterInput,
    pub exclude_query_patient: bool,
    pub k: usize,
    pub offset: usize,
    pub group_by_patient: bool,
    /// `rrf` or `weighted` (see [`Fusion::from_input`]).
    pub fusion: Option<String>,
    pub image_weight: Option<f32>,
    /// Semantic retrieval beside BM25 for the text (refused, naming `semantic`, on an
    /// archive without report vectors).
    pub semantic: bool,
}

impl Default for SearchInput {
    fn default() -> Self {
        SearchInput {
            text: None,
            image: None,
            bbox: None,
            spacing_mm: None,
            lesion: None,
            positives: Vec::new(),
            negatives: Vec::new(),
            filters: FilterInput::default(),
            exclude_query_patient: true,
            k: DEFAULT_K,
            offset: 0,
            group_by_patient: true,
            fusion: None,
            image_weight: None,
            semantic: false,
        }
    }
}

impl SearchInput {
    /// The request, every part checked against `limits` and the served archive; an error
    /// names the part at fault (`k`, `offset`, `positives[2]`, `filters.age`, `box`,
    /// `spacing_mm`, `image`, `image_weight`...).
    pub fn into_request(mut self, engine: &Engine, limits: &SearchLimits) -> Result<SearchRequest> {
        self.check_caps(limits)?;
        if self.semantic {
            engine.check_semantic()?;
        }
        let image = image_query(self.image.take(), self.bbox.as_deref(), self.spacing_mm)?;
        let refs = |list: &[LesionRef], name: &str| -> Result<Vec<u32>> {
            list.iter()
                .enumerate()
                .map(|(i, r)| engine.resolve(r, &format!("{name}[{i}]")))
                .collect()
        };
        Ok(SearchRequest {
            image,
            lesion: self
                .lesion
                .as_ref()
                .map(|r| engine.resolve(r, "lesion"))
                .transpose()?,
            positives: refs(&self.positives, "positives")?,
            negatives: refs(&self.negatives, "negatives")?,
            filter: self.filters.to_filter("filters.")?,
            fusion: Fusion::from_input(self.fusion.as_deref(), self.image_weight)?,
            text: self.text,
            exclude_query_patient: self.exclude_query_patient,
            k: self.k,
            offset: self.offset,
            group_by_patient: self.group_by_patient,
            image_deadline: None,
            cancel: Cancel::never(),
            semantic: self.semantic,
        })
    }

    /// Refuses pages and lists past `limits` before any work is done on them.
    fn check_caps(&self, limits: &SearchLimits) -> Result<()> {
        if self.k == 0 || self.k > limits.max_k {
            return Err(Error::invalid_argument(
                "k",
                format!("must be 1 to {}, not {}", limits.max_k, self.k),
            ));
        }
        if self.offset > limits.max_offset {
            return Err(Error::invalid_argument(
                "offset",
                format!(
                    "{} is past the deepest page allowed ({})",
                    self.offset, limits.max_offset
                ),
            ));
        }
        let lists = [
            ("positives", self.positives.len()),
            ("negatives", self.negatives.len()),
            (
                "filters.exclude_patients",
                self.filters.exclude_patients.len(),
            ),
            ("filters.types", self.filters.types.len()),
        ];
        for (name, len) in lists {
            if len > limits.max_list {
                return Err(Error::invalid_argument(
                    name,
                    format!("{len} entries, more than the {} allowed", limits.max_list),
                ));
            }
        }
        Ok(())
    }
}

/// The image example, checked; a box needs an image and an image a box.
fn image_query(
    image: Option<CtImage>,
    bbox: Option<&str>,
    spacing_mm: Option<f32>,
) -> Result<Option<ImageQuery>> {
    let Some(image) = image else {
        if bbox.is_some() {
            return Err(Error::invalid_argument(
                "image",
                "a box was given without an image",
            ));
        }
        return Ok(None);
    };
    // The slice is checked before the box: an MR slice is refused whatever box it has.
    image.require_ct(Path::new("image"))?;
    let text = bbox.ok_or_else(|| {
        Error::invalid_argument(
            "box",
            "an image query needs the lesion's box as x1,y1,x2,y2",
        )
    })?;
    let bbox = PixelBox::parse(text).map_err(|e| Error::invalid_argument("box", e))?;
    ImageQuery::new(image, bbox, spacing_mm).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_follows_the_weight_and_refuses_what_is_out_of_range() {
        assert_eq!(Fusion::from_input(None, None).unwrap(), Fusion::Rrf);
        assert_eq!(
            Fusion::from_input(None, Some(0.3)).unwrap(),
            Fusion::Weighted { image_weight: 0.3 }
        );
        assert_eq!(
            Fusion::from_input(Some("weighted"), None).unwrap(),
            Fusion::Weighted {
                image_weight: DEFAULT_IMAGE_WEIGHT
            }
        );
        for bad in [2.0, -0.1, f32::NAN] {
            let error = Fusion::from_input(None, Some(bad)).unwrap_err().to_string();
            assert!(error.starts_with("image_weight: "), "{error}");
        }
        let error = Fusion::from_input(Some("max"), None)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "fusion: `max` is not rrf or weighted");
    }

    #[test]
    fn caps_are_checked_by_name() {
        let limits = SearchLimits::DEFAULT;
        let refused = |input: SearchInput| input.check_caps(&limits).unwrap_err().to_string();
        let k = |k| SearchInput {
            k,
            ..Default::default()
        };
        assert_eq!(refused(k(0)), "k: must be 1 to 200, not 0");
        assert_eq!(refused(k(201)), "k: must be 1 to 200, not 201");
        assert!(k(200).check_caps(&limits).is_ok());
        let deep = SearchInput {
            offset: 10_001,
            ..Default::default()
        };
        assert!(refused(deep).starts_with("offset: 10001 is past"));
        let liked = SearchInput {
            positives: vec![LesionRef::Id(1); 1_001],
            ..Default::default()
        };
        assert!(refused(liked).starts_with("positives: 1001 entries"));
    }
}
