use std::process::ExitCode;

use clap::Parser;
use fumegrid_aggregator::cmd::{self, Command};

/// fumegrid district aggregator: embedded MQTT broker, authenticated ingest of gateway batches,
/// SQLite store and HTTP API.
///
/// Start with `print-default-config > aggregator.toml`, add a `[[gateways]]` entry (id and HMAC
/// key) per gateway and a broker account per gateway in the credentials file, `validate` it,
/// then `run` it.
#[derive(Debug, Parser)]
#[command(name = "fumegrid-aggregator", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    cmd::main(Cli::parse().command)
}
