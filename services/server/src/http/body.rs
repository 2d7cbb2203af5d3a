//! Reading JSON request bodies within the size limit.
//!
//! axum's `Json` extractor answers malformed or oversized bodies with plain
//! text; the API promises its JSON error body for those too, so bodies are
//! read here: at most `limits.request_bytes_max` bytes (413 beyond), then
//! parsed (400 with the parser's message and position on failure).

use axum::body::Body;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Reads and parses a JSON body. An empty body parses as `null`, so that
/// optional bodies can be `Option<T>`. A body that must be one object
/// (every endpoint but the fault rules' list) is read by [`read_object`].
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_bytes(body, limit).await?;
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
    serde_json::from_slice(text).map_err(|error| ApiError::bad_request(format!("malformed JSON: {error}")))
}

/// The body, at most `limit` bytes.
async fn read_bytes(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        // `to_bytes` fails either on the limit (its source is http-body's
        // `LengthLimitError`) or on a broken connection.
        if format!("{error:?}").contains("LengthLimit") {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("cannot read the body: {error}"))
        }
    })
}

/// [`read_json`] of a body that must be a JSON object (or empty): an array
/// or a scalar is refused with `22023`, though serde would read an array
/// into a struct field by field.
pub async fn read_object<T: DeserializeOwned>(body: Body, limit: usize) -> Result<Option<T>, ApiError> {
    let bytes = read_bytes(body, limit).await?;
    let text = bytes.trim_ascii();
    match text.first() {
        None => return Ok(None),
        Some(b'n') if text == b"null" => return Ok(None),
        Some(b'{') => {}
        Some(_) => {
            return Err(match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Err(error) => ApiError::bad_request(format!("malformed JSON: {error}")),
                Ok(_) => ApiError::new("22023", "the request body must be a JSON object"),
            });
        }
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|error| ApiError::bad_request(format!("malformed JSON: {error}")))
}

/// Deserializes `T` from a JSON object only (a derived struct would also
/// take an array of its fields in order): for `Deserialize` impls of
/// request parts that may sit inside lists.
pub fn from_object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_map(Object(std::marker::PhantomData))
}
