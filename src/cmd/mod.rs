//! One module per subcommand; each turns parsed arguments into work.

pub mod benchmark;
pub mod manage;
pub mod mock_upstream;
pub mod server;
pub mod setup;
