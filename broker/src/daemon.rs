//! The running broker: its configuration, stores and data plane handed to
//! the runtime, the DMZ sites beside it, and the control socket's
//! requests answered from both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sixgate_dataplane::plane::DataPlane;
use sixgate_dataplane::udp::IkeSockets;
use sixgate_dataplane::xfrm::Owner;
use sixgate_dataplane::{netconf, secrets};
use sixgate_proto::endpoint;
use sixgate_runtime::control::{self, Incoming};
use sixgate_runtime::engine::{self, Command, Connection, Parts, Role};
use sixgate_runtime::{pki, plane};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use sixgate_broker::config::{Config, DEFAULT_DEVICE};
use sixgate_broker::leases::{Lease, Leases, SledLeaseStore};
use sixgate_broker::sitenet::{SiteNet, SiteState};
use sixgate_broker::sites::{Site, SiteStore};

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Leases,
    Status,
    SiteAdd {
        name: String,
        public_key: Option<String>,
        prefix_length: Option<u8>,
    },
    SiteList,
    SiteShow(String),
    SiteConfig {
        name: String,
        uplink: String,
        lan: String,
    },
    SiteRemove(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Leases(Vec<Lease>),
    Status(Vec<Connection>),
    Site(Site),
    Sites(Vec<SiteState>),
    Files(Vec<(String, String)>),
    Error(String),
}

pub async fn run(config: Config) -> Result<(), String> {
    secrets::restrict_umask();
    let f = &config.file;
    let chain = pki::load_chain(&f.ike.certificate)?;
    let identity = pki::own_identity(&f.ike.identity.to_string(), &chain)
        .map_err(|e| format!("{}: key `ike.identity`: {e}", config.path.display()))?;
    let key = pki::load_key(&f.ike.private_key)?;
    pki::check_key_matches(&chain, &key)
        .map_err(|e| format!("{}: {e}", f.ike.private_key.display()))?;
    let anchors = pki::load_anchors(&f.ike.ca)?;
    let reservations: Vec<_> = f
        .pool
        .reservations
        .iter()
        .map(|(id, addr)| (id.0.clone(), *addr))
        .collect();
    // Leases, the WireGuard private key and the site keys live here.
    secrets::private_dir(&f.storage.path)
        .map_err(|e| format!("{}: {e}", f.storage.path.display()))?;
    let store = Arc::new(
        SledLeaseStore::open(
            &f.storage.path,
            config.pool_base,
            config.pool_size,
            &reservations,
        )
        .map_err(|e| format!("lease store in {}: {e}", f.storage.path.display()))?,
    );

    let sockets = IkeSockets::bind(&f.ike.listen, 500, 4500)
        .await
        .map_err(|e| format!("binding IKE ports: {e}"))?;
    let nat_t = sockets
        .socket(SocketAddr::new(f.ike.listen[0], 4500))
        .ok_or("no NAT-T socket")?;
    let child_lifetime = Duration::from_secs(f.ike.child_lifetime);
    let plane = f.dataplane.plane_config(
        Owner::Broker,
        DEFAULT_DEVICE,
        f.ike.listen[0],
        child_lifetime,
    );
    let (dp, kernel_events) = DataPlane::start(&plane, nat_t)?;
    let dp = Arc::new(dp);
    if let Err(e) = netconf::enable_ipv6_forwarding() {
        tracing::warn!("enabling IPv6 forwarding: {e}");
    }

    let mut ike = endpoint::Config::new(identity, chain, Arc::new(key), anchors);
    ike.dns = f.pool.dns.clone();
    ike.dpd_interval = Duration::from_secs(f.ike.dpd_interval);
    ike.fragment_size = f.ike.fragment_size;
    ike.child_lifetime = child_lifetime;
    ike.ike_lifetime = Duration::from_secs(f.ike.ike_lifetime);
    ike.rekey_jitter = ike.child_lifetime.min(ike.ike_lifetime) / 10;
    ike.force_udp_encapsulation =
        dp.forces_udp_encapsulation() || f.dataplane.force_udp_encapsulation;
    let kernel_events = plane::kernel_events(&dp, kernel_events);
    let mut runtime = engine::spawn(Parts {
        ike: Arc::new(ike),
        role: Role::Responder,
        sockets,
        plane: dp.clone(),
        esp: dp.esp_handler(),
        kernel_events,
        leases: Some(Box::new(Leases(store.clone()))),
    })
    .map_err(|e| format!("starting the runtime: {e}"))?;
    let mut sites = match &f.sites {
        Some(cfg) => {
            let store = SiteStore::open(
                &f.storage.path,
                (cfg.prefix.0.network(), cfg.prefix.0.prefix_len()),
                (cfg.transfer4.0.network(), cfg.transfer4.0.prefix_len()),
                cfg.hold_down,
            )
            .map_err(|e| e.to_string())?;
            Some(SiteNet::start(cfg, store)?)
        }
        None => None,
    };
    let mut liveness = tokio::time::interval(Duration::from_secs(1));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tracing::info!(
        "listening on {:?}, pool {}, {}",
        f.ike.listen,
        f.pool.prefix,
        dp.describe()
    );
    // Last: a control socket that answers means the daemon is running.
    let listener = control::bind(&config.control_socket)
        .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;
    let mut requests = control::serve::<Request, Response>(listener, Response::Error);

    loop {
        tokio::select! {
            event = runtime.events.recv() => if event.is_none() { break },
            Some(Incoming { request, reply }) = requests.recv() => {
                let response = match request {
                    Request::Leases => store
                        .list()
                        .map(Response::Leases)
                        .unwrap_or_else(|e| Response::Error(e.to_string())),
                    Request::Status => {
                        let (tx, rx) = oneshot::channel();
                        let _ = runtime.commands.send(Command::Connections(tx));
                        rx.await.map(Response::Status).unwrap_or_else(|_| Response::Error("the runtime stopped".into()))
                    }
                    request => site_request(sites.as_mut(), request),
                };
                let _ = reply.send(response);
            }
            _ = liveness.tick() => {
                if let Some(s) = sites.as_mut() {
                    s.check_liveness();
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if let Some(mut s) = sites.take() {
        s.stop();
    }
    // Orderly stop: tell every client, give the deletes a moment, then
    // remove what we installed.
    runtime.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&config.control_socket);
    dp.stop();
    Ok(())
}

fn site_request(sites: Option<&mut SiteNet>, request: Request) -> Response {
    let Some(sites) = sites else {
        return Response::Error("this broker has no [sites] configured".into());
    };
    let result = match request {
        Request::SiteAdd {
            name,
            public_key,
            prefix_length,
        } => sites
            .add(&name, public_key.as_deref(), prefix_length)
            .map(Response::Site),
        Request::SiteList => sites.list().map(Response::Sites),
        Request::SiteShow(name) => sites.get(&name).map(Response::Site),
        Request::SiteConfig { name, uplink, lan } => {
            sites.files(&name, &uplink, &lan).map(Response::Files)
        }
        Request::SiteRemove(name) => sites.remove(&name).map(Response::Site),
        Request::Leases | Request::Status => Err("not a site request".into()),
    };
    result.unwrap_or_else(Response::Error)
}

/// Sends a request to the running broker.
pub async fn ask(config: &Config, request: &Request) -> Result<Response, String> {
    match control::ask(&config.control_socket, request)
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Error(e) => Err(e),
        r => Ok(r),
    }
}

pub async fn print_leases(config: &Config) -> Result<(), String> {
    match ask(config, &Request::Leases).await? {
        Response::Leases(leases) => {
            println!("{:<40} {:<32} STATE", "IDENTITY", "ADDRESS");
            for l in leases {
                let state = match (l.active, l.reserved) {
                    (_, true) if l.active => "active, reserved",
                    (true, _) => "active",
                    (false, true) => "reserved",
                    (false, false) => "released",
                };
                println!("{:<40} {:<32} {state}", l.identity, l.address);
            }
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

pub async fn print_status(config: &Config) -> Result<(), String> {
    match ask(config, &Request::Status).await? {
        Response::Status(rows) => {
            println!(
                "{:<32} {:<22} {:<28} {:>12} {:>12} {:>8} {:>4} {:>8}",
                "IDENTITY", "OUTER", "INNER", "BYTES IN", "BYTES OUT", "AGE", "SAS", "SPOOFED"
            );
            for r in rows {
                let inner = r
                    .address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<32} {:<22} {:<28} {:>12} {:>12} {:>7}s {:>4} {:>8}",
                    r.identity,
                    r.remote,
                    inner,
                    r.traffic.bytes_in,
                    r.traffic.bytes_out,
                    r.age_secs,
                    r.child_sas.len(),
                    r.traffic.dropped_spoofed
                );
            }
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `site ...` verbs: ask the daemon and print the answer.
pub async fn site_verb(
    config: &Config,
    request: Request,
    out: Option<&std::path::Path>,
) -> Result<(), String> {
    match ask(config, &request).await? {
        Response::Site(site) => {
            let verb = match request {
                Request::SiteAdd { .. } => "added",
                Request::SiteRemove(_) => "removed (its prefix is held back before reuse)",
                _ => "",
            };
            if !verb.is_empty() {
                println!("site {} {verb}", site.name);
            }
            println!("prefix:        {}", site.prefix_text());
            println!("transfer IPv6: {}", site.transfer6);
            println!("transfer IPv4: {}", site.transfer4);
            println!("public key:    {}", site.public_key);
            println!(
                "key pair:      {}",
                if site.private_key.is_some() {
                    "generated by sixgate (in `site config`)"
                } else {
                    "the site's own"
                }
            );
            Ok(())
        }
        Response::Sites(sites) => {
            println!(
                "{:<20} {:<24} {:<24} {:>12} {:>12} {:>10} STATE",
                "NAME", "PREFIX", "TRANSFER", "RX", "TX", "HANDSHAKE"
            );
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for s in sites {
                let hs = if s.last_handshake == 0 {
                    "never".to_string()
                } else {
                    format!("{}s ago", now.saturating_sub(s.last_handshake))
                };
                println!(
                    "{:<20} {:<24} {:<24} {:>12} {:>12} {:>10} {}",
                    s.site.name,
                    s.site.prefix_text(),
                    s.site.transfer6,
                    s.rx_bytes,
                    s.tx_bytes,
                    hs,
                    if s.up { "up" } else { "down" }
                );
            }
            Ok(())
        }
        Response::Files(files) => {
            let dir = out.ok_or("--out DIR is needed")?;
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            // The WireGuard file holds keys; the others say how the DMZ is
            // guarded. All are the operator's alone.
            for (name, text) in files {
                let path = dir.join(&name);
                secrets::write_private_file(dir, &name, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}
