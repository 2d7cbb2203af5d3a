//! Reading JSON request bodies within the size limit.
//!
//! axum's `Json` extractor answers malformed or oversized bodies with plain
//! text; the API promises its JSON error body for those too, so bodies are
//! read here: at most `limits.request_bytes_max` bytes (413 beyond), then
//! parsed (400 with the parser's message and position on failure).

use axum::body::Body;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Reads and parses a JSON body. An empty body parses as `null`, so that
/// optional bodies can be `Option<T>`.
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        // `to_bytes` fails either on the limit (its source is http-body's
        // `LengthLimitError`) or on a broken connection.
        if format!("{error:?}").contains("LengthLimit") {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("cannot read the body: {error}"))
        }
    })?;
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
    serde_json::from_slice(text).map_err(|error| ApiError::bad_request(format!("malformed JSON: {error}")))
}
