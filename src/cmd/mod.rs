//! One module per subcommand; each turns parsed arguments into work.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the commands talk to the person who ran them; nothing here is on a request path"
)]

pub mod audit;
pub mod benchmark;
pub mod dispatcher;
pub mod litellm;
pub mod manage;
pub mod migrate;
pub mod mock_upstream;
pub mod openai_chat;
pub mod output;
pub mod process;
pub mod server;
pub mod setup;
