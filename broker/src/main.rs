//! sixgate-broker: the IKEv2 responder that gives IPv4-only clients a
//! routed IPv6 address over ESP, and its management verbs.
//!
//! `run` starts the daemon; `leases` and `status` ask the running daemon
//! over its control socket (found through the same configuration file).

mod daemon;

use sixgate_broker::config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sixgate_dataplane::process;

#[derive(Parser)]
#[command(
    name = "sixgate-broker",
    version,
    about = "IPv6 tunnel broker: IKEv2 responder with an address pool"
)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Run the broker daemon in the foreground.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the address leases.
    Leases {
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the connected clients and their SAs.
    Status {
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Verb::Run { config } | Verb::Leases { config } | Verb::Status { config } => config.clone(),
    };
    let config = match config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sixgate-broker: {e}");
            return ExitCode::from(2);
        }
    };
    process::run("sixgate-broker", async {
        match cli.command {
            Verb::Run { .. } => daemon::run(config).await,
            Verb::Leases { .. } => daemon::print_leases(&config).await,
            Verb::Status { .. } => daemon::print_status(&config).await,
        }
    })
}
