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
use sixgate_broker::revocations::Revoked;
use sixgate_runtime::{logging, process};

#[derive(Parser)]
#[command(
    name = "sixgate-broker",
    version,
    about = "IPv6 tunnel broker: IKEv2 responder with an address pool"
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
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
        /// Print the connections as JSON, as the control socket gives them.
        #[arg(long)]
        json: bool,
    },
    /// Print the broker's counters (drops, retransmissions, leases).
    Stats {
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage DMZ sites (delegated prefixes over WireGuard).
    Site {
        #[command(subcommand)]
        verb: SiteVerb,
    },
    /// Manage road-warrior clients: revocation.
    Client {
        #[command(subcommand)]
        verb: ClientVerb,
    },
}

/// An identity or a certificate serial number.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct RevocationTarget {
    /// The client's identity (e.g. alice@example.net), in any spelling.
    identity: Option<String>,
    /// A certificate's serial number in hex (e.g. 10:02 or 1002).
    #[arg(long)]
    serial: Option<String>,
}

impl RevocationTarget {
    fn entry(self) -> Revoked {
        // clap requires one of the two; an empty identity is refused by
        // the daemon with a message like any other bad identity.
        match self.serial {
            Some(serial) => Revoked::Serial(serial),
            None => Revoked::Identity(self.identity.unwrap_or_default()),
        }
    }
}

#[derive(Subcommand)]
enum ClientVerb {
    /// Revoke an identity or a certificate: its tunnels end at once and it
    /// cannot connect again until `unrevoke`.
    Revoke {
        #[command(flatten)]
        target: RevocationTarget,
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// Take an identity or certificate off the revocation list.
    Unrevoke {
        #[command(flatten)]
        target: RevocationTarget,
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// List the revoked identities and certificates.
    Revoked {
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SiteVerb {
    /// Add a site: allocate its prefix and keys, configure its peer.
    Add {
        /// The site's name (a-z, 0-9, -).
        name: String,
        /// The site's WireGuard public key; without it a key pair is made.
        #[arg(long)]
        public_key: Option<String>,
        /// 64, 60 or 56; default `[sites] prefix_length`.
        #[arg(long)]
        prefix_length: Option<u8>,
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// List the sites with their latest handshake and counters.
    List {
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show one site.
    Show {
        /// The site's name.
        name: String,
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the DMZ router's files (wg-quick, nftables, dnsmasq).
    Config {
        /// The site's name.
        name: String,
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
        /// The DMZ router's home-side interface.
        #[arg(long, default_value = "eth0")]
        uplink: String,
        /// The DMZ router's LAN interface.
        #[arg(long, default_value = "eth1")]
        lan: String,
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
    /// Remove a site (its prefix is held back for `[sites] hold_down`).
    Remove {
        /// The site's name.
        name: String,
        /// The configuration file of the running broker.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Verb::Run { config }
        | Verb::Leases { config }
        | Verb::Status { config, .. }
        | Verb::Stats { config } => config.clone(),
        Verb::Site { verb } => match verb {
            SiteVerb::Add { config, .. }
            | SiteVerb::List { config }
            | SiteVerb::Show { config, .. }
            | SiteVerb::Config { config, .. }
            | SiteVerb::Remove { config, .. } => config.clone(),
        },
        Verb::Client { verb } => match verb {
            ClientVerb::Revoke { config, .. }
            | ClientVerb::Unrevoke { config, .. }
            | ClientVerb::Revoked { config } => config.clone(),
        },
    };
    if let Err(e) = cli.log.init() {
        eprintln!("sixgate-broker: {e}");
        return ExitCode::from(2);
    }
    let config = match config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sixgate-broker: {e}");
            return ExitCode::from(2);
        }
    };
    // Root's work first, while this process has one thread.
    let credentials = match &cli.command {
        Verb::Run { .. } => match daemon::prepare(&config) {
            Ok(c) => Some(c),
            Err(e) => return process::exit("sixgate-broker", Err(e)),
        },
        _ => {
            process::exit_on_broken_pipe();
            None
        }
    };
    process::run("sixgate-broker", async {
        match cli.command {
            Verb::Run { .. } => daemon::run(config, credentials.expect("prepared")).await,
            Verb::Leases { .. } => daemon::print_leases(&config).await,
            Verb::Status { json, .. } => daemon::print_status(&config, json).await,
            Verb::Stats { .. } => daemon::print_stats(&config).await,
            Verb::Site { verb } => {
                use daemon::Request;
                let (request, out) = match verb {
                    SiteVerb::Add {
                        name,
                        public_key,
                        prefix_length,
                        ..
                    } => (
                        Request::SiteAdd {
                            name,
                            public_key,
                            prefix_length,
                        },
                        None,
                    ),
                    SiteVerb::List { .. } => (Request::SiteList, None),
                    SiteVerb::Show { name, .. } => (Request::SiteShow(name), None),
                    SiteVerb::Config {
                        name,
                        out,
                        uplink,
                        lan,
                        ..
                    } => (Request::SiteConfig { name, uplink, lan }, Some(out)),
                    SiteVerb::Remove { name, .. } => (Request::SiteRemove(name), None),
                };
                daemon::site_verb(&config, request, out.as_deref()).await
            }
            Verb::Client { verb } => {
                use daemon::Request;
                let request = match verb {
                    ClientVerb::Revoke { target, .. } => Request::Revoke(target.entry()),
                    ClientVerb::Unrevoke { target, .. } => Request::Unrevoke(target.entry()),
                    ClientVerb::Revoked { .. } => Request::Revoked,
                };
                daemon::client_verb(&config, request).await
            }
        }
    })
}
