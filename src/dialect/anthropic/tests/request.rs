use serde_json::{Value, json};

use crate::dialect::TranslateError;
use crate::dialect::anthropic::request::{DEFAULT_MAX_TOKENS, JSON_TOOL, Reading, from_chat};

fn translate(chat: Value) -> (Value, Reading) {
    let (body, reading) = from_chat(chat.to_string().as_bytes(), "claude-x").unwrap();
    (serde_json::from_slice(&body).unwrap(), reading)
}

fn body(chat: Value) -> Value {
    translate(chat).0
}

fn refused(chat: Value) -> TranslateError {
    from_chat(chat.to_string().as_bytes(), "claude-x").unwrap_err()
}

fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

#[test]
fn the_smallest_request_gets_the_model_and_the_default_max_tokens() {
    let (out, reading) = translate(json!({"model": "m", "messages": [user(json!("Hi"))]}));
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": DEFAULT_MAX_TOKENS,
        })
    );
    assert_eq!(reading, Reading::default());
}

#[test]
fn system_and_developer_messages_become_system_blocks() {
    let out = body(json!({"messages": [
        {"role": "system", "content": "One."},
        user(json!("Hi")),
        {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
    ]}));
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}])
    );
    assert_eq!(out["messages"].as_array().unwrap().len(), 1);
    let error = refused(json!({"messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}]},
        user(json!("Hi")),
    ]}));
    assert_eq!(error.field, "messages[0].content[0]");
}

#[test]
fn consecutive_messages_of_one_role_are_merged() {
    let out = body(json!({"messages": [
        user(json!("a")),
        user(json!([{"type": "text", "text": "b"}])),
        {"role": "assistant", "content": "c"},
        {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
        user(json!("e")),
    ]}));
    let roles: Vec<_> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap(),
                m["content"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(roles, [("user", 2), ("assistant", 2), ("user", 1)]);
}

#[test]
fn images_become_base64_or_url_sources() {
    let out = body(json!({"messages": [user(json!([
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": "http://example.com/a.webp"},
    ]))]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "http://example.com/a.webp"}},
        ])
    );
    for (url, why) in [
        ("data:image/png,rawbytes", "base64"),
        ("data:image/tiff;base64,AAAA", "image/tiff"),
        ("data:image/png;base64", "without data"),
        ("ftp://example.com/a.png", "http(s)"),
    ] {
        let error = refused(json!({"messages": [user(json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": url}},
        ]))]}));
        assert_eq!(error.field, "messages[0].content[1].image_url.url", "{url}");
        assert!(error.message.contains(why), "{url}: {}", error.message);
    }
    let error = refused(json!({"messages": [user(json!([
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]))]}));
    assert_eq!(error.field, "messages[0].content[0].type");
}

#[test]
fn pdf_files_become_documents() {
    let out = body(json!({"messages": [user(json!([
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "a.pdf"}},
        {"type": "text", "text": "Summarise."},
    ]))]}));
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}})
    );
    for (file, field) in [
        (
            json!({"file_id": "file-abc"}),
            "messages[0].content[0].file.file_id",
        ),
        (
            json!({"file_data": "data:text/csv;base64,YSxi"}),
            "messages[0].content[0].file.file_data",
        ),
        (
            json!({"file_data": "JVBERi0x"}),
            "messages[0].content[0].file.file_data",
        ),
    ] {
        let error = refused(json!({"messages": [user(json!([{"type": "file", "file": file}]))]}));
        assert_eq!(error.field, field);
    }
}

#[test]
fn tool_calls_become_tool_use_and_tool_messages_one_user_message() {
    let out = body(json!({"messages": [
        user(json!("weather?")),
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "c2", "type": "function", "function": {"name": "t", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        user(json!("thanks")),
    ]}));
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1]["content"],
        json!([
            {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "c2", "name": "t", "input": {}},
        ])
    );
    assert_eq!(
        messages[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "c1", "content": "cold"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "noon"},
            {"type": "text", "text": "thanks"},
        ])
    );
}

#[test]
fn tool_call_arguments_that_are_not_a_json_object_are_refused() {
    for arguments in ["{\"city\":", "[1]"] {
        let error = refused(json!({"messages": [
            user(json!("q")),
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": arguments}},
            ]},
        ]}));
        assert_eq!(error.field, "messages[1].tool_calls[0].function.arguments");
    }
    let error = refused(json!({"messages": [user(json!("q")), {"role": "tool", "content": "x"}]}));
    assert_eq!(error.field, "messages[1].tool_call_id");
}

#[test]
fn tools_and_tool_choice_are_mapped() {
    let tools = json!([{"type": "function", "function": {
        "name": "w", "description": "Weather", "parameters": {"type": "object", "properties": {}}}}]);
    for (choice, expected) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "w"}}),
            json!({"type": "tool", "name": "w"}),
        ),
    ] {
        let out =
            body(json!({"messages": [user(json!("q"))], "tools": tools, "tool_choice": choice}));
        assert_eq!(out["tool_choice"], expected);
        assert_eq!(
            out["tools"],
            json!([{"name": "w", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}])
        );
    }
    let out =
        body(json!({"messages": [user(json!("q"))], "tools": tools, "parallel_tool_calls": false}));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let out = body(json!({"messages": [user(json!("q"))], "tools": tools,
        "tool_choice": "none", "parallel_tool_calls": false}));
    assert_eq!(out["tool_choice"], json!({"type": "none"}));
    let out =
        body(json!({"messages": [user(json!("q"))], "tools": tools, "parallel_tool_calls": true}));
    assert!(out.get("tool_choice").is_none());
    assert_eq!(
        refused(json!({"messages": [user(json!("q"))], "tool_choice": "sometimes"})).field,
        "tool_choice"
    );
    let error = refused(json!({"messages": [user(json!("q"))], "tools": [{"type": "web_search"}]}));
    assert_eq!(error.field, "tools[0].type");
}

#[test]
fn sampling_stop_max_tokens_user_and_stream_are_mapped() {
    let (out, reading) = translate(json!({
        "messages": [user(json!("q"))],
        "temperature": 0.5, "top_p": 0.8, "stop": "END", "max_tokens": 100,
        "user": "u-1", "stream": true, "stream_options": {"include_usage": true},
        "seed": 1, "logprobs": true, "top_logprobs": 2, "frequency_penalty": 1, "presence_penalty": 1,
        "logit_bias": {}, "n": 1, "service_tier": "auto", "store": true, "metadata": {"a": "b"},
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
            "temperature": 0.5, "top_p": 0.8, "max_tokens": 100, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"}, "stream": true,
        })
    );
    assert!(reading.include_usage);
    let out = body(
        json!({"messages": [user(json!("q"))], "max_tokens": 100, "max_completion_tokens": 200,
        "stop": ["a", "b"]}),
    );
    assert_eq!(
        (&out["max_tokens"], &out["stop_sequences"]),
        (&json!(200), &json!(["a", "b"]))
    );
    let (_, reading) = translate(json!({"messages": [user(json!("q"))], "stream": false,
        "stream_options": {"include_usage": true}}));
    assert!(!reading.include_usage);
    assert_eq!(
        refused(json!({"messages": [user(json!("q"))], "max_tokens": 0})).field,
        "max_tokens"
    );
    assert_eq!(
        refused(json!({"messages": [user(json!("q"))], "stop": [1]})).field,
        "stop"
    );
}

#[test]
fn reasoning_effort_enables_thinking_without_temperature() {
    for (effort, budget, max_tokens) in [
        ("low", 1024, 4096),
        ("medium", 2048, 4096),
        ("high", 4096, 8192),
    ] {
        let out = body(
            json!({"messages": [user(json!("q"))], "reasoning_effort": effort,
            "temperature": 0.3, "top_p": 0.5}),
        );
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": budget}),
            "{effort}"
        );
        assert_eq!(out["max_tokens"], max_tokens, "{effort}");
        assert!(out.get("temperature").is_none() && out.get("top_p").is_none());
    }
    let out = body(
        json!({"messages": [user(json!("q"))], "reasoning_effort": "low", "max_tokens": 5000}),
    );
    assert_eq!(out["max_tokens"], 5000);
    let out = body(
        json!({"messages": [user(json!("q"))], "reasoning_effort": "minimal", "temperature": 0.3}),
    );
    assert!(out.get("thinking").is_none());
    assert_eq!(out["temperature"], 0.3);
    let error = refused(json!({"messages": [user(json!("q"))], "reasoning_effort": "extreme"}));
    assert_eq!(error.field, "reasoning_effort");
    let error = refused(
        json!({"messages": [user(json!("q"))], "reasoning_effort": "low",
        "tools": [{"type": "function", "function": {"name": "w"}}], "tool_choice": "required"}),
    );
    assert_eq!(error.field, "tool_choice");
}

#[test]
fn response_format_forces_the_json_tool() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let (out, reading) = translate(json!({"messages": [user(json!("q"))],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}));
    assert_eq!(reading.json_tool.as_deref(), Some(JSON_TOOL));
    assert_eq!(out["tools"][0]["name"], JSON_TOOL);
    assert_eq!(out["tools"][0]["input_schema"], schema);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": JSON_TOOL})
    );
    let (out, reading) = translate(
        json!({"messages": [user(json!("q"))], "response_format": {"type": "json_object"}}),
    );
    assert_eq!(reading.json_tool.as_deref(), Some(JSON_TOOL));
    assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
    let (out, reading) =
        translate(json!({"messages": [user(json!("q"))], "response_format": {"type": "text"}}));
    assert!(reading.json_tool.is_none() && out.get("tools").is_none());
    let json_schema =
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
    let error = refused(
        json!({"messages": [user(json!("q"))], "response_format": json_schema, "tool_choice": "auto"}),
    );
    assert_eq!(error.field, "tool_choice");
    let taken = json!([{"type": "function", "function": {"name": JSON_TOOL}}]);
    let error = refused(
        json!({"messages": [user(json!("q"))], "response_format": json_schema, "tools": taken}),
    );
    assert_eq!(error.field, "tools");
    let error = refused(
        json!({"messages": [user(json!("q"))], "response_format": json_schema, "reasoning_effort": "low"}),
    );
    assert_eq!(error.field, "response_format");
    let error = refused(
        json!({"messages": [user(json!("q"))], "response_format": {"type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "array"}}}}),
    );
    assert_eq!(error.field, "response_format.json_schema.schema");
}

#[test]
fn what_anthropic_cannot_express_and_malformed_bodies_are_refused() {
    let fields = |chat: &[u8]| from_chat(chat, "m").unwrap_err().field;
    assert_eq!(fields(b"not json"), "body");
    assert_eq!(fields(b"[1]"), "body");
    assert_eq!(fields(b"{}"), "messages");
    assert_eq!(fields(br#"{"messages": []}"#), "messages");
    assert_eq!(fields(br#"{"messages": "hi"}"#), "messages");
    assert_eq!(
        fields(br#"{"messages": [{"content": "hi"}]}"#),
        "messages[0].role"
    );
    assert_eq!(
        fields(br#"{"messages": [{"role": "robot", "content": "hi"}]}"#),
        "messages[0].role"
    );
    assert_eq!(
        fields(br#"{"messages": [{"role": "system", "content": "only"}]}"#),
        "messages"
    );
    let n = refused(json!({"messages": [user(json!("q"))], "n": 2}));
    assert_eq!(n.field, "n");
    let functions = refused(json!({"messages": [user(json!("q"))], "functions": [{"name": "f"}]}));
    assert_eq!(functions.field, "functions");
}

#[test]
fn thinking_blocks_go_back_first_and_a_tool_turn_without_them_goes_without_thinking() {
    let thought = json!({"type": "thinking", "thinking": "use w", "signature": "sig"});
    let call =
        json!({"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}});
    let turn = |blocks: Value| {
        json!({"messages": [
            user(json!("q")),
            {"role": "assistant", "content": "Checking.", "thinking_blocks": blocks, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ], "reasoning_effort": "low"})
    };
    let out = body(turn(json!([thought])));
    assert_eq!(out["thinking"]["budget_tokens"], 1024);
    assert_eq!(
        out["messages"][1]["content"],
        json!([thought, {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "c1", "name": "w", "input": {}}])
    );
    let out = body(turn(Value::Null));
    assert!(out.get("thinking").is_none());
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    // A later plain turn starts afresh: thinking is back.
    let mut chat = turn(Value::Null);
    chat["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "Done."}),
        user(json!("again")),
    ]);
    assert!(body(chat).get("thinking").is_some());
    let error = refused(turn(json!([{"type": "text", "text": "x"}])));
    assert_eq!(error.field, "messages[1].thinking_blocks[0].type");
}
