//! The query vector of a search: the example (an uploaded image's box, a stored lesion),
//! moved towards liked and away from disliked results (Rocchio).

use std::borrow::Cow;
use std::time::Instant;

use super::response::ms;
use super::{Engine, ImageQuery, SearchRequest, SearchResponse};
use crate::embed::l2_normalised;
use crate::error::{Error, Result};
use crate::imaging::{extract_patch, PatchGeometry, SliceStack};

/// Rocchio weights for refining with liked and disliked results.
const POSITIVE_WEIGHT: f32 = 0.75;
const NEGATIVE_WEIGHT: f32 = 0.25;

impl Engine {
    /// The stored vector of a live lesion; an error naming `field` for any other id.
    pub(super) fn live_vector(&self, id: u32, field: &str) -> Result<Cow<'_, [f32]>> {
        if self.catalog.get(id).is_none() {
            return Err(Error::invalid_argument(
                field,
                format!("lesion {id} is not in the index"),
            ));
        }
        self.backend.vector(id)
    }

    /// The embedding of a boxed region of an uploaded slice, and the spacing assumed when
    /// neither the query nor the file stated one.
    pub fn embed_image(&self, query: &ImageQuery) -> Result<(Vec<f32>, Option<f32>)> {
        let (spacing, assumed) = query.spacing()?;
        let geometry = PatchGeometry {
            bbox: query.bbox,
            spacing_mm: spacing,
            slice_interval_mm: 0.0,
            own_window: query.image.window,
        };
        let card = self.model.card();
        let patch = extract_patch(&SliceStack::single(&query.image), &geometry, &card.patch)?;
        let vector = self
            .model
            .embed(&[patch])?
            .pop()
            .ok_or_else(|| Error::Model {
                path: card.name.clone().into(),
                message: "the model returned no embedding".into(),
            })?;
        Ok((vector, assumed))
    }

    /// The query vector: the example (image or lesion), moved towards liked and away from
    /// disliked results (Rocchio); the liked ones alone when there is no example.
    pub(super) fn query_vector(
        &self,
        request: &SearchRequest,
        response: &mut SearchResponse,
    ) -> Result<Option<Vec<f32>>> {
        let mut base = match &request.image {
            Some(image) => self.image_vector(image, request, response)?,
            None => None,
        };
        if let Some(id) = request.lesion {
            let v = self.live_vector(id, "lesion")?;
            base = Some(match base {
                Some(b) => b.iter().zip(v.iter()).map(|(a, b)| a + b).collect(),
                None => v.into_owned(),
            });
        }
        let positives = self.mean_vector(&request.positives, "positives")?;
        let negatives = self.mean_vector(&request.negatives, "negatives")?;
        let mut query = match (base, positives) {
            (Some(b), Some(p)) => b
                .iter()
                .zip(&p)
                .map(|(b, p)| b + POSITIVE_WEIGHT * p)
                .collect(),
            (Some(b), None) => b,
            (None, Some(p)) => p,
            (None, None) => return Ok(None),
        };
        if let Some(n) = negatives {
            for (q, n) in query.iter_mut().zip(&n) {
                *q -= NEGATIVE_WEIGHT * n;
            }
        }
        Ok(Some(l2_normalised(query)))
    }

    /// The uploaded example's vector; `None`, with the answer flagged degraded, when it could
    /// not be embedded or took past the image deadline.
    fn image_vector(
        &self,
        image: &ImageQuery,
        request: &SearchRequest,
        response: &mut SearchResponse,
    ) -> Result<Option<Vec<f32>>> {
        // A slice that is not CT, a box off the image or a spacing outside CT's range is the
        // caller's mistake, not a degraded service.
        image.check()?;
        let started = Instant::now();
        let outcome = self.embed_image(image);
        let took = started.elapsed();
        response.timings.embed_ms = ms(took);
        match outcome {
            Ok((vector, assumed)) => {
                response.assumed_spacing_mm = assumed;
                match request.image_deadline {
                    Some(deadline) if took > deadline => {
                        response.degraded = Some(format!(
                            "the image took {:.0} ms to embed, past the {:.0} ms deadline: text results only",
                            ms(took),
                            ms(deadline)
                        ));
                        Ok(None)
                    }
                    _ => Ok(Some(vector)),
                }
            }
            Err(e @ (Error::BoxOutsideImage { .. } | Error::InvalidArgument { .. })) => Err(e),
            Err(e) => {
                response.degraded = Some(format!(
                    "the image could not be embedded ({e}): text results only"
                ));
                Ok(None)
            }
        }
    }

    /// The mean of the stored vectors of `ids`; `None` for no ids.
    fn mean_vector(&self, ids: &[u32], field: &str) -> Result<Option<Vec<f32>>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let mut sum = vec![0.0f32; self.backend.dim()];
        for &id in ids {
            for (s, x) in sum.iter_mut().zip(self.live_vector(id, field)?.iter()) {
                *s += x;
            }
        }
        Ok(Some(sum.iter().map(|s| s / ids.len() as f32).collect()))
    }
}
