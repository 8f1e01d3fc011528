//! `chat completions MODEL -m role:content ...`: one chat completion
//! through `/chat/completions`, printed as the answer's text or, with
//! `--format json`, as the whole response.

use serde_json::{Value, json};

use super::{Call, expect_object, quoted};
use crate::cli::litellm::{ChatCommand, Format};
use crate::cmd::output::pretty;
use crate::http_client::ClientError;

/// Roles of the chat completions API.
const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub(super) fn plan(command: &ChatCommand) -> Result<Call, ClientError> {
    let ChatCommand::Completions(args) = command;
    if args.model.trim().is_empty() {
        return Err(ClientError::Usage("the model name is empty".into()));
    }
    let messages = args
        .messages
        .iter()
        .map(|message| parse_message(message))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = json!({"model": args.model, "messages": messages});
    let numbers = [
        ("temperature", args.temperature),
        ("top_p", args.top_p),
        ("presence_penalty", args.presence_penalty),
        ("frequency_penalty", args.frequency_penalty),
    ];
    for (field, value) in numbers {
        if let Some(value) = value {
            body[field] = json!(value);
        }
    }
    if let Some(n) = args.n {
        body["n"] = json!(n);
    }
    if let Some(max_tokens) = args.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(user) = &args.user {
        body["user"] = json!(user);
    }
    Ok(Call::post("/chat/completions", body).about(format!("model {}", quoted(&args.model))))
}

/// `role:content`; the role is one of [`ROLES`], spaces around both trimmed.
fn parse_message(text: &str) -> Result<Value, ClientError> {
    let Some((role, content)) = text.split_once(':') else {
        return Err(ClientError::Usage(format!(
            "-m {} is not \"role:content\", e.g. \"user:Hello\"",
            quoted(text)
        )));
    };
    let role = role.trim().to_ascii_lowercase();
    if !ROLES.contains(&role.as_str()) {
        return Err(ClientError::Usage(format!(
            "-m {}: unknown role {}, expected one of {}",
            quoted(text),
            quoted(&role),
            ROLES.join(", ")
        )));
    }
    Ok(json!({"role": role, "content": content.trim()}))
}

pub(super) fn render(answer: Option<Value>, format: Option<Format>) -> Result<String, ClientError> {
    let answer = expect_object(answer, "the chat completion")?;
    if format == Some(Format::Json) {
        return Ok(pretty(&answer));
    }
    let choices = answer["choices"]
        .as_array()
        .ok_or_else(|| ClientError::BadResponse("the chat completion has no choices".into()))?;
    let texts: Vec<String> = choices.iter().map(choice_text).collect();
    let mut out = match texts.as_slice() {
        [one] => one.clone(),
        many => many
            .iter()
            .enumerate()
            .map(|(i, text)| format!("[{i}] {text}"))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The text of one choice; tool calls or a refusal when there is no text.
fn choice_text(choice: &Value) -> String {
    let message = &choice["message"];
    if let Some(text) = message["content"].as_str() {
        return text.to_string();
    }
    if let Some(refusal) = message["refusal"].as_str() {
        return format!("(refused) {refusal}");
    }
    if !message["tool_calls"].is_null() {
        return message["tool_calls"].to_string();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::litellm::CompletionsArgs;

    fn completions(messages: &[&str]) -> ChatCommand {
        ChatCommand::Completions(CompletionsArgs {
            model: "gpt-4".into(),
            messages: messages.iter().map(|m| m.to_string()).collect(),
            temperature: Some(0.5),
            top_p: None,
            n: None,
            max_tokens: Some(20),
            presence_penalty: None,
            frequency_penalty: None,
            user: None,
        })
    }

    #[test]
    fn messages_become_the_conversation() {
        let call = plan(&completions(&[
            "system: Be brief",
            "user:Hello, how are you?",
        ]))
        .unwrap();
        assert_eq!(call.path, "/chat/completions");
        assert_eq!(
            call.body.unwrap(),
            json!({
                "model": "gpt-4",
                "messages": [
                    {"role": "system", "content": "Be brief"},
                    {"role": "user", "content": "Hello, how are you?"},
                ],
                "temperature": 0.5, "max_tokens": 20,
            })
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        let error = plan(&completions(&["Hello"])).unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("role:content"), "{error}");
        let error = plan(&completions(&["usr:Hello"])).unwrap_err();
        assert!(
            error.to_string().contains("unknown role \"usr\""),
            "{error}"
        );
    }

    #[test]
    fn answers_are_printed_as_text() {
        let answer = json!({"choices": [{"message": {"role": "assistant", "content": "Hi!"}}]});
        assert_eq!(render(Some(answer.clone()), None).unwrap(), "Hi!\n");
        assert_eq!(
            serde_json::from_str::<Value>(
                &render(Some(answer.clone()), Some(Format::Json)).unwrap()
            )
            .unwrap(),
            answer
        );
        let two = json!({"choices": [
            {"message": {"content": "a"}}, {"message": {"content": "b"}},
        ]});
        assert_eq!(render(Some(two), None).unwrap(), "[0] a\n[1] b\n");
        assert!(render(Some(json!({"x": 1})), None).is_err());
    }
}
