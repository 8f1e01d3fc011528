use std::process::ExitCode;

use clap::Parser;
use llm_proxy::cli::{Cli, Command, OpenaiCommand};
use llm_proxy::cmd;

fn main() -> ExitCode {
    cmd::process::main(Cli::try_parse, run)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => cmd::server::run(&args)?,
        Command::Setup(args) => cmd::setup::run(&args)?,
        Command::MockUpstream(args) => cmd::mock_upstream::run(&args)?,
        Command::Manage(args) => cmd::manage::run(&args)?,
        Command::Migrate(args) => cmd::migrate::run(&args)?,
        Command::Dispatcher(args) => return cmd::dispatcher::run(&args),
        Command::Benchmark(args) => cmd::benchmark::run(&args)?,
        Command::Openai(args) => match args.command {
            OpenaiCommand::Chat(args) => return cmd::openai_chat::run(&args),
        },
        Command::LiteLlm(command) => cmd::litellm::run(&command, &cmd::litellm::LLM_PROXY)?,
    }
    Ok(ExitCode::SUCCESS)
}
