//! The error body of the API and the one table from SQLSTATE to HTTP status.
//!
//! Every failure answers `{"error": {"code", "message", "retryable"}}`
//! with the status of [`status_of`]. Errors from the SQL and transaction
//! layers arrive with their SQLSTATE already chosen (`geodb_sql::Error::code`);
//! errors of the HTTP layer itself (malformed JSON, an oversized body, an
//! unknown session, overload) are made here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client should wait before retrying a shed request.
pub const RETRY_AFTER_S: u64 = 1;

/// An API failure: status, SQLSTATE, message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retryable: bool,
    /// A list of statements stopped at this error: the answers of those
    /// before it (shown beside the error).
    pub results: Option<Vec<serde_json::Value>>,
    /// `Retry-After` (seconds) for a 429 or 503, when it is not
    /// [`RETRY_AFTER_S`].
    pub retry_after_s: Option<u64>,
}

/// The HTTP status of a SQLSTATE: the one table (API.md, "Errors").
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "40001" | "25P02" => StatusCode::CONFLICT,
        "57014" => StatusCode::REQUEST_TIMEOUT,
        "53000" | "08006" | "08007" => StatusCode::SERVICE_UNAVAILABLE,
        "53100" => StatusCode::INSUFFICIENT_STORAGE,
        "54000" => StatusCode::PAYLOAD_TOO_LARGE,
        "08003" => StatusCode::NOT_FOUND,
        "28000" | "28P01" => StatusCode::UNAUTHORIZED,
        "42501" => StatusCode::FORBIDDEN,
        "53300" => StatusCode::TOO_MANY_REQUESTS,
        _ if code.starts_with("XX") || code.starts_with("58") => StatusCode::INTERNAL_SERVER_ERROR,
        _ if code.starts_with("23") => StatusCode::CONFLICT,
        // Syntax, unknown objects, bad values, unsupported features,
        // malformed requests (classes 42, 22, 0A, 08P01, 25).
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Characters of an unknown session id that an error message repeats.
const SESSION_ID_SHOWN_MAX: usize = 80;

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: status_of(code),
            code: code.to_string(),
            message: message.into(),
            retryable: matches!(code, "40001" | "53000" | "08006"),
            results: None,
            retry_after_s: None,
        }
    }

    /// Says to retry after `wait` (rounded up to whole seconds).
    pub fn retry_after(self, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError { retry_after_s: Some(seconds.max(1)), ..self }
    }

    /// The body is not valid JSON, or not the shape the endpoint expects.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new("08P01", message)
    }

    /// The body exceeds `limits.request_bytes_max`.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new("54000", format!("request body exceeds the limit of {limit} bytes"))
    }

    pub fn unknown_session(id: &str) -> Self {
        // Never echo more of a (possibly huge) id than an id can be.
        let shown: String = id.chars().take(SESSION_ID_SHOWN_MAX).collect();
        let more = if shown.len() < id.len() { "…" } else { "" };
        ApiError::new("08003", format!("session \"{shown}{more}\" does not exist (it may have ended or timed out)"))
    }

    /// A route asked with a method it does not serve.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            ..ApiError::new("08P01", format!("{path} does not take {method} (see docs/api.md)"))
        }
    }

    /// The node is at its concurrency bound.
    pub fn overloaded(what: &str) -> Self {
        ApiError::new("53000", format!("node overloaded: {what}; retry after {RETRY_AFTER_S} s"))
    }

    pub fn not_found(path: &str) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, ..ApiError::new("08P01", format!("no such endpoint: {path}")) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new("XX000", message)
    }
}

impl From<geodb_sql::Error> for ApiError {
    fn from(error: geodb_sql::Error) -> Self {
        let mut api = ApiError::new(error.code(), error.to_string());
        // 08006 (no quorum, not the leader) is worth retrying; 08007
        // (outcome unknown) is not: the transaction may have committed.
        api.retryable = error.is_retryable() || api.code == "08006";
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message, "retryable": self.retryable}});
        if let Some(results) = self.results {
            body["results"] = json!(results);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_s.unwrap_or(RETRY_AFTER_S)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"geodb\""));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_api_contract() {
        for (code, status) in [
            ("42601", 400),
            ("42P01", 400),
            ("42703", 400),
            ("42P07", 400),
            ("22003", 400),
            ("22012", 400),
            ("23505", 409),
            ("23502", 409),
            ("40001", 409),
            ("25P02", 409),
            ("57014", 408),
            ("53000", 503),
            ("08006", 503),
            ("XX000", 500),
            ("XX001", 500),
            ("58030", 500),
            ("53100", 507),
            ("28000", 401),
            ("28P01", 401),
            ("42501", 403),
            ("53300", 429),
        ] {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
        assert!(ApiError::new("40001", "x").retryable);
        assert!(!ApiError::new("23505", "x").retryable);
    }
}
