//! The route table: every route once, with the handler that serves it, the access it needs
//! and the shapes it takes and answers. The server registers routes from it, the OpenAPI
//! document ([`crate::openapi`]) is generated from it, and the tests hold each route to it.

use actix_web::http::Method;
use actix_web::web;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::{admin, lesions, ops, search, uploads};
use crate::access::Access;
use crate::tasks::TaskReport;
use crate::wire::{
    AddLesionForm, ExportBody, ExportReply, Health, ImageQuery, LesionDetail, OutlookOut,
    SearchBody, SearchForm, SearchReply, SimilarQuery, TaskList, TaskQuery, UploadForm, Uploaded,
};
use lesion_search::search::{Facets, FollowUps};

/// The schema of a wire type, as a reference into the document's components.
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a request carries or a reply holds.
pub enum Body {
    /// `application/json` of this type.
    Json(SchemaOf),
    /// `multipart/form-data` with these parts.
    Form(SchemaOf),
    /// Either of the two.
    JsonOrForm(SchemaOf, SchemaOf),
    /// CSV by default, or JSON of this type when asked for.
    CsvOrJson(SchemaOf),
    /// Bytes of this media type.
    Bytes(&'static str),
    /// Text of this media type.
    Text(&'static str),
}

pub struct Route {
    pub method: Method,
    /// actix-web's pattern, which is also OpenAPI's: `{name}` for a path parameter.
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub handler: fn() -> actix_web::Route,
    /// The query string's fields, when the route reads any.
    pub query: Option<SchemaOf>,
    pub request: Option<Body>,
    /// The success status, what it means, and what it carries.
    pub status: u16,
    pub answer: &'static str,
    pub reply: Body,
    /// Error statuses this route answers itself, besides those every route of its access
    /// level may answer ([`common_errors`]).
    pub errors: &'static [u16],
}

/// Errors any route of `access` may answer: another site's page (403), the host check
/// (421), a failure (500), the time cap (503), and the key checks.
pub fn common_errors(access: Access) -> &'static [u16] {
    match access {
        Access::Open => &[403, 421, 500, 503],
        Access::Read => &[401, 403, 421, 500, 503],
        Access::Admin => &[401, 403, 421, 500, 503],
    }
}

/// Errors any route that takes a body may answer (see [`crate::guard`]): a body slower than
/// the deadline (408), a length over the cap (413), its media type (415); bodies past what
/// the server may hold get the common 503.
const BODY_ERRORS: &[u16] = &[408, 413, 415];

impl Route {
    /// Every status this route may answer, sorted.
    pub fn statuses(&self) -> Vec<u16> {
        let mut all: Vec<u16> = std::iter::once(self.status)
            .chain(self.errors.iter().copied())
            .chain(common_errors(self.access).iter().copied())
            .chain(
                self.request
                    .as_ref()
                    .map_or(&[][..], |_| BODY_ERRORS)
                    .iter()
                    .copied(),
            )
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// Image routes refuse bad queries (400), unknown lesions (404) and oversized renderings.
const IMAGE_ERRORS: &[u16] = &[400, 404, 422];

pub static ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/healthz",
        access: Access::Open,
        summary: "Liveness, the served generation and its lesion count",
        handler: || web::route().to(ops::healthz),
        query: None,
        request: None,
        status: 200,
        answer: "Serving",
        reply: Body::Json(schema::<Health>),
        errors: &[],
    },
    Route {
        method: Method::GET,
        path: "/metrics",
        access: Access::Read,
        summary: "Prometheus metrics: requests by route and status, latency, index size and health",
        handler: || web::route().to(ops::metrics),
        query: None,
        request: None,
        status: 200,
        answer: "Prometheus text exposition",
        reply: Body::Text("text/plain; version=0.0.4"),
        errors: &[],
    },
    Route {
        method: Method::GET,
        path: "/api/openapi.json",
        access: Access::Open,
        summary: "This document, generated from the route table and the wire types",
        handler: || web::route().to(ops::openapi),
        query: None,
        request: None,
        status: 200,
        answer: "OpenAPI 3.1",
        reply: Body::Json(schema::<serde_json::Value>),
        errors: &[],
    },
    Route {
        method: Method::POST,
        path: "/api/search",
        access: Access::Read,
        summary: "Hybrid search: text, an image example (uploaded slice and box), a stored lesion, refinement by positives and negatives, filters",
        handler: || web::route().to(search::search),
        query: None,
        request: Some(Body::JsonOrForm(schema::<SearchBody>, schema::<SearchForm>)),
        status: 200,
        answer: "One page of hits with facets, a type suggestion and timings",
        reply: Body::Json(schema::<SearchReply>),
        errors: &[400, 404, 413, 415, 422, 503],
    },
    Route {
        method: Method::GET,
        path: "/api/facets",
        access: Access::Read,
        summary: "Counts per facet value over the whole archive",
        handler: || web::route().to(ops::facets),
        query: None,
        request: None,
        status: 200,
        answer: "Facet counts",
        reply: Body::Json(schema::<Facets>),
        errors: &[],
    },
    Route {
        method: Method::POST,
        path: "/api/export",
        access: Access::Read,
        summary: "Export a search's whole result list (a cohort) as CSV, JSON Lines or JSON, with provenance and reports",
        handler: || web::route().to(search::export),
        query: None,
        request: Some(Body::Json(schema::<ExportBody>)),
        status: 200,
        answer: "The rows, as an attachment",
        reply: Body::CsvOrJson(schema::<ExportReply>),
        errors: &[400, 404, 413, 415],
    },
    Route {
        method: Method::POST,
        path: "/api/uploads",
        access: Access::Read,
        summary: "Upload a slice to view and to search with (held in memory for a while)",
        handler: || web::route().to(uploads::upload),
        query: None,
        request: Some(Body::Form(schema::<UploadForm>)),
        status: 201,
        answer: "Held in memory",
        reply: Body::Json(schema::<Uploaded>),
        errors: &[400, 413, 415, 422],
    },
    Route {
        method: Method::GET,
        path: "/api/uploads/{upload}/image",
        access: Access::Read,
        summary: "An uploaded slice as PNG",
        handler: || web::route().to(uploads::image),
        query: Some(schema::<ImageQuery>),
        request: None,
        status: 200,
        answer: "PNG",
        reply: Body::Bytes("image/png"),
        errors: IMAGE_ERRORS,
    },
    Route {
        method: Method::GET,
        path: "/api/uploads/{upload}/pixels",
        access: Access::Read,
        summary: "An uploaded slice's pixels, little-endian int16 (HU where the file says so)",
        handler: || web::route().to(uploads::pixels),
        query: None,
        request: None,
        status: 200,
        answer: "Pixels, row by row; `X-Width`, `X-Height` and `X-Unit` describe them",
        reply: Body::Bytes("application/octet-stream"),
        errors: &[404],
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}",
        access: Access::Read,
        summary: "Everything stored about a lesion, with the patient's other lesions",
        handler: || web::route().to(lesions::detail),
        query: None,
        request: None,
        status: 200,
        answer: "The lesion",
        reply: Body::Json(schema::<LesionDetail>),
        errors: &[404],
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}/similar",
        access: Access::Read,
        summary: "More like this: lesions whose images are nearest",
        handler: || web::route().to(search::similar),
        query: Some(schema::<SimilarQuery>),
        request: None,
        status: 200,
        answer: "One page of hits",
        reply: Body::Json(schema::<SearchReply>),
        errors: &[400, 404],
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}/followups",
        access: Access::Read,
        summary: "The same lesion in the patient's other studies, with its size over time",
        handler: || web::route().to(lesions::followups),
        query: None,
        request: None,
        status: 200,
        answer: "The lesion's course and each study's candidates",
        reply: Body::Json(schema::<FollowUps>),
        errors: &[404],
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}/outlook",
        access: Access::Read,
        summary: "What became of similar lesions, framed as evidence",
        handler: || web::route().to(lesions::outlook),
        query: None,
        request: None,
        status: 200,
        answer: "Similar courses and how well they foretold real ones",
        reply: Body::Json(schema::<OutlookOut>),
        errors: &[404],
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}/image",
        access: Access::Read,
        summary: "The key slice as PNG, windowed, optionally boxed and cropped",
        handler: || web::route().to(lesions::image),
        query: Some(schema::<ImageQuery>),
        request: None,
        status: 200,
        answer: "PNG",
        reply: Body::Bytes("image/png"),
        errors: IMAGE_ERRORS,
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}/thumbnail",
        access: Access::Read,
        summary: "The lesion's stored thumbnail as PNG",
        handler: || web::route().to(lesions::thumbnail),
        query: None,
        request: None,
        status: 200,
        answer: "PNG",
        reply: Body::Bytes("image/png"),
        errors: &[404],
    },
    Route {
        method: Method::GET,
        path: "/api/lesions/{id}/pixels",
        access: Access::Read,
        summary: "The key slice's pixels in HU, little-endian int16",
        handler: || web::route().to(lesions::pixels),
        query: None,
        request: None,
        status: 200,
        answer: "Pixels, row by row; `X-Width`, `X-Height` and `X-Unit` describe them",
        reply: Body::Bytes("application/octet-stream"),
        errors: &[404, 422],
    },
    Route {
        method: Method::POST,
        path: "/api/lesions",
        access: Access::Admin,
        summary: "Add a lesion from a slice, its box and metadata; the write runs as a task",
        handler: || web::route().to(admin::create),
        query: None,
        request: Some(Body::Form(schema::<AddLesionForm>)),
        status: 202,
        answer: "Queued: the task's report; `Location` names `/api/tasks/{id}`",
        reply: Body::Json(schema::<TaskReport>),
        errors: &[400, 409, 413, 415, 422],
    },
    Route {
        method: Method::DELETE,
        path: "/api/lesions/{id}",
        access: Access::Admin,
        summary: "Delete a lesion; the write runs as a task",
        handler: || web::route().to(admin::remove),
        query: None,
        request: None,
        status: 202,
        answer: "Queued: the task's report; `Location` names `/api/tasks/{id}`",
        reply: Body::Json(schema::<TaskReport>),
        errors: &[404],
    },
    Route {
        method: Method::GET,
        path: "/api/tasks",
        access: Access::Admin,
        summary: "The most recent write tasks",
        handler: || web::route().to(admin::tasks),
        query: None,
        request: None,
        status: 200,
        answer: "Up to 100 reports, newest first",
        reply: Body::Json(schema::<TaskList>),
        errors: &[],
    },
    Route {
        method: Method::GET,
        path: "/api/tasks/{id}",
        access: Access::Admin,
        summary: "One write task's report; `wait` long-polls until it finishes",
        handler: || web::route().to(admin::task),
        query: Some(schema::<TaskQuery>),
        request: None,
        status: 200,
        answer: "The report",
        reply: Body::Json(schema::<TaskReport>),
        errors: &[400, 404],
    },
];
