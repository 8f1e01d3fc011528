//! A whole GenerateContentResponse → a Chat Completions answer.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::request::Reading;
use crate::dialect::{TokenUsage, TranslateError};

/// Gemini's `usageMetadata`.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Usage {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
}

impl Usage {
    /// The prompt count includes the cached tokens; the thoughts are
    /// completion tokens OpenAI-style (as `reasoning_tokens`).
    pub fn tokens(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cache_read_tokens: self.cached_content_token_count,
            cache_creation_tokens: 0,
        }
    }

    /// OpenAI's `usage` object.
    pub fn json(&self) -> Value {
        let tokens = self.tokens();
        let mut usage = json!({
            "prompt_tokens": tokens.prompt_tokens,
            "completion_tokens": tokens.completion_tokens,
            "total_tokens": tokens.prompt_tokens + tokens.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": tokens.cache_read_tokens},
        });
        if self.thoughts_token_count > 0 {
            usage["completion_tokens_details"] =
                json!({"reasoning_tokens": self.thoughts_token_count});
        }
        usage
    }
}

/// OpenAI's `finish_reason` for Gemini's `finishReason`; a `STOP` with
/// function calls is `tool_calls`.
pub(crate) fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called => "tool_calls",
        // STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL and what comes later.
        _ => "stop",
    }
}

/// Between a tool call's id and the thought signature of its function
/// call (as LiteLLM writes it): the client sends the id back with the
/// call, and the signature goes back to Gemini from it.
pub const THOUGHT_MARK: &str = "__thought__";

/// A GenerateContentResponse, whole or one chunk of a stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateResponse<'a> {
    #[serde(default, borrow)]
    pub candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<Usage>,
    #[serde(default)]
    pub response_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate<'a> {
    #[serde(default, borrow)]
    pub content: Option<Content<'a>>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub index: Option<usize>,
}

#[derive(Deserialize)]
pub(crate) struct Content<'a> {
    #[serde(default, borrow)]
    pub parts: Vec<Part<'a>>,
}

/// One part, read flat (which fields it has tells what it is).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Part<'a> {
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
    /// The signature of the thinking behind a function call, which Gemini
    /// needs back with the call to continue the turn.
    #[serde(default, borrow)]
    pub thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: Option<Value>,
}

impl FunctionCall {
    /// The call's id (Gemini's own when it gives one, else `call_<n>`, with
    /// the part's thought signature after [`THOUGHT_MARK`] when it has one)
    /// and its arguments as a compact JSON string.
    pub fn id_and_arguments(&self, n: usize, signature: Option<&str>) -> (String, String) {
        let mut id = match &self.id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!("call_{n}"),
        };
        if let Some(signature) = signature.filter(|s| !s.is_empty()) {
            id.push_str(THOUGHT_MARK);
            id.push_str(signature);
        }
        let arguments = match &self.args {
            None | Some(Value::Null) => "{}".to_string(),
            Some(args) => args.to_string(),
        };
        (id, arguments)
    }
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::new("response", message)
}

/// The answer's id: Gemini's `responseId`, else one made of the time.
pub(crate) fn answer_id(response_id: Option<&str>, created: u64) -> String {
    match response_id {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-gemini-{created}"),
    }
}

/// The Chat Completions answer (JSON bytes) for a whole
/// GenerateContentResponse; `created` is unix seconds.
pub fn to_chat(
    body: &[u8],
    reading: &Reading,
    created: u64,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: GenerateResponse =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a Gemini answer: {e}")))?;
    let mut choices = Vec::new();
    let mut calls_made = 0;
    for (position, candidate) in response.candidates.iter().enumerate() {
        let mut content = String::new();
        let mut reasoning: Option<String> = None;
        let mut calls = Vec::new();
        let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts);
        for part in parts {
            if let Some(call) = &part.function_call {
                let (id, arguments) =
                    call.id_and_arguments(calls_made, part.thought_signature.as_deref());
                calls_made += 1;
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }));
            } else if let Some(text) = &part.text {
                if part.thought == Some(true) {
                    reasoning.get_or_insert_with(String::new).push_str(text);
                } else {
                    content.push_str(text);
                }
            }
        }
        let finish = finish_reason(
            candidate.finish_reason.as_deref().unwrap_or("STOP"),
            !calls.is_empty(),
        );
        let mut reply = Map::new();
        reply.insert("role".into(), "assistant".into());
        reply.insert(
            "content".into(),
            if content.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                content.into()
            },
        );
        if let Some(reasoning) = reasoning {
            reply.insert("reasoning_content".into(), reasoning.into());
        }
        if !calls.is_empty() {
            reply.insert("tool_calls".into(), Value::Array(calls));
        }
        choices.push(json!({
            "index": candidate.index.unwrap_or(position),
            "message": reply,
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() {
        // The prompt was blocked (promptFeedback.blockReason), or the model
        // gave nothing: an empty answer, filtered when it was blocked.
        let blocked = response
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .is_some();
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "logprobs": null,
            "finish_reason": if blocked { "content_filter" } else { "stop" },
        }));
    }
    let usage = response.usage_metadata.unwrap_or_default();
    let answer = json!({
        "id": answer_id(response.response_id.as_deref(), created),
        "object": "chat.completion",
        "created": created,
        "model": reading.model,
        "choices": choices,
        "usage": usage.json(),
    });
    let bytes = serde_json::to_vec(&answer).map_err(|e| invalid(e.to_string()))?;
    Ok((bytes, usage.tokens()))
}
