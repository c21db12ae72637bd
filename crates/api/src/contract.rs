//! What the manager's and the edge's OpenAPI documents share: the error body, the string formats the
//! servers parse (names, key ids, timestamps, free text), and the answers every endpoint of a kind can give.
//!
//! The documents are contracts that `scripts/contract` holds the servers to: a request that matches the
//! schema must be accepted, one that does not must be refused with a documented 4xx. So each format here
//! states exactly what the matching parser (`Label::parse`, `KeyId::parse`, `Timestamp::parse_rfc3339`,
//! ...) takes, and [`StandardAnswers`] adds the refusals the shared extractors produce (400 not JSON, 413
//! too large, 415 not `application/json`, 422 invalid, 401/403 for the token) to every operation they can
//! come from, so a handler's annotation lists only what is particular to it.

use serde::{Deserialize, Serialize};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        ContentBuilder, OpenApi, RefOr, ResponseBuilder,
        path::{Operation, ParameterIn},
        schema::{ObjectBuilder, Schema, Type},
    },
};

/// An error as every Quench API returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_json`, `invalid_request`, `unauthorized`, `forbidden`, `not_found`, ...
    pub code: String,
    pub message: String,
}

/// A string schema: a named component whose pattern and lengths match a parser on the server.
macro_rules! string_format {
    ($(#[$doc:meta])* $name:ident, $description:expr, $pattern:expr, $min:expr, $max:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some($description))
                    .pattern(Some($pattern))
                    .min_length($min)
                    .max_length($max)
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

/// Characters that are not control characters (Unicode category Cc), as a regex class body.
const NOT_CONTROL: &str = r"^\x00-\x1f\x7f-\x9f";

fn visible_text_pattern() -> String {
    // No control character anywhere, and at least one character that is not white space.
    format!(
        r"^[{NOT_CONTROL}]*[^\s{}][{NOT_CONTROL}]*$",
        &NOT_CONTROL[1..]
    )
}

string_format!(
    /// An owner, API name or scope (`quench_core::Label`/`Owner`).
    Name,
    "1 to 128 of the characters A-Z a-z 0-9 . _ : @ / + -",
    r"^[A-Za-z0-9._:@/+-]+$",
    Some(1),
    Some(quench_core::names::LABEL_MAX)
);
string_format!(
    /// A key or token id (`quench_core::KeyId`).
    KeyIdText,
    "A key id: 10 base62 characters",
    "^[0-9A-Za-z]{10}$",
    Some(quench_core::key::KEY_ID_LEN),
    Some(quench_core::key::KEY_ID_LEN)
);
string_format!(
    /// An opaque page cursor: what `next_cursor` returned.
    Cursor,
    "The `next_cursor` of the previous page",
    "^[0-9]{1,19}$",
    Some(1),
    Some(19)
);
string_format!(
    /// An instant (`quench_core::Timestamp`): RFC 3339 between 1971 and 9999.
    Instant,
    "RFC 3339, e.g. 2030-01-28T12:00:00Z, between the years 1971 and 9999",
    r"^(197[1-9]|19[89][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
    None,
    None
);
string_format!(
    /// A short machine name in an edge's alert report: letters, digits and `- _ . : @`.
    ShortName,
    "1 to 128 of the characters A-Z a-z 0-9 - _ . : @",
    "^[A-Za-z0-9_.:@-]+$",
    Some(1),
    Some(128)
);

/// Free text a person reads (a key's name, a revocation reason): no control characters, not blank.
pub fn visible_text(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(visible_text_pattern()))
        .min_length(Some(1))
        .max_length(Some(max))
}

/// Does `text` match [`visible_text`] (without the length)? The servers check exactly this.
pub fn is_visible_text(text: &str) -> bool {
    !text.chars().any(char::is_control) && text.chars().any(|c| !c.is_whitespace())
}

fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorResponse",
                ))))
                .build(),
        )
        .into()
}

/// Documents an error answer (`ErrorResponse`) for `status`, unless the operation already describes one.
pub fn add_answer(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if !responses.contains_key(status) {
        responses.insert(status.to_owned(), error_answer(description));
    }
}

/// Adds to every operation the refusals the shared extractors and the token check can give.
pub struct StandardAnswers;

impl utoipa::Modify for StandardAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                standard_answers(operation);
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in [
            ("ErrorResponse", ErrorResponse::schema()),
            ("ErrorDetail", ErrorDetail::schema()),
        ] {
            components.schemas.entry(name.to_owned()).or_insert(schema);
        }
    }
}

fn standard_answers(operation: &mut Operation) {
    if operation.request_body.is_some() {
        add_answer(
            operation,
            "400",
            "The body is not JSON (`invalid_json`) or could not be read (`bad_body`)",
        );
        add_answer(operation, "413", "The body is larger than 64 KiB");
        add_answer(
            operation,
            "415",
            "The body was not sent as `Content-Type: application/json`",
        );
        add_answer(
            operation,
            "422",
            "A field is missing, unknown, of the wrong type or out of range",
        );
    }
    let has_query = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    if has_query {
        add_answer(operation, "422", "A query parameter is not valid");
    }
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    if secured {
        add_answer(operation, "401", "No token, or not a valid one");
        add_answer(
            operation,
            "403",
            "The token lacks the scope, or is confined to another owner",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_is_what_the_pattern_says() {
        assert!(is_visible_text("leaked in a CI log"));
        assert!(is_visible_text(" x "));
        assert!(!is_visible_text(""));
        assert!(!is_visible_text("   "));
        assert!(!is_visible_text("two\nlines"));
        assert!(!is_visible_text("bell\u{7}"));
        assert!(!is_visible_text("c1\u{85}"));
        assert_eq!(
            visible_text_pattern(),
            r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        );
    }
}
