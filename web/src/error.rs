//! Every failure as JSON `{"error":{"code","message","field"}}` with its HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use lesion_search::Error as CoreError;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    /// The request part at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for `Retry-After` (503 when busy or timed out).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                field: None,
            },
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    /// A malformed or out-of-range request part.
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message).with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A core error met while handling `field` (the request part that carried the input).
    pub fn from_core(error: CoreError, field: &str) -> Self {
        request_fault(&error)
            .or_else(|| image_fault(&error, field))
            .or_else(|| conflict(&error, field))
            .or_else(|| unavailable(&error, field))
            // Anything else is the server's own failure: its detail (index paths, file names
            // that carry patient numbers) stays in the server's log, never in an answer.
            .unwrap_or_else(|| ApiError::server_fault(&error, "the server could not answer"))
    }

    /// 500 for a failure of the server's own (its index, its files): `what` and a reference
    /// go to the client, the error itself only to the server's log.
    pub fn server_fault(error: &CoreError, what: &str) -> Self {
        let reference = next_error_reference();
        eprintln!("error [{reference}]: {what}: {error}");
        ApiError::internal(format!(
            "{what} (error reference {reference}; the server log has the detail)"
        ))
    }
}

/// 400 or 404: an argument, box, query or lesion key of the request is at fault.
fn request_fault(error: &CoreError) -> Option<ApiError> {
    Some(match error {
        // The part is named in the message too, as in every other answer of the API.
        CoreError::InvalidArgument { name, message }
            if message.starts_with(&format!("{name}:")) =>
        {
            ApiError::bad(name, message.clone())
        }
        CoreError::InvalidArgument { name, message } => {
            ApiError::bad(name, format!("{name}: {message}"))
        }
        CoreError::BoxOutsideImage { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "box_outside_image",
            error.to_string(),
        )
        .with_field("box"),
        CoreError::QueryTooComplex { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "query_too_complex",
            error.to_string(),
        )
        .with_field("text"),
        CoreError::NoSuchLesion { name, .. } => {
            ApiError::not_found(error.to_string()).with_field(name.clone())
        }
        _ => return None,
    })
}

/// 422 or 413: the uploaded image in `field` cannot be read, is too large or is not CT.
fn image_fault(error: &CoreError, field: &str) -> Option<ApiError> {
    Some(match error {
        CoreError::Image { message, .. } | CoreError::Dicom { message, .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_image",
            format!("{field}: {message}"),
        )
        .with_field(field),
        CoreError::NoPixelData { .. } | CoreError::WrongPixelFormat { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_image",
            error.to_string(),
        )
        .with_field(field),
        CoreError::ImageTooLarge { message, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            format!("{field}: {message}"),
        )
        .with_field(field),
        CoreError::NotCt { modality, .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_ct",
            format!(
                "{field}: the DICOM modality is {modality}, not CT; only CT slices (Hounsfield units) can be searched or added"
            ),
        )
        .with_field(field),
        _ => return None,
    })
}

/// 409: the request clashes with the index (its model, its writer, a lesion it holds).
fn conflict(error: &CoreError, field: &str) -> Option<ApiError> {
    Some(match error {
        CoreError::ModelMismatch { .. } => {
            ApiError::new(StatusCode::CONFLICT, "model_mismatch", error.to_string())
        }
        // The holder and the folder are the operator's business, not the client's.
        CoreError::Locked { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "index_locked",
            "another writer holds this index; retry shortly",
        )
        .retry_after(5),
        CoreError::AlreadyInIndex { .. } => {
            ApiError::new(StatusCode::CONFLICT, "exists", error.to_string()).with_field(field)
        }
        _ => return None,
    })
}

/// 503 with `Retry-After`: the decoding budget, the search backend or the deadline ran out.
fn unavailable(error: &CoreError, field: &str) -> Option<ApiError> {
    Some(match error {
        CoreError::DecodeBudgetExhausted { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{field}: the server is decoding too many images; try again shortly"),
        )
        .retry_after(2),
        CoreError::Backend { backend, .. } => {
            // The detail (the engine's address, its message) goes to the log only.
            eprintln!("warning: search backend unavailable: {error}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                format!("the {backend} search backend did not answer; try again shortly"),
            )
            .retry_after(5)
        }
        CoreError::Cancelled { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request ran past its deadline ({error})"),
        )
        .retry_after(5),
        _ => return None,
    })
}

/// A number that ties an answer to its line in the server's log.
fn next_error_reference() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.code, self.body.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(crate::wire::ErrorReply {
            error: self.body.clone(),
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_backend_is_503_with_retry_after_and_no_address() {
        let error = ApiError::from_core(
            CoreError::Backend {
                backend: "milvus".into(),
                url: "http://10.0.0.7:19530".into(),
                message: "search: transport error".into(),
            },
            "lesion",
        );
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.retry_after, Some(5));
        assert!(
            !error.body.message.contains("10.0.0.7"),
            "{}",
            error.body.message
        );
    }
}
