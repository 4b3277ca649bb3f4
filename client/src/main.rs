//! sixgate-client: connects to a sixgate (or any IKEv2) broker, installs
//! the IPv6 address it is given (preferred lifetime forever, so the system
//! uses it) and a default route through the tunnel, and keeps the tunnel
//! up. `up` runs it (in the foreground, or detached with `--daemon`);
//! `down` and `status` talk to the running client over its control socket.

mod check;
mod config;
mod daemon;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sixgate_runtime::{clock, logging, process};

#[derive(Parser)]
#[command(
    name = "sixgate-client",
    version,
    about = "IPv6 over an IKEv2/ESP tunnel to a sixgate broker"
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    /// The configuration file (of the running client, for `down` and
    /// `status`).
    #[arg(long, global = true, default_value = "/etc/sixgate/client.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Connect and keep the tunnel up.
    Up {
        /// Detach from the terminal once the daemon is running.
        #[arg(long)]
        daemon: bool,
    },
    /// Disconnect and remove the address and routes.
    Down,
    /// Check the configuration, the credentials and the ports as `up`
    /// would, without connecting: each problem with the key it is about.
    Check,
    /// Write the manual pages (roff) of every command to DIR.
    #[command(hide = true)]
    Man {
        /// The directory (e.g. /usr/local/share/man/man8).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the tunnel's state, address, DNS servers and counters.
    Status {
        /// Print the status as JSON, as the control socket gives it.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Verb::Man { out } = &cli.command {
        // Before the configuration: pages need none.
        let command = <Cli as clap::CommandFactory>::command();
        return process::exit(
            "sixgate-client",
            sixgate_runtime::manual::write_pages(command, out),
        );
    }
    if let Err(e) = cli.log.init() {
        eprintln!("sixgate-client: {e}");
        return ExitCode::from(2);
    }
    let config = match config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sixgate-client: {e}");
            return ExitCode::from(2);
        }
    };
    if let Verb::Up { daemon: true } = cli.command {
        return process::exit(
            "sixgate-client",
            daemon::detach(&cli.config, &config, &cli.log.log_level),
        );
    }
    // Root's work first, while this process has one thread.
    let credentials = match &cli.command {
        Verb::Up { .. } => match daemon::prepare(&config) {
            Ok(c) => Some(c),
            Err(e) => return process::exit("sixgate-client", Err(e)),
        },
        _ => {
            process::exit_on_broken_pipe();
            None
        }
    };
    process::run("sixgate-client", async {
        match cli.command {
            Verb::Up { .. } => daemon::run(config, credentials.expect("prepared")).await,
            Verb::Down => daemon::down(&config).await,
            // Written before the configuration was read.
            Verb::Man { .. } => Ok(()),
            Verb::Status { json } => daemon::print_status(&config, json).await,
            Verb::Check => {
                let (findings, _) = check::findings(&config, true, clock::unix_now());
                findings.report(&config.path)
            }
        }
    })
}
