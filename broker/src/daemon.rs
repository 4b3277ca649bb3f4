//! The running broker: its configuration, stores and data plane handed to
//! the runtime, the DMZ sites beside it, and the control socket's
//! requests answered from both.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sixgate_dataplane::nft::{self, RoadWarriorRules, Service, ROAD_WARRIORS};
use sixgate_dataplane::plane::DataPlane;
use sixgate_dataplane::udp::IkeSockets;
use sixgate_dataplane::xfrm::Owner;
use sixgate_dataplane::{netconf, secrets, wireguard};
use sixgate_proto::cert::Revocations;
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_runtime::control::{self, Incoming};
use sixgate_runtime::engine::{self, Command, Connection, Parts, Role, RuntimeStats};
use sixgate_runtime::pki::Credentials;
use sixgate_runtime::plane;
use sixgate_runtime::privileges::{self, RunAs};
use sixgate_runtime::{clock, notify};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use sixgate_broker::check;
use sixgate_broker::config::{Config, DEFAULT_DEVICE};
use sixgate_broker::enroll::CaStore;
use sixgate_broker::leases::{Lease, Leases, SledLeaseStore};
use sixgate_broker::metrics;
use sixgate_broker::revocations::{self, RevocationList, Revoked, RevokedEntry};
use sixgate_broker::siteconfig::RouterOptions;
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
        router: RouterOptions,
    },
    SiteRemove(String),
    Revoke(Revoked),
    Unrevoke(Revoked),
    Revoked,
    Stats,
    /// End an identity's IKE SAs.
    Disconnect(String),
    /// Read the configuration again.
    Reload,
}

/// The broker's counters, for `stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BrokerStats {
    /// The runtime's and the engine's.
    pub runtime: RuntimeStats,
    /// Packets the road warriors' firewall table dropped (not IPv6 from
    /// the pool; a service or a client they may not reach).
    pub firewall_dropped: Option<u64>,
    /// Decrypted packets the kernel's policies refused (kernel plane).
    pub kernel_policy_dropped: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Leases(Vec<Lease>),
    Status(Vec<Connection>),
    Site(Site),
    Sites(Vec<SiteState>),
    Files(Vec<(String, String)>),
    Revoked(Vec<RevokedEntry>),
    Stats(BrokerStats),
    Done(String),
    Error(String),
}

/// What the broker does as root, before any thread exists: read its
/// credentials, make its state directory private (and its user's), turn
/// on forwarding, and give up everything but CAP_NET_ADMIN and
/// CAP_NET_BIND_SERVICE.
pub fn prepare(config: &Config) -> Result<Credentials, String> {
    secrets::restrict_umask();
    let f = &config.file;
    // The same findings as `check` (but the ports, which binding finds).
    let (findings, credentials) = check::findings(config, check::Ports::Skip, clock::unix_now());
    findings.conclude(&config.path)?;
    let credentials = credentials.ok_or("the credentials did not load")?;
    // Leases, the WireGuard private key and the site keys live here.
    secrets::private_dir(&f.storage.path)
        .map_err(|e| format!("{}: {e}", f.storage.path.display()))?;
    // Written through /proc/sys, which only root may: now or never.
    if let Err(e) = netconf::enable_ipv6_forwarding() {
        tracing::warn!("enabling IPv6 forwarding: {e}");
    }
    if let Some(link) = &f.pool.proxy_ndp {
        netconf::enable_proxy_ndp(&link.0)
            .map_err(|e| format!("pool.proxy_ndp: turning on proxy_ndp on {}: {e}", link.0))?;
    }
    if f.sites.is_some() {
        netconf::enable_ipv4_forwarding()
            .map_err(|e| format!("enabling IPv4 forwarding for the sites' NAT: {e}"))?;
    }
    let run_as = f.process.user.as_deref().map(RunAs::lookup).transpose()?;
    if let Some(user) = &run_as {
        user.own_tree(&f.storage.path, &[&CaStore::new(config).dir()])?;
        if f.sites.is_some() {
            // wireguard-go, run as the same user, puts its socket there.
            user.share_dir(std::path::Path::new(wireguard::SOCKET_DIR))?;
        }
    }
    privileges::drop_privileges(run_as.as_ref(), &privileges::KEPT)?;
    Ok(credentials)
}

/// The engine's configuration: the credentials, and what the broker's
/// configuration says of proposals, lifetimes, DNS and limits.
fn engine_config(
    config: &Config,
    credentials: Credentials,
    dp: &DataPlane,
) -> sixgate_proto::endpoint::Config {
    let f = &config.file;
    let mut ike = credentials.endpoint_config();
    ike.dns = f.pool.dns.clone();
    ike.ike_policy = config.ike_policy.clone();
    ike.esp_policy = config.esp_policy.clone();
    ike.dpd_interval = Duration::from_secs(f.ike.dpd_interval);
    ike.mobike = f.ike.mobike;
    ike.fragment_size = f.ike.fragment_size;
    ike.child_lifetime = Duration::from_secs(f.ike.child_lifetime);
    ike.ike_lifetime = Duration::from_secs(f.ike.ike_lifetime);
    ike.rekey_jitter = ike.child_lifetime.min(ike.ike_lifetime) / 10;
    ike.force_udp_encapsulation =
        dp.forces_udp_encapsulation() || f.dataplane.force_udp_encapsulation;
    let limits = &f.limits;
    ike.ike_sas_per_identity = limits.ike_sas_per_identity;
    ike.child_sas_per_ike_sa = limits.child_sas_per_ike_sa;
    ike.traffic_selectors_per_child_sa = limits.traffic_selectors_per_child_sa;
    ike.half_open_share = limits.half_open_per_source;
    ike.max_half_open = limits.half_open;
    ike.rekey_grace = Duration::from_secs(limits.rekey_grace);
    ike.unique = limits.unique;
    ike
}

fn reservations_of(config: &Config) -> Vec<(CanonicalIdentity, Ipv6Addr)> {
    config
        .file
        .pool
        .reservations
        .iter()
        .map(|(id, addr)| (id.0.clone(), *addr))
        .collect()
}

/// The road warriors' firewall for a configuration.
fn firewall(config: &Config, dp: &DataPlane) -> Result<(), String> {
    let f = &config.file;
    let services: Vec<Service> = f.pool.broker_services.iter().map(|s| s.0).collect();
    let ingress = dp.ingress();
    let rules = RoadWarriorRules {
        ingress: &ingress,
        pool: &f.pool.prefix.to_string(),
        services: &services,
        client_to_client: f.pool.client_to_client,
    };
    ROAD_WARRIORS
        .replace(&rules.render())
        .map_err(|e| format!("the road warriors' firewall table {}: {e}", ROAD_WARRIORS.0))
}

/// What the running broker holds that a reload replaces.
struct Reloadable<'a> {
    dp: &'a DataPlane,
    runtime: &'a engine::RuntimeHandle,
    store: &'a SledLeaseStore,
    revoked: &'a RevocationList,
    crls: &'a mut Revocations,
    sites: Option<&'a mut SiteNet>,
}

/// `reload` and SIGHUP: the configuration file read again and checked as
/// a start checks it; the CA and own credentials, CRLs, proposals,
/// lifetimes, limits, DNS, static reservations, the firewall's services and
/// what [`SiteNet::reconfigure`] takes replaced without touching an SA or
/// a site's tunnel. What only a start can change is named.
/// A configuration with an error changes nothing.
fn reload(running: &Config, held: Reloadable<'_>) -> Result<String, String> {
    notify::reloading();
    let result = reload_now(running, held);
    notify::notify("READY=1");
    result
}

fn reload_now(running: &Config, held: Reloadable<'_>) -> Result<String, String> {
    let fresh = Config::load(&running.path).map_err(|e| e.to_string())?;
    let now = clock::unix_now();
    let (findings, credentials) = check::findings(&fresh, check::Ports::Skip, now);
    findings.conclude(&fresh.path)?;
    let credentials = credentials.ok_or("the credentials did not load")?;
    let (crls, warnings) = revocations::load_crls(&fresh.file.ike.crl, &credentials.anchors, now)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let (old, new) = (&running.file, &fresh.file);
    let mut at_start: Vec<&str> = [
        ("ike.listen", old.ike.listen != new.ike.listen),
        ("pool.prefix", old.pool.prefix != new.pool.prefix),
        ("storage", old.storage.path != new.storage.path),
        ("control", running.control_socket != fresh.control_socket),
        (
            "dataplane",
            format!("{:?}", old.dataplane) != format!("{:?}", new.dataplane),
        ),
        ("sites", old.sites.is_some() != new.sites.is_some()),
        ("process", old.process.user != new.process.user),
        ("pool.proxy_ndp", old.pool.proxy_ndp != new.pool.proxy_ndp),
        ("metrics", old.metrics != new.metrics),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    let revocations = held.revoked.revocations(&crls)?;
    firewall(&fresh, held.dp)?;
    if let (Some(net), Some(sites)) = (held.sites, &new.sites) {
        at_start.extend(net.reconfigure(sites)?);
    }
    held.store.set_reservations(&reservations_of(&fresh));
    let engine = engine_config(&fresh, credentials, held.dp);
    let commands = &held.runtime.commands;
    let _ = commands.send(Command::SetConfig(engine::NewConfig(Arc::new(engine))));
    let _ = commands.send(Command::SetRevocations(revocations));
    *held.crls = crls;
    let mut text = format!(
        "reloaded {}: credentials, CRLs, proposals, limits{} and {} static reservations",
        fresh.path.display(),
        if new.sites.is_some() { ", sites" } else { "" },
        new.pool.reservations.len()
    );
    if !at_start.is_empty() {
        text.push_str(&format!(
            "; changed but kept until the next start: {}",
            at_start.join(", ")
        ));
    }
    Ok(text)
}

pub async fn run(config: Config, credentials: Credentials) -> Result<(), String> {
    let f = &config.file;
    let (mut crls, warnings) =
        revocations::load_crls(&f.ike.crl, &credentials.anchors, clock::unix_now())?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let reservations = reservations_of(&config);
    let store = Arc::new(
        SledLeaseStore::open(
            &f.storage.path,
            config.pool_base,
            config.pool_size,
            &reservations,
        )
        .map_err(|e| format!("lease store in {}: {e}", f.storage.path.display()))?,
    );
    let revoked = RevocationList::open(store.database())
        .map_err(|e| format!("revocation list in {}: {e}", f.storage.path.display()))?;

    let sockets = IkeSockets::bind(&f.ike.listen, 500, 4500)
        .await
        .map_err(|e| format!("binding IKE ports: {e}"))?;
    let nat_t = sockets
        .socket(SocketAddr::new(f.ike.listen[0], 4500))
        .ok_or("no NAT-T socket")?;
    let child_lifetime = Duration::from_secs(f.ike.child_lifetime);
    let mut plane = f.dataplane.plane_config(
        Owner::Broker,
        DEFAULT_DEVICE,
        f.ike.listen[0],
        child_lifetime,
    );
    plane.proxy_ndp = f.pool.proxy_ndp.as_ref().map(|l| l.0.clone());
    let (dp, kernel_events) = DataPlane::start(&plane, nat_t)?;
    let dp = Arc::new(dp);
    if let Err(e) = firewall(&config, &dp) {
        dp.stop();
        return Err(e);
    }

    let ike = engine_config(&config, credentials, &dp);
    let kernel_events = plane::kernel_events(&dp, kernel_events);
    let mut runtime = engine::spawn(Parts {
        ike: Arc::new(ike),
        role: Role::Responder,
        sockets,
        plane: dp.clone(),
        esp: dp.esp_handler(),
        kernel_events,
        peer_moves: dp.peer_moves(),
        leases: Some(Box::new(Leases(store.clone()))),
        revocations: revoked.revocations(&crls)?,
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
            Some(SiteNet::start(cfg, store, f.pool.prefix.to_string())?)
        }
        None => None,
    };
    let mut liveness = tokio::time::interval(Duration::from_secs(1));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    tracing::info!(
        "listening on {:?}, pool {}, {}",
        f.ike.listen,
        f.pool.prefix,
        dp.describe()
    );
    // The sender stays here too, so that the scrape branch below never
    // sees a closed channel.
    let (metrics_requests, mut scrapes) = tokio::sync::mpsc::channel(16);
    if let Some(m) = &f.metrics {
        let listener = tokio::net::TcpListener::bind(m.listen).await.map_err(|e| {
            format!(
                "{}: metrics.listen {}: {e}",
                config.path.display(),
                m.listen
            )
        })?;
        tokio::spawn(metrics::serve(listener, metrics_requests.clone()));
        tracing::info!("metrics on http://{}/metrics", m.listen);
    }
    // Last: a control socket that answers means the daemon is running.
    let listener = control::bind(&config.control_socket)
        .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;
    let mut requests = control::serve::<Request, Response>(listener, Response::Error);
    notify::notify(&format!(
        "READY=1\nSTATUS=listening on {:?}, pool {}",
        f.ike.listen, f.pool.prefix
    ));

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
                    Request::Revoke(entry) => revocation_request(&revoked, &crls, &runtime, entry, true),
                    Request::Unrevoke(entry) => revocation_request(&revoked, &crls, &runtime, entry, false),
                    Request::Revoked => revoked
                        .list()
                        .map_or_else(Response::Error, Response::Revoked),
                    Request::Disconnect(identity) => disconnect(&runtime, &identity).await,
                    Request::Reload => {
                        let held = Reloadable { dp: &dp, runtime: &runtime, store: &store, revoked: &revoked, crls: &mut crls, sites: sites.as_mut() };
                        match reload(&config, held) {
                            Ok(text) => {
                                tracing::info!("reload: {text}");
                                Response::Done(text)
                            }
                            Err(e) => {
                                tracing::error!("reload: {e}; nothing changed");
                                Response::Error(format!("{e}; nothing changed"))
                            }
                        }
                    }
                    Request::Stats => {
                        let (tx, rx) = oneshot::channel();
                        let _ = runtime.commands.send(Command::Stats(tx));
                        match rx.await {
                            Ok(runtime) => Response::Stats(BrokerStats {
                                runtime,
                                firewall_dropped: nft::dropped_packets(ROAD_WARRIORS).ok(),
                                kernel_policy_dropped: dp.kernel_policy_drops(),
                            }),
                            Err(_) => Response::Error("the runtime stopped".into()),
                        }
                    }
                    request => site_request(sites.as_mut(), request),
                };
                let _ = reply.send(response);
            }
            _ = hup.recv() => {
                let held = Reloadable { dp: &dp, runtime: &runtime, store: &store, revoked: &revoked, crls: &mut crls, sites: sites.as_mut() };
                match reload(&config, held) {
                    Ok(text) => tracing::info!("SIGHUP: {text}"),
                    Err(e) => tracing::error!("SIGHUP: {e}; nothing changed"),
                }
            }
            Some(reply) = scrapes.recv() => {
                let snapshot = metrics_snapshot(&config, &runtime, &store, sites.as_mut()).await;
                let _ = reply.send(metrics::render(&snapshot));
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
    notify::notify("STOPPING=1");
    runtime.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&config.control_socket);
    dp.stop();
    if let Err(e) = ROAD_WARRIORS.remove() {
        tracing::warn!("removing the firewall table {}: {e}", ROAD_WARRIORS.0);
    }
    Ok(())
}

/// `client revoke` / `client unrevoke`: the list changes durably, then the
/// engine gets the new revocations (ending the SAs they revoke).
fn revocation_request(
    list: &RevocationList,
    crls: &sixgate_proto::cert::Revocations,
    runtime: &engine::RuntimeHandle,
    entry: Revoked,
    revoke: bool,
) -> Response {
    let changed = if revoke {
        list.revoke(&entry)
    } else {
        list.unrevoke(&entry)
    };
    let changed = match changed {
        Ok(c) => c,
        Err(e) => return Response::Error(e),
    };
    match list.revocations(crls) {
        Ok(all) => {
            let _ = runtime.commands.send(Command::SetRevocations(all));
        }
        Err(e) => return Response::Error(e),
    }
    let text = match (revoke, changed) {
        (true, true) => format!("{entry} revoked"),
        (true, false) => format!("{entry} was revoked already"),
        (false, true) => format!("{entry} no longer revoked"),
        (false, false) => format!("{entry} was not revoked"),
    };
    tracing::info!("{text}");
    Response::Done(text)
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
        Request::SiteConfig { name, router } => sites.files(&name, &router).map(Response::Files),
        Request::SiteRemove(name) => sites.remove(&name).map(Response::Site),
        _ => Err("not a site request".into()),
    };
    result.unwrap_or_else(Response::Error)
}

/// What a metrics scrape shows, gathered from the runtime, the stores and
/// the sites.
async fn metrics_snapshot(
    config: &Config,
    runtime: &engine::RuntimeHandle,
    store: &SledLeaseStore,
    sites: Option<&mut SiteNet>,
) -> metrics::Snapshot {
    let (stats_tx, stats_rx) = oneshot::channel();
    let (conns_tx, conns_rx) = oneshot::channel();
    let _ = runtime.commands.send(Command::Stats(stats_tx));
    let _ = runtime.commands.send(Command::Connections(conns_tx));
    metrics::Snapshot {
        runtime: stats_rx.await.unwrap_or_default(),
        connections: conns_rx.await.unwrap_or_default(),
        leases: store.list().unwrap_or_default(),
        pool_size: config.pool_size,
        sites: sites.and_then(|s| s.list().ok()).unwrap_or_default(),
        firewall_dropped: nft::dropped_packets(ROAD_WARRIORS).ok(),
    }
}

/// `client disconnect`: every IKE SA of the identity gets a Delete.
async fn disconnect(runtime: &engine::RuntimeHandle, identity: &str) -> Response {
    let canonical = match sixgate_runtime::pki::parse_identity(identity) {
        Ok(c) => c.to_string(),
        Err(e) => return Response::Error(format!("{identity}: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    let _ = runtime.commands.send(Command::Connections(tx));
    let Ok(connections) = rx.await else {
        return Response::Error("the runtime stopped".into());
    };
    let mut ended = 0;
    for c in connections.iter().filter(|c| c.identity == canonical) {
        let _ = runtime
            .commands
            .send(Command::DeleteIkeSa(sixgate_proto::endpoint::SaId(c.sa)));
        ended += 1;
    }
    if ended == 0 {
        Response::Error(format!("{canonical} is not connected"))
    } else {
        tracing::info!("{canonical}: disconnected by the operator ({ended} IKE SAs)");
        Response::Done(format!("{canonical}: {ended} IKE SAs deleted"))
    }
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

pub async fn print_leases(config: &Config, json: bool) -> Result<(), String> {
    match ask(config, &Request::Leases).await? {
        Response::Leases(leases) if json => sixgate_runtime::process::print_json(&leases),
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

pub async fn print_status(config: &Config, json: bool) -> Result<(), String> {
    match ask(config, &Request::Status).await? {
        Response::Status(rows) if json => sixgate_runtime::process::print_json(&rows),
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
                for line in r.sa_lines() {
                    println!("{line}");
                }
            }
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `stats`: the broker's counters.
pub async fn print_stats(config: &Config) -> Result<(), String> {
    match ask(config, &Request::Stats).await? {
        Response::Stats(s) => {
            let r = &s.runtime;
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
            for (name, value) in [
                (
                    "IKE datagrams dropped, queue full",
                    r.ike_queue_full.to_string(),
                ),
                ("ESP without a data plane", r.esp_unclaimed.to_string()),
                (
                    "Child SAs that failed to install",
                    r.install_failures.to_string(),
                ),
                ("leases made durable", r.leases_assigned.to_string()),
                ("lease store flushes", r.lease_flushes.to_string()),
                (
                    "IKE retransmissions sent",
                    r.ike.retransmits_sent.to_string(),
                ),
                ("half-open SAs dropped", r.ike.half_open_dropped.to_string()),
                ("IKE_SA_INITs refused", r.ike.inits_refused.to_string()),
                ("cookies demanded", r.ike.cookies_sent.to_string()),
                ("datagrams for unknown SPIs", r.ike.unknown_spi.to_string()),
                ("firewall drops", opt(s.firewall_dropped)),
                ("kernel policy drops", opt(s.kernel_policy_dropped)),
            ] {
                println!("{name:<40} {value}");
            }
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `client revoke|unrevoke|revoked`: ask the daemon and print the answer.
pub async fn client_verb(config: &Config, request: Request) -> Result<(), String> {
    match ask(config, &request).await? {
        Response::Done(text) => {
            println!("{text}");
            Ok(())
        }
        Response::Revoked(entries) => {
            println!("{:<10} {:<48} SINCE", "KIND", "REVOKED");
            for e in entries {
                let (kind, what) = match e.revoked {
                    Revoked::Identity(i) => ("identity", i),
                    Revoked::Serial(s) => ("serial", s),
                };
                println!("{kind:<10} {what:<48} {}", clock::utc_text(e.since as i64));
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
    json: bool,
) -> Result<(), String> {
    match ask(config, &request).await? {
        Response::Sites(sites) if json => {
            // The keys stay out of listings (`site config` writes them).
            let mut value = serde_json::to_value(&sites).map_err(|e| e.to_string())?;
            for site in value.as_array_mut().into_iter().flatten() {
                if let Some(s) = site["site"].as_object_mut() {
                    s.remove("private_key");
                    s.remove("preshared_key");
                }
            }
            sixgate_runtime::process::print_json(&value)
        }
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

/// One enrolled or connected client, as `client list` shows it.
#[derive(Debug, Serialize)]
pub struct ClientRow {
    /// The identity.
    pub identity: String,
    /// The serial number of the certificate the sixgate CA issued it, if
    /// it did.
    pub serial: Option<String>,
    /// That certificate's expiry, Unix seconds.
    pub certificate_expires: Option<i64>,
    /// Its address lease, if it has one.
    pub lease: Option<std::net::Ipv6Addr>,
    /// Whether the lease is in use.
    pub connected: bool,
    /// Where it connects from, while connected.
    pub remote: Vec<SocketAddr>,
}

/// `client list`: the CA's records joined with the broker's leases and
/// connections; identities from another CA appear once they have a lease.
pub async fn print_clients(config: &Config, json: bool) -> Result<(), String> {
    let issued = CaStore::new(config).issued()?;
    let Response::Leases(leases) = ask(config, &Request::Leases).await? else {
        return Err("unexpected answer to Leases".into());
    };
    let Response::Status(connections) = ask(config, &Request::Status).await? else {
        return Err("unexpected answer to Status".into());
    };
    let mut rows: std::collections::BTreeMap<String, ClientRow> = Default::default();
    for i in issued {
        let r = rows
            .entry(i.identity.clone())
            .or_insert_with(|| empty_row(&i.identity));
        r.serial = Some(i.serial);
        r.certificate_expires = Some(i.not_after);
    }
    for l in leases {
        let r = rows
            .entry(l.identity.clone())
            .or_insert_with(|| empty_row(&l.identity));
        r.lease = Some(l.address);
    }
    for c in connections {
        let r = rows
            .entry(c.identity.clone())
            .or_insert_with(|| empty_row(&c.identity));
        r.connected = true;
        r.remote.push(c.remote);
    }
    let rows: Vec<ClientRow> = rows.into_values().collect();
    if json {
        return sixgate_runtime::process::print_json(&rows);
    }
    println!(
        "{:<36} {:<24} {:<28} {:<10} FROM",
        "IDENTITY", "CERTIFICATE EXPIRES", "LEASE", "CONNECTED"
    );
    for r in rows {
        let expires = r
            .certificate_expires
            .map_or_else(|| "(not issued here)".to_string(), clock::utc_text);
        let lease = r.lease.map_or_else(|| "-".to_string(), |a| a.to_string());
        let from: Vec<String> = r.remote.iter().map(|a| a.to_string()).collect();
        println!(
            "{:<36} {:<24} {:<28} {:<10} {}",
            r.identity,
            expires,
            lease,
            if r.connected { "yes" } else { "no" },
            from.join(" ")
        );
    }
    Ok(())
}

fn empty_row(identity: &str) -> ClientRow {
    ClientRow {
        identity: identity.to_string(),
        serial: None,
        certificate_expires: None,
        lease: None,
        connected: false,
        remote: Vec::new(),
    }
}
