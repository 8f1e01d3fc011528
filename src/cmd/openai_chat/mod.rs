//! `llm-proxy openai chat`: a conversation with a model through the proxy.
//!
//! On a terminal it is a line editor (rustyline) with a history file; when
//! stdin is not a terminal every line is one user message, so that a chat
//! can be scripted. Each turn sends the whole conversation to
//! `/v1/chat/completions`; the answer is printed as its server-sent events
//! arrive, or whole with `--no-stream`.
//!
//! Every exchange runs on a thread of its own and reports over a channel,
//! so that the main thread can watch for Ctrl-C while that thread waits in a
//! blocking read: Ctrl-C abandons the answer, not the process.
//!
//! Failures are [`ClientError`]s and keep the CLI's exit codes. On a
//! terminal, an unreachable proxy (2) or a rejected token (3) ends the chat
//! only before the first answer; any other failure is printed on one line and
//! the chat goes on. A scripted chat stops at its first failed turn.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use rustyline::DefaultEditor;
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use serde::Serialize;

use crate::cli::OpenaiChatArgs;
use crate::cmd::litellm::login_file::StoredLogin;
use crate::http_client::{Client, ClientError, Service};

mod exchange;

use exchange::{Exchange, Progress};

/// How the proxy and its token are named in messages.
const PROXY: Service = Service {
    name: "the proxy",
    url_flag: "--base-url",
    token_name: "token",
    token_flag: "--token",
    token_env: "PROXY_TOKEN",
};

/// The proxy when neither --base-url nor a stored login names one.
const DEFAULT_BASE_URL: &str = "http://localhost:8080";

/// How often the main thread looks for Ctrl-C while it waits.
const POLL: Duration = Duration::from_millis(50);
/// Exit status of a scripted chat stopped by Ctrl-C (128 + SIGINT).
const INTERRUPTED_EXIT: u8 = 130;
/// Lines kept in the history file.
const HISTORY_SIZE: usize = 1000;

pub fn run(args: &OpenaiChatArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(args)?;
    // Ctrl-C sets this flag instead of ending the process; while the line
    // editor reads, the terminal is in raw mode and Ctrl-C is a key instead.
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;
    let chat = Chat::new(settings, interrupted);
    if io::stdin().is_terminal() {
        chat.interactive()
    } else {
        chat.scripted()
    }
}

/// Validated arguments.
#[derive(Debug)]
struct Settings {
    /// Without a trailing slash, for messages.
    base_url: String,
    /// The chat completions URL.
    url: String,
    token: String,
    model: String,
    system: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    stream: bool,
}

impl Settings {
    fn from_args(args: &OpenaiChatArgs) -> Result<Settings, ClientError> {
        // The client checks the URL's scheme and the token's characters the
        // same way as for every other client command.
        let (base_url, token) = base_url_and_token(args, &crate::cmd::litellm::stored_login)?;
        let client = Client::new(PROXY, &base_url, token.clone())?.require_token()?;
        let base_url = client.base_url().to_string();
        if base_url.contains(['?', '#']) {
            return Err(usage("--base-url must not have a query or fragment"));
        }
        if args.model.trim().is_empty() {
            return Err(usage("--model must not be empty"));
        }
        if let Some(t) = args.temperature
            && !(t.is_finite() && (0.0..=2.0).contains(&t))
        {
            return Err(usage("--temperature must be between 0 and 2"));
        }
        Ok(Settings {
            url: chat_url(&base_url),
            base_url,
            // `require_token` has checked that there is one.
            token: token.unwrap_or_default(),
            model: args.model.clone(),
            system: args.system.clone().filter(|s| !s.trim().is_empty()),
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            stream: !args.no_stream,
        })
    }
}

fn usage(message: &str) -> ClientError {
    ClientError::Usage(message.to_string())
}

/// The base URL and token as given; without a token, the stored login's key
/// (`llm-proxy login`), but only for the login's own server, whose URL is
/// also the default then.
fn base_url_and_token(
    args: &OpenaiChatArgs,
    stored: &dyn Fn() -> Result<Option<StoredLogin>, ClientError>,
) -> Result<(String, Option<String>), ClientError> {
    let given = args.base_url.clone();
    if args.token.is_some() {
        return Ok((
            given.unwrap_or_else(|| DEFAULT_BASE_URL.into()),
            args.token.clone(),
        ));
    }
    Ok(match (stored()?, given) {
        (Some(login), None) => (login.base_url, Some(login.key)),
        (Some(login), Some(url))
            if login.is_for(&url)
                || login.is_for(url.trim_end_matches('/').trim_end_matches("/v1")) =>
        {
            (url, Some(login.key))
        }
        (_, url) => (url.unwrap_or_else(|| DEFAULT_BASE_URL.into()), None),
    })
}

/// The proxy serves `/v1/chat/completions`; a base URL that already ends in
/// `/v1` (as OpenAI's own is usually written) gets only `/chat/completions`.
fn chat_url(base_url: &str) -> String {
    if base_url.ends_with("/v1") {
        format!("{base_url}/chat/completions")
    } else {
        format!("{base_url}/v1/chat/completions")
    }
}

#[derive(Debug, Clone, Serialize)]
struct Message {
    role: &'static str,
    content: String,
}

#[derive(Debug, Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// How one turn ended.
enum Outcome {
    Answered,
    Failed(ClientError),
    Cancelled,
}

struct Chat {
    settings: Settings,
    exchange: Exchange,
    /// The whole conversation, sent with every turn; a turn that fails or is
    /// cancelled leaves no trace in it.
    messages: Vec<Message>,
    answers: usize,
    /// Set by Ctrl-C.
    interrupted: Arc<AtomicBool>,
}

impl Chat {
    fn new(settings: Settings, interrupted: Arc<AtomicBool>) -> Chat {
        let messages = settings
            .system
            .iter()
            .map(|system| Message {
                role: "system",
                content: system.clone(),
            })
            .collect();
        Chat {
            exchange: Exchange::new(&settings.url, &settings.base_url, &settings.token),
            settings,
            messages,
            answers: 0,
            interrupted,
        }
    }

    /// A line editor with history on the terminal.
    fn interactive(mut self) -> anyhow::Result<ExitCode> {
        let config = Config::builder()
            .max_history_size(HISTORY_SIZE)?
            .history_ignore_dups(true)?
            .history_ignore_space(true)
            .auto_add_history(false)
            .build();
        let mut editor = DefaultEditor::with_config(config)?;
        let history = history_path();
        if let Some(path) = &history {
            match editor.load_history(path) {
                Ok(()) => {}
                Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => eprintln!(
                    "warning: cannot read the history file {}: {e}",
                    path.display()
                ),
            }
        }
        eprintln!(
            "Chatting with {} through {}. Ctrl-C cancels an answer; \"exit\" or Ctrl-D ends.",
            self.settings.model, self.settings.base_url
        );
        let mut stdout = io::stdout();
        let result = loop {
            let line = match editor.readline("> ") {
                Ok(line) => line,
                // Ctrl-C at the prompt drops the line being typed.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break Ok(ExitCode::SUCCESS),
                Err(e) => break Err(e.into()),
            };
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if is_exit(text) {
                break Ok(ExitCode::SUCCESS);
            }
            // A duplicate or a line starting with a space is not added.
            let _ = editor.add_history_entry(line.as_str());
            let outcome = match self.turn(text, &mut stdout) {
                Ok(outcome) => outcome,
                Err(e) => break Err(e.into()),
            };
            match outcome {
                Outcome::Answered => {}
                Outcome::Cancelled => eprintln!("(answer cancelled)"),
                Outcome::Failed(error) => {
                    let fatal = matches!(
                        error,
                        ClientError::Auth { .. } | ClientError::Unreachable { .. }
                    );
                    if fatal && self.answers == 0 {
                        break Err(error.into());
                    }
                    eprintln!("error: {error}");
                }
            }
        };
        if let Some(path) = &history
            && let Err(e) = save_history(&mut editor, path)
        {
            eprintln!(
                "warning: cannot write the history file {}: {e}",
                path.display()
            );
        }
        result
    }

    /// One user message per line of stdin, until its end or "exit".
    fn scripted(mut self) -> anyhow::Result<ExitCode> {
        let lines = read_lines(io::stdin());
        let mut stdout = io::stdout().lock();
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                return Ok(ExitCode::from(INTERRUPTED_EXIT));
            }
            let line = match lines.recv_timeout(POLL) {
                Ok(line) => line.map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(ExitCode::SUCCESS),
            };
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if is_exit(text) {
                return Ok(ExitCode::SUCCESS);
            }
            match self.turn(text, &mut stdout)? {
                Outcome::Answered => {}
                Outcome::Cancelled => return Ok(ExitCode::from(INTERRUPTED_EXIT)),
                Outcome::Failed(error) => return Err(error.into()),
            }
        }
    }

    /// Sends the conversation with `text` appended and prints the answer as
    /// it arrives. Only output errors are `Err`.
    fn turn(&mut self, text: &str, out: &mut impl Write) -> io::Result<Outcome> {
        self.messages.push(Message {
            role: "user",
            content: text.to_string(),
        });
        self.interrupted.store(false, Ordering::SeqCst);
        let outcome = match self.request_body() {
            Ok(body) => match self.exchange.spawn(body, self.settings.stream) {
                Ok(progress) => self.follow(&progress, out)?,
                Err(error) => Outcome::Failed(error),
            },
            Err(error) => Outcome::Failed(error),
        };
        if !matches!(outcome, Outcome::Answered) {
            self.messages.pop();
        }
        Ok(outcome)
    }

    /// Prints deltas until the exchange ends or Ctrl-C is pressed.
    fn follow(
        &mut self,
        progress: &Receiver<Progress>,
        out: &mut impl Write,
    ) -> io::Result<Outcome> {
        let mut partial = false;
        loop {
            if self.interrupted.swap(false, Ordering::SeqCst) {
                if partial {
                    writeln!(out)?;
                }
                return Ok(Outcome::Cancelled);
            }
            match progress.recv_timeout(POLL) {
                Ok(Progress::Delta(delta)) => {
                    out.write_all(delta.as_bytes())?;
                    out.flush()?;
                    partial |= !delta.is_empty();
                }
                Ok(Progress::Done(Ok(answer))) => {
                    writeln!(out)?;
                    out.flush()?;
                    self.messages.push(Message {
                        role: "assistant",
                        content: answer,
                    });
                    self.answers += 1;
                    return Ok(Outcome::Answered);
                }
                Ok(Progress::Done(Err(error))) => {
                    if partial {
                        writeln!(out)?;
                        out.flush()?;
                    }
                    return Ok(Outcome::Failed(error));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Outcome::Failed(ClientError::BadResponse(
                        "the request ended without an answer".into(),
                    )));
                }
            }
        }
    }

    fn request_body(&self) -> Result<Vec<u8>, ClientError> {
        let request = ChatRequest {
            model: &self.settings.model,
            messages: &self.messages,
            stream: self.settings.stream,
            temperature: self.settings.temperature,
            max_tokens: self.settings.max_tokens,
        };
        serde_json::to_vec(&request)
            .map_err(|e| ClientError::Usage(format!("cannot encode the request: {e}")))
    }
}

fn is_exit(text: &str) -> bool {
    text.eq_ignore_ascii_case("exit") || text.eq_ignore_ascii_case("quit")
}

/// Lines of `input`, read on a thread so that the main thread can watch for
/// Ctrl-C; the channel closes at the end of the input.
fn read_lines(input: io::Stdin) -> Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in input.lock().lines() {
            let failed = line.is_err();
            if tx.send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// `$XDG_STATE_HOME/llm-proxy/chat_history`, or under `~/.local/state`;
/// `None` when neither is known (then nothing is saved).
fn history_path() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))?;
    Some(state.join("llm-proxy").join("chat_history"))
}

/// Appends this run's lines, so that two chats at once both keep theirs;
/// a new file is readable by its owner only.
fn save_history(editor: &mut DefaultEditor, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if path.exists() {
        editor.append_history(path)?;
    } else {
        editor.save_history(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_urls() {
        assert_eq!(
            chat_url("http://localhost:8080"),
            "http://localhost:8080/v1/chat/completions"
        );
        assert_eq!(
            chat_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn the_stored_login_without_a_token() {
        use clap::Parser;
        let parse = |args: &[&str]| match crate::cli::Cli::try_parse_from(
            ["llm-proxy", "openai", "chat"].iter().chain(args),
        ) {
            Ok(crate::cli::Cli {
                command:
                    crate::cli::Command::Openai(crate::cli::OpenaiArgs {
                        command: crate::cli::OpenaiCommand::Chat(args),
                    }),
            }) => args,
            other => panic!("{other:?}"),
        };
        let login = crate::cmd::litellm::test_env::login_at("http://proxy:8080", "sk-stored-42");
        let stored = || Ok(Some(login.clone()));
        let none = || Ok(None);
        let got = |args: &[&str], stored: &dyn Fn() -> Result<Option<StoredLogin>, ClientError>| {
            base_url_and_token(&parse(args), stored).unwrap()
        };
        let key = Some("sk-stored-42".to_string());
        assert_eq!(got(&[], &stored), ("http://proxy:8080".into(), key.clone()));
        assert_eq!(
            got(&["--base-url", "http://proxy:8080/v1"], &stored),
            ("http://proxy:8080/v1".into(), key)
        );
        assert_eq!(
            got(&["--base-url", "http://elsewhere"], &stored),
            ("http://elsewhere".into(), None)
        );
        assert_eq!(
            got(&["--token", "t"], &stored),
            (DEFAULT_BASE_URL.into(), Some("t".into()))
        );
        assert_eq!(got(&[], &none), (DEFAULT_BASE_URL.into(), None));
    }

    #[test]
    fn exit_words() {
        for word in ["exit", "quit", "EXIT", "Quit"] {
            assert!(is_exit(word), "{word}");
        }
        assert!(!is_exit("exit now"));
    }
}
