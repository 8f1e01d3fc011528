//! Azure OpenAI routes of the mock upstream.
//!
//! - `POST /openai/deployments/{deployment}/chat/completions|completions|embeddings?api-version=V`:
//!   without `api-version` a 404 "Resource not found", as Azure answers;
//!   the answer names the deployment as its `model`.
//! - `POST /openai/v1/chat/completions|embeddings`: the v1 GA surface, no
//!   `api-version`; the body's `model` is the deployment.
//!
//! The key comes in `api-key`, or as `Authorization: Bearer <token>` (an
//! Entra ID token). With `--api-key` either must equal it; without, either
//! must be there. Otherwise a 401 in Azure's shape.

use http::StatusCode;
use monoio::io::AsyncWriteRent;
use serde::Deserialize;
use serde_json::json;

use super::openai::{self, Endpoint, bad_json};
use super::{Behaviour, Mock, Next, send, sse};
use crate::http::RequestHead;
use crate::http::io::{Reply, json_response, unix_nanos};

pub(super) async fn respond<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    head: &RequestHead,
    buf: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
    behaviour: &Behaviour,
) -> Next {
    let Some((endpoint, deployment)) = route(head, buf) else {
        return error(stream, out, StatusCode::NOT_FOUND, "Resource not found").await;
    };
    if !authorized(mock, head, buf) {
        let message = "Access denied due to invalid subscription key or wrong API endpoint. \
            Make sure to provide a valid key for an active subscription and use a correct \
            regional API endpoint for your resource.";
        return error(stream, out, StatusCode::UNAUTHORIZED, message).await;
    }
    behaviour.wait().await;
    if behaviour.status.is_some() {
        return openai::mock_status(stream, out, behaviour).await;
    }
    openai::answer(mock, stream, out, endpoint, body, behaviour, deployment).await
}

/// The endpoint and, on the deployments surface, the deployment. `None`
/// for an unknown path, or a deployments path without `api-version`.
fn route<'a>(head: &RequestHead, buf: &'a [u8]) -> Option<(Endpoint, Option<&'a str>)> {
    if head.method != http::Method::POST {
        return None;
    }
    let path = std::str::from_utf8(head.path(buf)).ok()?;
    if let Some(rest) = path.strip_prefix("/openai/v1/") {
        let endpoint = match rest {
            "chat/completions" => Endpoint::Chat,
            "embeddings" => Endpoint::Embeddings,
            _ => return None,
        };
        return Some((endpoint, None));
    }
    let rest = path.strip_prefix("/openai/deployments/")?;
    let (deployment, endpoint) = rest.split_once('/')?;
    let endpoint = match endpoint {
        "chat/completions" => Endpoint::Chat,
        "completions" => Endpoint::Completions,
        "embeddings" => Endpoint::Embeddings,
        _ => return None,
    };
    if deployment.is_empty() || !has_api_version(head.target.of(buf)) {
        return None;
    }
    Some((endpoint, Some(deployment)))
}

fn has_api_version(target: &[u8]) -> bool {
    let Some(at) = target.iter().position(|&b| b == b'?') else {
        return false;
    };
    target[at + 1..].split(|&b| b == b'&').any(|pair| {
        pair.strip_prefix(b"api-version=")
            .is_some_and(|value| !value.is_empty())
    })
}

fn authorized(mock: &Mock, head: &RequestHead, buf: &[u8]) -> bool {
    let key = head.header(buf, "api-key").or_else(|| {
        head.header(buf, "authorization")
            .and_then(|value| value.strip_prefix(b"Bearer "))
    });
    match (key, &mock.settings.api_key) {
        (Some(key), Some(expected)) => key == expected.as_bytes(),
        (Some(key), None) => !key.is_empty(),
        (None, _) => false,
    }
}

/// Azure's error body: `{"error":{"code":"<status>","message":...}}`.
async fn error<S: AsyncWriteRent>(
    stream: &mut S,
    out: &mut Vec<u8>,
    status: StatusCode,
    message: &str,
) -> Next {
    let body = json!({"error": {"code": status.as_str(), "message": message}});
    json_response(
        out,
        status,
        body.to_string().as_bytes(),
        &[],
        Reply::KEEP_ALIVE,
    );
    send(stream, out).await
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    #[serde(default = "default_model")]
    model: String,
    #[serde(default)]
    prompt: serde_json::Value,
    #[serde(default)]
    stream: bool,
}

fn default_model() -> String {
    "gpt-35-turbo-instruct".into()
}

/// A legacy text completion (`"object": "text_completion"`), streamed as
/// one chunk a word when asked.
pub(super) async fn completions<S: AsyncWriteRent>(
    mock: &Mock,
    stream: &mut S,
    out: &mut Vec<u8>,
    body: &[u8],
    behaviour: &Behaviour,
    model: Option<&str>,
) -> Next {
    let request: CompletionRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return bad_json(stream, out, &error).await,
    };
    let model = model.unwrap_or(&request.model);
    let id = format!("cmpl-mock{}", mock.stats.requests.get());
    let created = unix_nanos() / 1_000_000_000;
    let prompt = match &request.prompt {
        serde_json::Value::String(text) => text.len(),
        other => other.to_string().len(),
    };
    let prompt = (prompt as u64 / 4).max(1);
    let choice = |text: String, finish: Option<&str>| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
    let answer = |choices: serde_json::Value, usage: Option<serde_json::Value>| {
        let mut body = json!({
            "id": id, "object": "text_completion", "created": created,
            "model": model, "choices": choices,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        serde_json::to_vec(&body).unwrap_or_default()
    };
    let words = behaviour.chunks;
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": words,
        "total_tokens": prompt + words as u64,
    });
    if request.stream {
        let delta = |index: u32| {
            let word = openai::word(index);
            let text = if index == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            };
            answer(choice(text, None), None)
        };
        let tail = [answer(choice(String::new(), Some("stop")), None)];
        return sse::openai(mock, stream, out, behaviour, delta, &tail).await;
    }
    let text: Vec<&str> = (0..words).map(openai::word).collect();
    let body = answer(choice(text.join(" "), Some("stop")), Some(usage));
    json_response(
        out,
        StatusCode::OK,
        &body,
        &behaviour.fields(),
        Reply::KEEP_ALIVE,
    );
    send(stream, out).await
}
