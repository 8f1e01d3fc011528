//! Azure OpenAI: OpenAI's request and answer bodies, at Azure's URLs. A
//! deployment is addressed by its name in the path
//! (`/openai/deployments/{name}/chat/completions?api-version=...`), or, on
//! the v1 surface (`api_version` `v1`, `latest` or `preview`), at
//! `/openai/v1/chat/completions` with the name as the body's `model`.

/// The `api-version` of a deployment that names none, here or in
/// `AZURE_API_VERSION`: the latest generally available one.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Whether `version` can go into a query as it is (`2024-10-21`,
/// `2025-04-01-preview`, `v1`).
pub fn is_api_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// The request target of `endpoint` (`/chat/completions`, ...) for the
/// deployment `name` at `api_version`.
pub fn target(endpoint: &str, name: &str, api_version: &str) -> String {
    // The Responses API is on the resource, not on a deployment.
    if endpoint == "/responses" && !matches!(api_version, "v1" | "latest" | "preview") {
        return format!("/openai/responses?api-version={api_version}");
    }
    match api_version {
        "v1" | "latest" => format!("/openai/v1{endpoint}"),
        "preview" => format!("/openai/v1{endpoint}?api-version=preview"),
        version => format!("/openai/deployments/{name}{endpoint}?api-version={version}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_and_the_v1_surface() {
        assert_eq!(
            target("/chat/completions", "gpt-4o-prod", "2024-10-21"),
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            target("/embeddings", "emb", "2025-04-01-preview"),
            "/openai/deployments/emb/embeddings?api-version=2025-04-01-preview"
        );
        assert_eq!(
            target("/chat/completions", "x", "v1"),
            "/openai/v1/chat/completions"
        );
        assert_eq!(
            target("/embeddings", "x", "latest"),
            "/openai/v1/embeddings"
        );
        assert_eq!(
            target("/chat/completions", "x", "preview"),
            "/openai/v1/chat/completions?api-version=preview"
        );
        assert_eq!(
            target("/responses", "x", "2025-04-01-preview"),
            "/openai/responses?api-version=2025-04-01-preview"
        );
        assert_eq!(target("/responses", "x", "v1"), "/openai/v1/responses");
        assert!(is_api_version("2024-10-21") && is_api_version("v1"));
        assert!(!is_api_version("") && !is_api_version("2024&x=1") && !is_api_version("a b"));
    }
}
