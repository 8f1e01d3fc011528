//! Provider prefixes: what the prefix of `litellm_params.model` (`groq/`,
//! `ollama/`, ...) means, as in LiteLLM. Each known prefix names its dialect
//! (URL shape, auth, transformers) and, for the OpenAI-compatible family, the
//! default base URL and how the key is sent. A deployment's prefix is looked
//! up once, when it is registered (an unknown one is refused) and when the
//! model table is built; never per request.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod chat;
pub mod gemini;

use std::fmt;

/// How a deployment is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's Chat Completions API, relayed as is.
    OpenAi,
    /// Azure OpenAI: OpenAI's bodies, relayed as is, at Azure's URLs and
    /// with Azure's `api-key`.
    Azure,
    /// Anthropic's Messages API: bodies and streams translated.
    Anthropic,
    /// AWS Bedrock's Converse API: bodies and event streams translated,
    /// every request signed (SigV4).
    Bedrock,
    /// Google AI Studio's Gemini API: bodies and streams translated.
    Gemini,
}

/// Token counts as a provider reports them, in OpenAI's terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Every prompt token, those read from and written to the provider's
    /// prompt cache included (OpenAI's `prompt_tokens`).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of the prompt tokens, those read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Of the prompt tokens, those written to the provider's prompt cache.
    pub cache_creation_tokens: u64,
}

/// A request that a dialect cannot express: answered 400
/// `invalid_request_error`, naming the field.
#[derive(Debug, PartialEq, Eq)]
pub struct TranslateError {
    /// The request field at fault (`messages[2].content`, say).
    pub field: String,
    pub message: String,
}

impl TranslateError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for TranslateError {}

/// How the provider key is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `Authorization: Bearer <api_key>`, when a key is given.
    Bearer,
    /// The provider takes no key (a local server). A key given anyway is
    /// sent as Bearer, for a server behind an authenticating proxy.
    None,
    /// A field of its own: `<name>: <api_key>` (Azure's `api-key`,
    /// Anthropic's `x-api-key`, Gemini's `x-goog-api-key`).
    Field(&'static str),
    /// No key: each request is signed with AWS credentials (SigV4).
    Signed,
}

/// One known prefix.
#[derive(Debug, PartialEq, Eq)]
pub struct Provider {
    pub prefix: &'static str,
    pub dialect: Dialect,
    /// Where a deployment that names no `api_base` goes; `None` when the
    /// provider has no default and `api_base` is required.
    pub default_base: Option<&'static str>,
    pub key: Key,
}

const fn openai(prefix: &'static str, base: &'static str) -> Provider {
    Provider {
        prefix,
        dialect: Dialect::OpenAi,
        default_base: Some(base),
        key: Key::Bearer,
    }
}

const fn local(prefix: &'static str, base: Option<&'static str>) -> Provider {
    Provider {
        prefix,
        dialect: Dialect::OpenAi,
        default_base: base,
        key: Key::None,
    }
}

/// The prefix of a model that names none.
pub const DEFAULT_PREFIX: &str = "openai";

/// Every known prefix.
pub static PROVIDERS: &[Provider] = &[
    // The OpenAI-compatible family: pass-through to the provider's
    // OpenAI-compatible API.
    openai("openai", "https://api.openai.com/v1"),
    openai("groq", "https://api.groq.com/openai/v1"),
    openai("mistral", "https://api.mistral.ai/v1"),
    openai("deepseek", "https://api.deepseek.com/v1"),
    openai("together_ai", "https://api.together.xyz/v1"),
    openai("fireworks_ai", "https://api.fireworks.ai/inference/v1"),
    openai("openrouter", "https://openrouter.ai/api/v1"),
    openai("xai", "https://api.x.ai/v1"),
    openai("perplexity", "https://api.perplexity.ai"),
    openai("cerebras", "https://api.cerebras.ai/v1"),
    local("ollama", Some("http://localhost:11434/v1")),
    local("ollama_chat", Some("http://localhost:11434/v1")),
    local("hosted_vllm", None),
    local("lm_studio", Some("http://localhost:1234/v1")),
    Provider {
        prefix: "openai_compatible",
        dialect: Dialect::OpenAi,
        default_base: None,
        key: Key::Bearer,
    },
    // Azure AI Foundry's serverless models: OpenAI's API at the
    // deployment's own endpoint.
    Provider {
        prefix: "azure_ai",
        dialect: Dialect::OpenAi,
        default_base: None,
        key: Key::Bearer,
    },
    // Azure OpenAI: the resource's endpoint is required.
    Provider {
        prefix: "azure",
        dialect: Dialect::Azure,
        default_base: None,
        key: Key::Field("api-key"),
    },
    Provider {
        prefix: "anthropic",
        dialect: Dialect::Anthropic,
        default_base: Some("https://api.anthropic.com"),
        key: Key::Field("x-api-key"),
    },
    // Bedrock's base URL is its region's (`aws_region_name`) unless given.
    Provider {
        prefix: "bedrock",
        dialect: Dialect::Bedrock,
        default_base: None,
        key: Key::Signed,
    },
    Provider {
        prefix: "gemini",
        dialect: Dialect::Gemini,
        default_base: Some(gemini::DEFAULT_BASE),
        key: Key::Field(gemini::KEY_HEADER),
    },
];

/// Why a deployment's model or base URL cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum DialectError {
    /// The model's prefix is not a known provider.
    UnknownPrefix(String),
    /// The provider has no default base URL and none was given.
    MissingBase(&'static str),
    /// A setting that cannot be sent as it is (a name that does not fit
    /// in a URL path, a value with a line break).
    Invalid {
        setting: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for DialectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialectError::UnknownPrefix(prefix) => {
                write!(f, "unknown provider prefix {prefix:?}; known prefixes: ")?;
                for (i, provider) in PROVIDERS.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", provider.prefix)?;
                }
                Ok(())
            }
            DialectError::MissingBase(prefix) => write!(
                f,
                "provider {prefix:?} has no default base URL: litellm_params.api_base is required"
            ),
            DialectError::Invalid { setting, reason } => write!(f, "{setting} {reason}"),
        }
    }
}

impl std::error::Error for DialectError {}

/// The provider of `prefix`.
pub fn provider(prefix: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.prefix == prefix)
}

/// Splits `litellm_params.model` into its provider and the model name sent
/// upstream: `groq/llama-3` is groq's `llama-3`, `gpt-4o` is openai's, and
/// `openrouter/meta/llama` is openrouter's `meta/llama`.
pub fn parse(model: &str) -> Result<(&'static Provider, &str), DialectError> {
    let (prefix, name) = model.split_once('/').unwrap_or((DEFAULT_PREFIX, model));
    let provider = provider(prefix).ok_or_else(|| DialectError::UnknownPrefix(prefix.into()))?;
    // Azure's deployment and Gemini's model go into the URL path as they
    // are (Bedrock's model id is encoded).
    let in_path = match provider.dialect {
        Dialect::Azure => Some("the Azure deployment name"),
        Dialect::Gemini => Some("the Gemini model name"),
        _ => None,
    };
    if let Some(setting) = in_path
        && !is_path_name(name)
    {
        return Err(DialectError::Invalid {
            setting,
            reason: "must be letters, digits, '-', '_' or '.'",
        });
    }
    Ok((provider, name))
}

/// A name that goes into a URL path as it is.
pub fn is_path_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A value that can be sent in a header field: no line break or other
/// control character.
pub fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl Provider {
    /// The base URL a deployment goes to: its own `api_base`, else the
    /// provider's default.
    pub fn base<'a>(&self, api_base: Option<&'a str>) -> Result<&'a str, DialectError> {
        api_base
            .or(self.default_base)
            .ok_or(DialectError::MissingBase(self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_names_the_provider_and_the_rest_is_the_model() {
        let (p, m) = parse("groq/llama-3.1-8b").unwrap();
        assert_eq!((p.prefix, m), ("groq", "llama-3.1-8b"));
        assert_eq!(p.base(None), Ok("https://api.groq.com/openai/v1"));
        let (p, m) = parse("openrouter/meta-llama/llama-3").unwrap();
        assert_eq!((p.prefix, m), ("openrouter", "meta-llama/llama-3"));
        let (p, m) = parse("gpt-4o").unwrap();
        assert_eq!((p.prefix, m), ("openai", "gpt-4o"));
        assert_eq!(p.base(None), Ok("https://api.openai.com/v1"));
        assert_eq!(p.key, Key::Bearer);
    }

    #[test]
    fn defaults_and_keys_of_the_family() {
        for (prefix, base) in [
            ("mistral", "https://api.mistral.ai/v1"),
            ("deepseek", "https://api.deepseek.com/v1"),
            ("together_ai", "https://api.together.xyz/v1"),
            ("fireworks_ai", "https://api.fireworks.ai/inference/v1"),
            ("xai", "https://api.x.ai/v1"),
            ("perplexity", "https://api.perplexity.ai"),
            ("cerebras", "https://api.cerebras.ai/v1"),
        ] {
            let p = provider(prefix).unwrap();
            assert_eq!((p.default_base, p.key), (Some(base), Key::Bearer));
        }
        for prefix in ["ollama", "ollama_chat"] {
            let p = provider(prefix).unwrap();
            assert_eq!(p.default_base, Some("http://localhost:11434/v1"));
            assert_eq!(p.key, Key::None);
        }
        assert_eq!(
            provider("lm_studio").unwrap().default_base,
            Some("http://localhost:1234/v1")
        );
        // A given api_base wins over the default.
        let groq = provider("groq").unwrap();
        assert_eq!(
            groq.base(Some("http://127.0.0.1:9/v1")),
            Ok("http://127.0.0.1:9/v1")
        );
    }

    #[test]
    fn a_provider_without_default_needs_an_api_base() {
        for prefix in ["openai_compatible", "hosted_vllm"] {
            let model = format!("{prefix}/m");
            let (p, m) = parse(&model).unwrap();
            assert_eq!(m, "m");
            assert_eq!(p.base(None), Err(DialectError::MissingBase(p.prefix)));
            assert_eq!(p.base(Some("http://10.0.0.1/v1")), Ok("http://10.0.0.1/v1"));
        }
        let message = parse("hosted_vllm/m")
            .unwrap()
            .0
            .base(None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"hosted_vllm\""), "{message}");
        assert!(message.contains("api_base is required"), "{message}");
    }

    #[test]
    fn an_unknown_prefix_is_refused_naming_the_known_ones() {
        let error = parse("opnai/gpt-4o").unwrap_err();
        assert_eq!(error, DialectError::UnknownPrefix("opnai".into()));
        let message = error.to_string();
        assert!(message.contains("\"opnai\""), "{message}");
        assert!(message.contains("openai, groq, mistral"), "{message}");
        assert!(message.contains("azure"), "{message}");
        for prefix in ["azure", "azure_ai", "anthropic", "bedrock", "gemini"] {
            assert!(parse(&format!("{prefix}/m")).is_ok(), "{prefix}");
        }
        let (bedrock, id) = parse("bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0").unwrap();
        assert_eq!(bedrock.dialect, Dialect::Bedrock);
        assert_eq!(id, "anthropic.claude-3-5-sonnet-20240620-v1:0");
        assert_eq!(bedrock.key, Key::Signed);
        let (gemini, name) = parse("gemini/gemini-2.5-flash").unwrap();
        assert_eq!(
            (gemini.dialect, name),
            (Dialect::Gemini, "gemini-2.5-flash")
        );
        assert_eq!(gemini.key, Key::Field("x-goog-api-key"));
        assert!(matches!(
            parse("gemini/a:b"),
            Err(DialectError::Invalid { .. })
        ));
    }

    #[test]
    fn azure_and_anthropic_keys_and_bases() {
        let (azure, name) = parse("azure/gpt-4o-prod").unwrap();
        assert_eq!((azure.dialect, name), (Dialect::Azure, "gpt-4o-prod"));
        assert_eq!(azure.key, Key::Field("api-key"));
        assert_eq!(azure.base(None), Err(DialectError::MissingBase("azure")));
        let (anthropic, name) = parse("anthropic/claude-sonnet-4-5").unwrap();
        assert_eq!(anthropic.dialect, Dialect::Anthropic);
        assert_eq!(name, "claude-sonnet-4-5");
        assert_eq!(anthropic.base(None), Ok("https://api.anthropic.com"));
        assert_eq!(anthropic.key, Key::Field("x-api-key"));
        // An Azure deployment name goes into the URL path as it is.
        for bad in ["azure/a b", "azure/a/../b", "azure/x?y", "azure/"] {
            assert!(
                matches!(parse(bad), Err(DialectError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(is_field_value("sk-ant-api03-abc\tdef"));
        assert!(!is_field_value("sk\r\nX-Evil: 1"));
    }
}
