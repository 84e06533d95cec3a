//! One module per subcommand; each returns the process exit code.
//!
//! Exit codes: 0 success, 1 runtime failure (port busy, store unusable), 2 bad config or
//! arguments.

pub mod run;
pub mod validate;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the broker, ingest, store and HTTP API; run until SIGTERM/SIGINT (or --duration).
    Run(run::Args),
    /// Check a config file and every file it names (credentials, keys, password, store);
    /// report every problem with file, line and field. Exit 0 when valid, 2 when not.
    Validate(validate::Args),
    /// Print a commented example config with every key and its default.
    PrintDefaultConfig,
    /// Print the built-in case catalogue (categories, departments, time limits, working
    /// calendar), to copy, adapt and name in `[cases] catalogue`.
    PrintDefaultCatalogue,
    /// Make a random API token. Prints the token once (give it to its holder) and the
    /// `[[tokens]]` entry with its SHA-256 to append to the `[api] tokens_file`.
    NewToken(NewTokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct NewTokenArgs {
    /// Shown as the actor in case timelines, e.g. `dispatch-desk` or `epb-duty`.
    #[arg(long)]
    pub name: String,
    /// operator, department, viewer or reporter.
    #[arg(long)]
    pub role: String,
    /// The catalogue department id, for role `department`.
    #[arg(long)]
    pub department: Option<String>,
}

pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
        Command::PrintDefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::PrintDefaultCatalogue => {
            print!("{}", crate::cases::catalogue::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::NewToken(a) => new_token(a),
    }
}

fn new_token(a: NewTokenArgs) -> ExitCode {
    let ok_role = matches!(
        (a.role.as_str(), &a.department),
        ("operator" | "viewer" | "reporter", None) | ("department", Some(_))
    );
    if !ok_role {
        eprintln!(
            "error: --role must be operator, viewer or reporter (without --department) or \
             department (with --department <id>)"
        );
        return ExitCode::from(2);
    }
    let Some(token) = crate::auth::random_token() else {
        eprintln!("error: no OS randomness");
        return ExitCode::FAILURE;
    };
    let hash = hex::encode(crate::auth::sha256(&token));
    eprintln!("token (shown once; give it to its holder): {token}");
    println!("[[tokens]]");
    println!("name = {:?}", a.name);
    println!("role = {:?}", a.role);
    if let Some(d) = &a.department {
        println!("department = {d:?}");
    }
    println!("sha256 = \"{hash}\"");
    ExitCode::SUCCESS
}
