//! `llm-proxy openai chat` against a real server and the real mock upstream:
//! scripted over a pipe (one message a line), and on a terminal (a pty from
//! `script`) with the line editor.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test fails by panicking, and prints what it saw"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::cli::{Cli, CliRun, RecordingServer};
use common::pty::Pty;
use common::*;
use serde_json::json;

/// How long a chat on a terminal may take to end.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `llm-proxy openai chat <args>` with `input` on a pipe as stdin.
fn chat(args: &[&str], env: &[(&str, &str)], input: &str) -> CliRun {
    let home = TempDir::new("chat-home");
    let mut cli = Cli::new(["openai", "chat"])
        .args(args.iter().copied())
        .env("HOME", home.path().display().to_string())
        .stdin(input);
    for (key, value) in env {
        cli = cli.env(key, *value);
    }
    cli.run_in(home.path())
}

/// A streamed answer made of `parts`, as an upstream would send it.
fn sse_response(parts: &[&str]) -> String {
    let mut body = String::new();
    for part in parts {
        let chunk = json!({
            "id": "chatcmpl-rec",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": null}],
        });
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_piped_conversation_sends_the_whole_conversation_every_turn() {
    let upstream = RecordingServer::raw(sse_response(&["Bon", "jour", " !"]));
    let proxy = Proxy::builder().upstream(upstream.url()).start();
    let url = proxy.url();
    let run = chat(
        &[
            "--base-url",
            &url,
            "--token",
            CLIENT_KEY,
            "--model",
            "gpt-4o-mini",
            "--system",
            "Answer in French.",
            "--temperature",
            "0.2",
            "--max-tokens",
            "50",
        ],
        &[],
        "Hello\n\n  How are you?  \nexit\nnever sent\n",
    );
    run.assert_code(0);
    assert_eq!(run.stdout, "Bonjour !\nBonjour !\n");
    assert_eq!(run.stderr, "");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let system = json!({"role": "system", "content": "Answer in French."});
    let first = requests[0].json();
    assert_eq!(
        first["messages"],
        json!([system, {"role": "user", "content": "Hello"}])
    );
    let second = requests[1].json();
    assert_eq!(
        second["messages"],
        json!([
            system,
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour !"},
            {"role": "user", "content": "How are you?"},
        ])
    );
    for body in [&first, &second] {
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["max_tokens"], 50);
    }
    assert_eq!(requests[1].target, "/v1/chat/completions");
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str()),
        "the proxy swapped the key"
    );
}

#[test]
fn answers_are_printed_as_they_stream_from_the_mock() {
    let mock = Mock::builder().args(["--chunk-interval-ms", "100"]).start();
    let proxy = Proxy::for_mock(&mock).start();
    // A base URL ending in /v1, as OpenAI's is usually written; the token
    // from the environment.
    let base = format!("{}/v1", proxy.url());
    let run = chat(
        &["--base-url", &base],
        &[("PROXY_TOKEN", CLIENT_KEY)],
        "Tell me something\n",
    );
    run.assert_code(0);
    assert_eq!(run.stdout, format!("{}\n", mock_text(16)));
    let first = run
        .pieces
        .iter()
        .find(|(_, text)| text.contains("The"))
        .map(|(at, _)| *at)
        .unwrap();
    let last = run
        .pieces
        .iter()
        .find(|(_, text)| text.contains("answer"))
        .map(|(at, _)| *at)
        .unwrap();
    // 16 deltas 100 ms apart: the first word long before the last.
    assert!(
        last >= first + Duration::from_millis(800),
        "not streamed: {:?}",
        run.pieces
    );
    assert_eq!(mock.stat("streams_completed"), 1);
}

#[test]
fn no_stream_asks_for_and_prints_whole_answers() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let url = proxy.url();
    let run = chat(
        &["--base-url", &url, "--token", CLIENT_KEY, "--no-stream"],
        &[],
        "One\nTwo\n",
    );
    run.assert_code(0);
    let answer = mock_text(16);
    assert_eq!(run.stdout, format!("{answer}\n{answer}\n"));
    assert_eq!(mock.stat("streams_started"), 0, "no stream was asked for");
}

#[test]
fn a_rejected_key_exits_3_with_the_servers_message() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let url = proxy.url();
    let run = chat(
        &["--base-url", &url, "--token", "sk-not-a-real-key-42"],
        &[],
        "Hello\nAgain\n",
    );
    let line = run.error_line(3);
    assert!(line.contains("401: invalid API key"), "{line}");
    assert!(line.contains("--token / PROXY_TOKEN"), "{line}");
    assert!(!line.contains("sk-not-a-real-key-42"), "{line}");
    assert_eq!(run.stdout, "");
    assert_eq!(mock.stat("streams_started"), 0);
}

#[test]
fn an_unreachable_proxy_exits_2() {
    let url = format!("http://{}", closed_port());
    let run = chat(&["--base-url", &url, "--token", CLIENT_KEY], &[], "Hello\n");
    let line = run.error_line(2);
    assert!(line.contains("cannot reach the proxy"), "{line}");
    assert!(line.contains(&url), "{line}");
}

#[test]
fn a_failed_later_turn_ends_a_scripted_chat_with_the_servers_message() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let token = proxy.create_token(json!({"max_requests": 1}));
    let secret = token["token"].as_str().unwrap();
    let url = proxy.url();
    let run = chat(
        &["--base-url", &url, "--token", secret],
        &[],
        "One\nTwo\nThree\n",
    );
    let line = run.error_line(1);
    assert!(line.contains("the proxy answered 429"), "{line}");
    assert!(line.contains("maximum number of requests"), "{line}");
    assert_eq!(run.stdout, format!("{}\n", mock_text(16)));
    assert_eq!(mock.stat("streams_completed"), 1);
}

#[test]
fn bad_arguments_are_found_before_anything_is_sent() {
    let cases: [(&[&str], i32, &str); 4] = [
        (&[], 3, "no token: pass --token or set PROXY_TOKEN"),
        (
            &["--token", "t", "--temperature", "2.5"],
            1,
            "--temperature must be between 0 and 2",
        ),
        (
            &["--token", "t", "--base-url", "localhost:8080"],
            1,
            "--base-url must be an http:// or https:// URL",
        ),
        (&["--token", "t", "--model", " "], 1, "--model"),
    ];
    for (args, code, needle) in cases {
        let run = chat(args, &[], "Hello\n");
        let line = run.error_line(code);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

// ---------------------------------------------------------------------------
// On a terminal
// ---------------------------------------------------------------------------

/// `llm-proxy openai chat <args>` on a terminal, at home in `home`.
fn chat_on_a_terminal(args: &[&str], home: &Path) -> Pty {
    let args = [&["openai", "chat"], args].concat();
    Pty::spawn(&args, home, "xterm", Some(home))
}

fn history(home: &Path) -> std::path::PathBuf {
    home.join(".local/state/llm-proxy/chat_history")
}

/// A typed line (edited with the arrow keys) gets a streamed answer; a
/// failure after the first answer is printed and the chat goes on; `exit`
/// ends it; the lines are kept in the history file.
#[test]
fn on_a_terminal_a_typed_line_gets_a_streamed_answer_until_exit() {
    let mock = Mock::builder().args(["--chunk-interval-ms", "20"]).start();
    let proxy = Proxy::for_mock(&mock).start();
    let token = proxy.create_token(json!({"max_requests": 1}));
    let secret = token["token"].as_str().unwrap();
    let home = TempDir::new("chat-pty");
    let url = proxy.url();
    let mut pty = chat_on_a_terminal(
        &[
            "--base-url",
            &url,
            "--token",
            secret,
            "--model",
            "gpt-4o-mini",
        ],
        home.path(),
    );
    pty.expect("Chatting with gpt-4o-mini");
    pty.expect("> ");
    // "hello wrld", three steps left, "o": "hello world".
    pty.send("hello wrld\x1b[D\x1b[D\x1b[Do\r");
    pty.expect(&mock_text(16));
    pty.expect("> ");
    pty.send("second question\r");
    pty.expect("error: the proxy answered 429");
    pty.expect("> ");
    pty.send("exit\r");
    let status = pty.wait_exit(RUN_TIMEOUT);
    let output = pty.output();
    assert!(status.success(), "{status:?}: {output:?}");
    assert_eq!(mock.stat("streams_completed"), 1);

    let path = history(home.path());
    let saved = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = saved.lines().collect();
    assert!(lines.contains(&"hello world"), "{saved:?}");
    assert!(lines.contains(&"second question"), "{saved:?}");
    assert!(!lines.contains(&"exit"), "{saved:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the history holds conversations");
}

/// Ctrl-C cancels an answer being streamed and clears a line being typed;
/// neither ends the chat. Ctrl-D does, with status 0.
#[test]
fn on_a_terminal_ctrl_c_cancels_and_ctrl_d_ends() {
    let mock = Mock::builder().args(["--chunk-interval-ms", "200"]).start();
    let proxy = Proxy::for_mock(&mock).start();
    let home = TempDir::new("chat-pty-keys");
    let url = proxy.url();
    let mut pty = chat_on_a_terminal(&["--base-url", &url, "--token", CLIENT_KEY], home.path());
    pty.expect("> ");
    pty.send("a long story\r");
    pty.expect("The quick");
    pty.send("\x03");
    pty.expect("(answer cancelled)");
    pty.expect("> ");
    pty.send("never sent");
    pty.expect("never sent");
    pty.send("\x03");
    pty.expect("> ");
    pty.send("\x04");
    let status = pty.wait_exit(RUN_TIMEOUT);
    let output = pty.output();
    assert!(status.success(), "{status:?}: {output:?}");
    assert!(
        !output.contains("streams its answer"),
        "the answer went on after Ctrl-C: {output:?}"
    );
    assert_eq!(mock.stat("streams_started"), 1, "one request only");
    let saved = std::fs::read_to_string(history(home.path())).unwrap();
    assert!(saved.lines().any(|l| l == "a long story"), "{saved:?}");
    assert!(!saved.contains("never sent"), "{saved:?}");
}

#[test]
fn on_a_terminal_a_rejected_key_on_the_first_turn_exits_3() {
    let mock = Mock::start();
    let proxy = Proxy::for_mock(&mock).start();
    let home = TempDir::new("chat-pty-auth");
    let url = proxy.url();
    let mut pty = chat_on_a_terminal(
        &["--base-url", &url, "--token", "sk-wrong-0000"],
        home.path(),
    );
    pty.expect("> ");
    pty.send("hello\r");
    pty.expect("rejected the token (401: invalid API key)");
    let status = pty.wait_exit(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(3), "{:?}", pty.output());
}
