//! `dheera_ai-proxy`: the LiteLLM-style client commands of `llm-proxy`
//! (`models`, `credentials`, `keys`, `users`, `chat`, `http`, `login`,
//! `logout`, `whoami`) as a program of their own, so that commands written
//! for it run as they are. It shares `llm-proxy`'s login file.

use std::process::ExitCode;

use clap::Parser;
use llm_proxy::cli::litellm::LiteLlmCli;
use llm_proxy::cmd;

fn main() -> ExitCode {
    cmd::process::main(LiteLlmCli::try_parse, |cli| {
        cmd::litellm::run(&cli.command, &cmd::litellm::DHEERA_AI_PROXY)?;
        Ok(ExitCode::SUCCESS)
    })
}
