//! sixgate-broker: the IKEv2 responder that gives IPv4-only clients a
//! routed IPv6 address over ESP, and its management verbs.
//!
//! `run` starts the daemon and `check` checks what it would start with;
//! `ca` and `client add` work on the files alone; the other verbs ask the
//! running daemon over its control socket (found through the same
//! configuration file, `/etc/sixgate/broker.toml` unless `--config`).

mod daemon;

use sixgate_broker::config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sixgate_broker::revocations::Revoked;
use sixgate_broker::siteconfig::{self, RouterOptions};
use sixgate_broker::{check, enroll};
use sixgate_runtime::ca::KeyKind;
use sixgate_runtime::{clock, logging, process};

#[derive(Parser)]
#[command(
    name = "sixgate-broker",
    version,
    about = "IPv6 tunnel broker: IKEv2 responder with an address pool"
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    /// The configuration file (of the running broker, for the verbs that
    /// ask it).
    #[arg(long, global = true, default_value = "/etc/sixgate/broker.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Run the broker daemon in the foreground.
    Run,
    /// Check the configuration, the credentials and the ports as a start
    /// would, without starting: each problem with the key it is about.
    Check,
    /// Print the address leases.
    Leases {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the connected clients and their SAs.
    Status {
        /// Print the connections as JSON, as the control socket gives them.
        #[arg(long)]
        json: bool,
    },
    /// Print the broker's counters (drops, retransmissions, leases).
    Stats,
    /// Make the running broker read its configuration again (as SIGHUP
    /// does): credentials, CRLs, proposals, limits, static reservations;
    /// no tunnel is dropped.
    Reload,
    /// The broker's own certificate authority (in the state directory).
    Ca {
        #[command(subcommand)]
        verb: CaVerb,
    },
    /// Manage DMZ sites (delegated prefixes over WireGuard).
    Site {
        #[command(subcommand)]
        verb: SiteVerb,
    },
    /// Manage road-warrior clients: enrollment, connections, revocation.
    Client {
        #[command(subcommand)]
        verb: ClientVerb,
    },
    /// Write the manual pages (roff) of every command to DIR.
    #[command(hide = true)]
    Man {
        /// The directory (e.g. /usr/local/share/man/man8).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaVerb {
    /// Make a new CA (its key 0600 in the state directory).
    Init {
        /// An RSA (3072-bit) key instead of ECDSA P-256, for clients that
        /// need RSA.
        #[arg(long)]
        rsa: bool,
        /// The CA's common name.
        #[arg(long, default_value = "sixgate CA")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Use an existing CA's certificate and key (PEM) instead.
    Import {
        /// The CA certificate.
        certificate: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// Issue the broker's certificate: SAN DNS:NAME, serverAuth and the
    /// IKE-intermediate EKU the stock clients look for.
    IssueBroker {
        /// The broker's host name, as clients are told to reach it.
        name: String,
        /// Where to write broker.pem (the chain) and broker.key.
        #[arg(long)]
        out: PathBuf,
        /// An RSA key instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
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
    /// Issue a client certificate and write a bundle for every client
    /// kind: sixgate-client, strongSwan, Apple, Windows, Android.
    Add {
        /// The client's identity: alice@example.net, or a host name.
        identity: String,
        /// Where to write the bundle; default ./IDENTITY.
        #[arg(long)]
        out: Option<PathBuf>,
        /// An RSA key instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// The broker's name or address for the clients; default the
        /// broker's identity when that is a host name.
        #[arg(long)]
        broker: Option<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// List the enrolled clients: certificate expiry, lease, connected.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// End an identity's tunnels now (it may connect again).
    Disconnect {
        /// The client's identity, in any spelling.
        identity: String,
    },
    /// Revoke an identity or a certificate: its tunnels end at once and it
    /// cannot connect again until `unrevoke`.
    Revoke {
        #[command(flatten)]
        target: RevocationTarget,
    },
    /// Take an identity or certificate off the revocation list.
    Unrevoke {
        #[command(flatten)]
        target: RevocationTarget,
    },
    /// List the revoked identities and certificates.
    Revoked,
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
    },
    /// List the sites with their latest handshake and counters.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one site.
    Show {
        /// The site's name.
        name: String,
    },
    /// Write the DMZ router's files (wg-quick, nftables, dnsmasq, a
    /// systemd unit).
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
        /// The WireGuard interface (its file is NAME.conf).
        #[arg(long, default_value = siteconfig::DEFAULT_INTERFACE)]
        interface: String,
        /// The DMZ's IPv4 LAN (NAT'd into the tunnel).
        #[arg(long, default_value = siteconfig::DEFAULT_DMZ4)]
        dmz4: ipnet::Ipv4Net,
        /// A DNS server to announce on the DMZ LAN (repeatable); default
        /// the router itself, forwarding to its resolvers.
        #[arg(long)]
        dns: Vec<std::net::IpAddr>,
        /// Who may reach the router's SSH from the home side (CIDR);
        /// default the whole home LAN.
        #[arg(long)]
        admin_from: Option<ipnet::IpNet>,
    },
    /// Remove a site (its prefix is held back for `[sites] hold_down`).
    Remove {
        /// The site's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Verb::Man { out } = &cli.command {
        // Before the configuration: pages need none.
        let command = <Cli as clap::CommandFactory>::command();
        return process::exit(
            "sixgate-broker",
            sixgate_runtime::manual::write_pages(command, out),
        );
    }
    if let Err(e) = cli.log.init() {
        eprintln!("sixgate-broker: {e}");
        return ExitCode::from(2);
    }
    let config = match config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sixgate-broker: {e}");
            return ExitCode::from(2);
        }
    };
    // Root's work first, while this process has one thread.
    let credentials = match &cli.command {
        Verb::Run => match daemon::prepare(&config) {
            Ok(c) => Some(c),
            Err(e) => return process::exit("sixgate-broker", Err(e)),
        },
        _ => {
            process::exit_on_broken_pipe();
            None
        }
    };
    process::run("sixgate-broker", async {
        use daemon::Request;
        match cli.command {
            Verb::Run => daemon::run(config, credentials.expect("prepared")).await,
            // Written before the configuration was read.
            Verb::Man { .. } => Ok(()),
            Verb::Check => {
                let (findings, _) =
                    check::findings(&config, check::Ports::Check, clock::unix_now());
                findings.report(&config.path)
            }
            Verb::Ca { verb } => {
                let store = enroll::CaStore::new(&config);
                match verb {
                    CaVerb::Init { rsa, name, days } => store.init(&name, key_kind(rsa), days),
                    CaVerb::Import { certificate, key } => store.import(&certificate, &key),
                    CaVerb::IssueBroker {
                        name,
                        out,
                        rsa,
                        days,
                    } => store.issue_broker(&name, &out, key_kind(rsa), days),
                }
                .map(|text| print!("{text}"))
            }
            Verb::Leases { json } => daemon::print_leases(&config, json).await,
            Verb::Status { json } => daemon::print_status(&config, json).await,
            Verb::Stats => daemon::print_stats(&config).await,
            Verb::Reload => daemon::client_verb(&config, Request::Reload).await,
            Verb::Site { verb } => {
                let (request, out, json) = match verb {
                    SiteVerb::Add {
                        name,
                        public_key,
                        prefix_length,
                    } => (
                        Request::SiteAdd {
                            name,
                            public_key,
                            prefix_length,
                        },
                        None,
                        false,
                    ),
                    SiteVerb::List { json } => (Request::SiteList, None, json),
                    SiteVerb::Show { name } => (Request::SiteShow(name), None, false),
                    SiteVerb::Config {
                        name,
                        out,
                        uplink,
                        lan,
                        interface,
                        dmz4,
                        dns,
                        admin_from,
                    } => (
                        Request::SiteConfig {
                            name,
                            router: RouterOptions {
                                uplink,
                                lan,
                                interface,
                                dmz4,
                                dns,
                                admin_from,
                            },
                        },
                        Some(out),
                        false,
                    ),
                    SiteVerb::Remove { name } => (Request::SiteRemove(name), None, false),
                };
                daemon::site_verb(&config, request, out.as_deref(), json).await
            }
            Verb::Client { verb } => match verb {
                ClientVerb::Add {
                    identity,
                    out,
                    rsa,
                    broker,
                    days,
                } => enroll::client_add(
                    &config,
                    &identity,
                    out.as_deref(),
                    key_kind(rsa),
                    broker.as_deref(),
                    days,
                )
                .map(|text| print!("{text}")),
                ClientVerb::List { json } => daemon::print_clients(&config, json).await,
                ClientVerb::Disconnect { identity } => {
                    daemon::client_verb(&config, Request::Disconnect(identity)).await
                }
                ClientVerb::Revoke { target } => {
                    daemon::client_verb(&config, Request::Revoke(target.entry())).await
                }
                ClientVerb::Unrevoke { target } => {
                    daemon::client_verb(&config, Request::Unrevoke(target.entry())).await
                }
                ClientVerb::Revoked => daemon::client_verb(&config, Request::Revoked).await,
            },
        }
    })
}

fn key_kind(rsa: bool) -> KeyKind {
    if rsa {
        KeyKind::Rsa
    } else {
        KeyKind::EcdsaP256
    }
}
