use std::process::ExitCode;

use clap::Parser;
use fumegrid_gateway::cmd::{self, Command};

/// fumegrid edge gateway: polls oil-fume monitors over Modbus RTU (RS-485) and Modbus TCP.
///
/// Technicians: write or pick a device profile, add the device to the config, then
/// `validate` the config and `probe` the device (`snapshot` each camera) before starting the
/// service.
#[derive(Debug, Parser)]
#[command(name = "fumegrid-gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    cmd::main(Cli::parse().command)
}
