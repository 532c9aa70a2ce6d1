//! Errors raised while parsing model specs and validating model descriptions.

/// Error from parsing a model spec or building, parsing or validating a model description.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model spec string is not `linear`, `softmax` or `mlp:` followed by hidden sizes.
    #[error(
        "invalid model spec \"{spec}\": {reason}; expected \"linear\", \"softmax\" or \"mlp:\" followed by comma-separated hidden sizes, such as \"mlp:256,128\""
    )]
    InvalidSpec {
        /// The spec string as given.
        spec: String,
        /// Reason the spec is invalid.
        reason: String,
    },

    /// The model description has invalid dimensions or an inconsistent tensor layout.
    #[error("invalid model description: {0}")]
    InvalidDescription(String),

    /// The model description text is not valid JSON of the expected form.
    #[error("invalid model description JSON: {0}")]
    Json(#[from] serde_json::Error),
}
