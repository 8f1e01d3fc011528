//! The request for one deployment tried: the client's as it came (its
//! model rewritten in place) when the deployment speaks the client's
//! dialect, else translated into the deployment's, with the target, the
//! fields (a version, a signature) and the answer's translation that go
//! with it.

use super::Session;
use super::fields::Rewrite;
use super::translate::Translation;
use crate::dialect::{Dialect, TranslateError, anthropic, bedrock, gemini};
use crate::downstream::HeldBody;
use crate::error::ProxyError;
use crate::worker::models::{self, Deployment};

/// What goes to one deployment, where it is not the client's request as
/// it came: a translated body, the target it goes to, the fields its
/// dialect adds, and how the answer comes back.
#[derive(Default)]
pub struct Prepared {
    pub body: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub fields: Option<Vec<u8>>,
    pub translation: Option<Translation>,
}

/// The request for `deployment`: the client's as it came, its model
/// rewritten in place (held once for every deployment tried), when the
/// deployment speaks the client's dialect; else translated into the
/// deployment's, with what the answer's translation needs.
pub fn prepare(
    s: &Session<'_>,
    deployment: &Deployment,
    endpoint: &[u8],
    body: &mut HeldBody<'_>,
    (rewrite, ask_usage): (&mut Rewrite, bool),
) -> Result<Prepared, ProxyError> {
    let model = &deployment.upstream_model;
    let anthropic_client = models::is_messages(endpoint);
    let prepared = match (deployment.dialect.dialect, anthropic_client) {
        (Dialect::OpenAi | Dialect::Azure, false) => {
            rewrite.apply(body.as_mut_vec(), model, ask_usage);
            Prepared::default()
        }
        (Dialect::Anthropic, true) => {
            rewrite.apply(body.as_mut_vec(), model, ask_usage);
            Prepared {
                fields: version_field(s).map(<[u8]>::to_vec),
                ..Prepared::default()
            }
        }
        (Dialect::Anthropic, false) => {
            let (messages, reading) =
                anthropic::request::from_chat(body, model).map_err(translate_error)?;
            Prepared {
                body: Some(messages),
                fields: version_field(s).map(<[u8]>::to_vec),
                translation: Some(Translation::AnthropicToChat(reading)),
                ..Prepared::default()
            }
        }
        (Dialect::OpenAi | Dialect::Azure, true) => {
            let (chat, reading) =
                anthropic::ingress::request::to_chat(body, model).map_err(translate_error)?;
            Prepared {
                body: Some(chat),
                translation: Some(Translation::ChatToMessages(reading)),
                ..Prepared::default()
            }
        }
        (Dialect::Gemini, _) => {
            let (request, reading) =
                gemini::request::from_chat(body, model).map_err(translate_error)?;
            Prepared {
                body: Some(request),
                target: Some(gemini::request::target(model, reading.stream).into_bytes()),
                translation: Some(Translation::GeminiToChat(reading)),
                ..Prepared::default()
            }
        }
        (Dialect::Bedrock, _) => {
            let (request, reading) =
                bedrock::request::from_chat(body, model).map_err(translate_error)?;
            let target = bedrock::request::target(model, reading.stream);
            let fields = sign(deployment, &target, &request)?;
            Prepared {
                body: Some(request),
                target: Some(target.into_bytes()),
                fields: Some(fields),
                translation: Some(Translation::BedrockToChat(reading)),
            }
        }
    };
    Ok(prepared)
}

/// The SigV4 fields of a Bedrock request: signed over its host, the whole
/// path sent (the base URL's path first) and the exact body.
fn sign(deployment: &Deployment, target: &str, body: &[u8]) -> Result<Vec<u8>, ProxyError> {
    let Some(aws) = deployment.aws.as_deref() else {
        return Err(ProxyError::Internal(
            "a Bedrock deployment without AWS credentials".into(),
        ));
    };
    let upstream = &deployment.provider.target;
    let path = format!("{}{target}", upstream.base_path);
    let at = std::time::SystemTime::now();
    bedrock::sign(aws, &upstream.authority, &path, body, &[], at)
        .map_err(|e| ProxyError::Internal(e.to_string()))
}

/// `anthropic-version` for an Anthropic deployment, unless the client (an
/// Anthropic client) names its own.
fn version_field(s: &Session<'_>) -> Option<&'static [u8]> {
    let named = s.head.header(&s.conn.buf, "anthropic-version").is_some();
    (!named).then_some(anthropic::VERSION_FIELD)
}

/// A request the deployment's dialect cannot express: the client's to fix.
fn translate_error(error: TranslateError) -> ProxyError {
    ProxyError::InvalidField {
        field: error.field,
        message: error.message,
    }
}
