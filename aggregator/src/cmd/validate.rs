use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{BrokerConfig, Config};
use crate::store::sqlite;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Aggregator config file (see `print-default-config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            eprintln!("{} problem(s) found", d.len());
            return ExitCode::from(2);
        }
    };
    // The store: an existing file must be ours and not newer; a new one needs a folder.
    let store = match sqlite::inspect(&cfg.store_path) {
        Ok(Some(v)) => format!("store schema v{v}"),
        Ok(None) => {
            let dir = cfg
                .store_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                eprintln!(
                    "{}: store.path: folder {} does not exist",
                    args.config.display(),
                    dir.display()
                );
                return ExitCode::from(2);
            }
            "store will be created".to_string()
        }
        Err(e) => {
            eprintln!("{}: store.path: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let broker = match &cfg.broker {
        BrokerConfig::Embedded {
            listen, users, tls, ..
        } => {
            // The certificate and key are parsed here too, so that the unit's `validate` before
            // start catches a bad file.
            if let Some((cert, key)) = tls
                && let Err(e) = crate::broker::gate::tls_config(cert, key)
            {
                eprintln!("{}: broker.tls_cert_file: {e}", args.config.display());
                return ExitCode::from(2);
            }
            let tls = if tls.is_some() { " (TLS)" } else { "" };
            format!(
                "embedded broker on {listen}{tls} with {} account(s)",
                users.len()
            )
        }
        BrokerConfig::External { host, port, .. } => format!("external broker {host}:{port}"),
    };
    println!(
        "{}: ok — aggregator `{}`, {} gateway key(s), {broker}, API on {}, {store}, \
         case catalogue {} ({} categories, {} departments)",
        args.config.display(),
        cfg.id,
        cfg.keys.len(),
        cfg.api_listen,
        cfg.catalogue_source,
        cfg.catalogue.categories.len(),
        cfg.catalogue.departments.len()
    );
    ExitCode::SUCCESS
}
