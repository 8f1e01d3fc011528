use serde_json::{Value, json};

use crate::dialect::gemini::request::{from_chat, target};

fn translate(body: Value) -> Value {
    let (bytes, _) = from_chat(body.to_string().as_bytes(), "gemini-2.5-flash").unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[track_caller]
fn refused(body: Value, field: &str) -> String {
    let error = from_chat(body.to_string().as_bytes(), "m").unwrap_err();
    assert_eq!(error.field, field, "{error}");
    error.message
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn the_target_names_the_model_and_the_stream() {
    assert_eq!(
        target("gemini-2.5-flash", false),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        target("gemini-2.5-pro", true),
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
}

#[test]
fn roles_become_user_and_model_with_the_same_roles_merged() {
    let out = translate(json!({"messages": [
        {"role": "system", "content": "Be brief."},
        user("one"),
        user("two"),
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
        user("five"),
    ]}));
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
            {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
            {"role": "user", "parts": [{"text": "five"}]},
        ])
    );
    // Neither the model nor stream goes in the body.
    assert!(
        out.get("model").is_none() && out.get("stream").is_none(),
        "{out}"
    );
}

#[test]
fn the_reading_says_stream_usage_and_model() {
    let body = json!({"messages": [user("hi")], "stream": true,
        "stream_options": {"include_usage": true}});
    let (_, reading) = from_chat(body.to_string().as_bytes(), "gemini-x").unwrap();
    assert!(reading.stream && reading.include_usage);
    assert_eq!(reading.model, "gemini-x");
    let body = json!({"messages": [user("hi")], "stream_options": {"include_usage": true}});
    let (_, reading) = from_chat(body.to_string().as_bytes(), "gemini-x").unwrap();
    assert!(!reading.stream && !reading.include_usage);
}

#[test]
fn a_tool_message_answers_the_function_its_call_named() {
    let out = translate(json!({"messages": [
        user("weather?"),
        {"role": "assistant", "tool_calls": [
            {"id": "x1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "x1", "content": "[1, 2]"},
    ]}));
    assert_eq!(
        out["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"content": [1, 2]}}}]})
    );
    let message = refused(
        json!({"messages": [user("hi"), {"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
        "messages[1].tool_call_id",
    );
    assert!(message.contains("\"nope\""), "{message}");
}

#[test]
fn images_need_a_type_gemini_can_be_told() {
    let image = |url: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let out = translate(image("https://x.test/a/photo.webp#frag"));
    assert_eq!(
        out["contents"][0]["parts"][0],
        json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/a/photo.webp#frag"}})
    );
    let message = refused(
        image("https://x.test/image?id=4"),
        "messages[0].content[0].image_url.url",
    );
    assert!(message.contains("extension"), "{message}");
    refused(
        image("data:image/png,abc"),
        "messages[0].content[0].image_url.url",
    );
    refused(
        image("ftp://x.test/a.png"),
        "messages[0].content[0].image_url.url",
    );
    refused(
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
        "messages[0].content[0].type",
    );
}

#[test]
fn tool_choice_becomes_a_function_calling_mode() {
    for (choice, config) in [
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ),
    ] {
        let out = translate(json!({"messages": [user("hi")], "tool_choice": choice}));
        assert_eq!(out["toolConfig"]["functionCallingConfig"], config);
    }
    refused(
        json!({"messages": [user("hi")], "tool_choice": "sometimes"}),
        "tool_choice",
    );
}

#[test]
fn reasoning_effort_sets_the_thinking_budget() {
    for (effort, budget) in [("none", 0), ("minimal", 128), ("low", 1024), ("high", 4096)] {
        let out = translate(json!({"messages": [user("hi")], "reasoning_effort": effort}));
        let thinking = &out["generationConfig"]["thinkingConfig"];
        assert_eq!(thinking["thinkingBudget"], budget, "{effort}");
        assert_eq!(
            thinking["includeThoughts"].as_bool(),
            (budget > 0).then_some(true)
        );
    }
    refused(
        json!({"messages": [user("hi")], "reasoning_effort": "max"}),
        "reasoning_effort",
    );
}

#[test]
fn bad_requests_are_refused_naming_the_field() {
    refused(json!({"messages": []}), "messages");
    refused(json!({"model": "m"}), "messages");
    refused(
        json!({"messages": [{"role": "system", "content": "x"}]}),
        "messages",
    );
    refused(
        json!({"messages": [{"role": "robot", "content": "x"}]}),
        "messages[0].role",
    );
    refused(json!({"messages": [user("x")], "n": 0}), "n");
    refused(
        json!({"messages": [user("x")], "max_tokens": -1}),
        "max_tokens",
    );
    refused(
        json!({"messages": [user("x")], "temperature": "hot"}),
        "temperature",
    );
    refused(json!({"messages": [user("x")], "stop": 5}), "stop");
    refused(json!({"messages": [user("x")], "seed": 1.5}), "seed");
    refused(
        json!({"messages": [user("x")], "functions": []}),
        "functions",
    );
    refused(
        json!({"messages": [user("x")], "response_format": {"type": "yaml"}}),
        "response_format.type",
    );
    refused(
        json!({"messages": [user("x")], "tools": [{"type": "web_search"}]}),
        "tools[0].type",
    );
    refused(
        json!({"messages": [user("x"), {"role": "assistant", "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
        "messages[1].tool_calls[0].function.arguments",
    );
    let error = from_chat(b"[1]", "m").unwrap_err();
    assert_eq!(error.field, "body");
}
