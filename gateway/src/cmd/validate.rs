use std::path::PathBuf;
use std::process::ExitCode;

use fumegrid_common::profile::Profile;

use crate::config::{GatewayConfig, Transport};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["config", "profile"])))]
pub struct Args {
    /// Gateway config file; every profile it names is checked too.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A single device-profile file (while writing one for a new monitor model).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    if let Some(path) = args.profile {
        return match Profile::load(&path) {
            Ok(p) => {
                let blocks = crate::source::modbus::plan::plan(&p);
                println!(
                    "{}: ok — profile `{}`, {} points, read in {} request(s) per poll",
                    path.display(),
                    p.id,
                    p.points.len(),
                    blocks.len()
                );
                ExitCode::SUCCESS
            }
            Err(d) => fail(&d),
        };
    }
    let Some(path) = args.config else {
        return ExitCode::from(2);
    };
    match GatewayConfig::load(&path) {
        Ok(cfg) => {
            let rtu = cfg
                .devices
                .iter()
                .filter(|d| matches!(d.transport, Transport::Rtu(_)))
                .count();
            println!(
                "{}: ok — gateway `{}`, {} device(s): {} on {} RS-485 bus(es), {} over Modbus TCP",
                path.display(),
                cfg.gateway.id,
                cfg.devices.len(),
                rtu,
                cfg.buses.len(),
                cfg.devices.len() - rtu
            );
            ExitCode::SUCCESS
        }
        Err(d) => fail(&d),
    }
}

fn fail(d: &fumegrid_common::diag::Diagnostics) -> ExitCode {
    eprintln!("{d}");
    eprintln!("{} problem(s) found", d.len());
    ExitCode::from(2)
}
