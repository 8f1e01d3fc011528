use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llm_proxy::cli::{Cli, Command, OpenaiCommand};
use llm_proxy::client::ClientError;
use llm_proxy::cmd;
use llm_proxy::loadgen::LoadError;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return clap_exit(&error),
    };
    init_logging();
    abort_on_panic();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => cmd::server::run(&args)?,
        Command::Setup(args) => cmd::setup::run(&args)?,
        Command::MockUpstream(args) => cmd::mock_upstream::run(&args)?,
        Command::Manage(args) => cmd::manage::run(&args)?,
        Command::Benchmark(args) => cmd::benchmark::run(&args)?,
        Command::Openai(args) => match args.command {
            OpenaiCommand::Chat(args) => return cmd::openai_chat::run(&args),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// A panic is a bug: stop the whole process (status 134) so that a
/// supervisor restarts it, rather than serve on with a dead worker whose
/// listener still takes connections.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// 2 server unreachable, 3 authentication failed, 1 anything else.
fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(error) = error.downcast_ref::<LoadError>() {
        return error.exit_code();
    }
    error
        .downcast_ref::<ClientError>()
        .map_or(1, ClientError::exit_code)
}

/// `--help` and `--version` exit 0; bad arguments exit 1 (2 means "server
/// unreachable" here, not clap's "usage error").
fn clap_exit(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `RUST_LOG` wins; otherwise `LOG_LEVEL` (as in the seed); default `info`.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
