//! `fumegrid-sim`: see `fumegrid-sim --help` and the library's `cmd` module.

use clap::Parser;
use fumegrid_sim::cmd::{self, Cli};

fn main() {
    let cli = Cli::parse();
    if let Err(e) = cmd::run(cli) {
        // Messages name the file or port and the cause; profile diagnostics are one per line as
        // `file:line:col: field: message`.
        eprintln!("{e}");
        std::process::exit(e.exit_code());
    }
}
