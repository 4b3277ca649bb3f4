//! The running broker: the IKE driver, the userspace data plane, the lease
//! store and the control socket, tied together by the endpoint's events.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sixgate_dataplane::plane::{self, DataPlane};
use sixgate_dataplane::udp::{self, Command, IkeSockets};
use sixgate_dataplane::userspace::SaCounters;
use sixgate_dataplane::xfrm::Owner;
use sixgate_dataplane::{control, netconf, pki, secrets};
use sixgate_proto::endpoint::{self, Event, SaId};
use sixgate_proto::wire::TrafficSelector;
use tokio::signal::unix::{signal, SignalKind};

use sixgate_broker::config::{Config, DEFAULT_DEVICE};
use sixgate_broker::leases::{Lease, LeaseStore, Pool};
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
    Status(Vec<StatusRow>),
    Site(Site),
    Sites(Vec<SiteState>),
    Files(Vec<(String, String)>),
    Error(String),
}

/// One connected client, as `status` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRow {
    identity: String,
    outer: String,
    inner: Option<Ipv6Addr>,
    bytes_in: u64,
    bytes_out: u64,
    packets_in: u64,
    packets_out: u64,
    /// Packets from the client that decrypted but were not its own: not
    /// IPv6, or from an address other than its lease.
    dropped_spoofed: u64,
    age_secs: u64,
    child_sas: usize,
}

struct Client {
    identity: String,
    remote: SocketAddr,
    since: SystemTime,
    /// Inbound SPIs of its Child SAs and the addresses they route.
    children: Vec<(u32, Vec<Ipv6Addr>)>,
    /// The traffic of its Child SAs that are gone (rekeyed).
    retired: SaCounters,
}

fn hosts(ts: &[TrafficSelector]) -> Vec<Ipv6Addr> {
    ts.iter()
        .filter_map(|t| match t {
            TrafficSelector::Ipv6(r) if r.start == r.end => Some(r.start),
            _ => None,
        })
        .collect()
}

pub async fn run(config: Config) -> Result<(), String> {
    secrets::restrict_umask();
    let f = &config.file;
    let chain = pki::load_chain(&f.ike.certificate)?;
    let identity = pki::own_identity(&f.ike.identity, &chain)
        .map_err(|e| format!("{}: key `ike.identity`: {e}", config.path.display()))?;
    let key = pki::load_key(&f.ike.private_key)?;
    pki::check_key_matches(&chain, &key)
        .map_err(|e| format!("{}: {e}", f.ike.private_key.display()))?;
    let anchors = pki::load_anchors(&f.ike.ca)?;
    let reservations = f
        .pool
        .reservations
        .iter()
        .map(|(id, addr)| pki::parse_identity(id).map(|i| (i, *addr)))
        .collect::<Result<Vec<_>, _>>()?;
    // Leases, the WireGuard private key and the site keys live here.
    secrets::private_dir(&f.storage.path)
        .map_err(|e| format!("{}: {e}", f.storage.path.display()))?;
    let store = Arc::new(
        LeaseStore::open(
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
    let (dp, mut kernel_events) = DataPlane::start(&plane, nat_t)?;
    if let Err(e) = netconf::enable_ipv6_forwarding() {
        eprintln!("sixgate-broker: warning: enabling IPv6 forwarding: {e}");
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
    let pool = store.clone();
    let mut driver = udp::spawn(Arc::new(ike), sockets, dp.esp_handler(), move |ep| {
        ep.set_address_pool(Box::new(Pool(pool)))
    });
    let mut sites = match &f.sites {
        Some(cfg) => {
            let (prefix, len) = sixgate_broker::config::parse_net6(&cfg.prefix)?;
            let net4 = sixgate_broker::config::parse_net4(&cfg.transfer4)?;
            let store = SiteStore::open(&f.storage.path, (prefix, len), net4, cfg.hold_down)
                .map_err(|e| e.to_string())?;
            Some(SiteNet::start(cfg, store)?)
        }
        None => None,
    };
    let mut liveness = tokio::time::interval(Duration::from_secs(1));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    eprintln!(
        "sixgate-broker: listening on {:?}, pool {}, {}",
        f.ike.listen,
        f.pool.prefix,
        dp.describe()
    );
    // Last: a control socket that answers means the daemon is running.
    let listener = control::bind(&config.control_socket)
        .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;

    let mut clients: HashMap<SaId, Client> = HashMap::new();
    loop {
        tokio::select! {
            event = driver.events.recv() => {
                let Some(event) = event else { break };
                handle_event(event, &dp, &mut clients);
            }
            Some(event) = plane::next_kernel_event(&mut kernel_events) => {
                if let Some(command) = dp.on_kernel_event(event) {
                    let _ = driver.commands.send(command);
                }
            }
            conn = listener.accept() => {
                let Ok((mut stream, _)) = conn else { continue };
                let response = match control::read_request::<Request>(&mut stream).await {
                    Ok(Request::Leases) => store.list().map(Response::Leases).unwrap_or_else(|e| Response::Error(e.to_string())),
                    Ok(Request::Status) => Response::Status(status_rows(&clients, &dp)),
                    Ok(request) => site_request(sites.as_mut(), request),
                    Err(e) => Response::Error(e.to_string()),
                };
                let _ = control::write_response(&mut stream, &response).await;
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
    for sa in clients.keys() {
        let _ = driver.commands.send(Command::DeleteIkeSa(*sa));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !clients.is_empty() {
        match tokio::time::timeout_at(deadline, driver.events.recv()).await {
            Ok(Some(event)) => handle_event(event, &dp, &mut clients),
            _ => break,
        }
    }
    let _ = driver.commands.send(Command::Shutdown);
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

fn handle_event(event: Event, dp: &DataPlane, clients: &mut HashMap<SaId, Client>) {
    match event {
        Event::IkeSaUp {
            sa,
            peer_identity,
            remote,
            ..
        } => {
            let identity = peer_identity.to_string();
            eprintln!("sixgate-broker: {identity} connected from {remote}");
            clients.insert(
                sa,
                Client {
                    identity,
                    remote,
                    since: SystemTime::now(),
                    children: Vec::new(),
                    retired: SaCounters::default(),
                },
            );
        }
        Event::ChildSaUp(child) | Event::ChildSaRekeyed { new: child, .. } => {
            eprintln!(
                "sixgate-broker: Child SA {:08x}/{:08x} installed",
                child.inbound_spi, child.outbound_spi
            );
            if let Err(e) = dp.install(&child) {
                eprintln!(
                    "sixgate-broker: installing SA {:08x}: {e}",
                    child.inbound_spi
                );
                return;
            }
            let addrs = hosts(&child.remote_ts);
            for a in &addrs {
                if let Err(e) = dp.add_host_route(*a) {
                    eprintln!("sixgate-broker: route to {a}: {e}");
                }
            }
            if let Some(c) = clients.get_mut(&child.ike_sa) {
                c.remote = child.remote;
                c.children.push((child.inbound_spi, addrs));
            }
        }
        Event::ChildSaDown {
            ike_sa,
            inbound_spi,
            ..
        } => {
            let last = dp.retire(inbound_spi);
            if let Some(c) = clients.get_mut(&ike_sa) {
                c.retired.absorb(last);
                let gone: Vec<Ipv6Addr> = c
                    .children
                    .iter()
                    .filter(|(spi, _)| *spi == inbound_spi)
                    .flat_map(|(_, a)| a.clone())
                    .collect();
                c.children.retain(|(spi, _)| *spi != inbound_spi);
                for a in gone {
                    // A rekeyed SA's successor routes the same address.
                    if !routed(clients, a) {
                        let _ = dp.delete_host_route(a);
                    }
                }
            }
        }
        Event::IkeSaDown { sa, reason } => {
            if let Some(c) = clients.remove(&sa) {
                eprintln!("sixgate-broker: {} disconnected: {reason:?}", c.identity);
                for (spi, addrs) in c.children {
                    dp.remove(spi);
                    for a in addrs {
                        // The same client, reconnected, may already have
                        // its address back on a new IKE SA.
                        if !routed(clients, a) {
                            let _ = dp.delete_host_route(a);
                        }
                    }
                }
            }
        }
        Event::ChildSaRefused { notify, .. } => {
            eprintln!("sixgate-broker: Child SA refused: {notify:?}")
        }
        Event::IkeSaRekeyed { .. } | Event::AddressAssigned { .. } => {}
    }
}

/// Whether a Child SA of any client still routes `addr`.
fn routed(clients: &HashMap<SaId, Client>, addr: Ipv6Addr) -> bool {
    clients
        .values()
        .any(|c| c.children.iter().any(|(_, addrs)| addrs.contains(&addr)))
}

fn status_rows(clients: &HashMap<SaId, Client>, dp: &DataPlane) -> Vec<StatusRow> {
    let mut rows: Vec<StatusRow> = clients
        .values()
        .map(|c| {
            let total = dp.totals(c.retired, c.children.iter().map(|(spi, _)| *spi));
            StatusRow {
                identity: c.identity.clone(),
                outer: c.remote.to_string(),
                inner: c
                    .children
                    .iter()
                    .flat_map(|(_, a)| a.first().copied())
                    .next(),
                bytes_in: total.inbound.bytes,
                bytes_out: total.outbound.bytes,
                packets_in: total.inbound.packets,
                packets_out: total.outbound.packets,
                dropped_spoofed: total.inbound.spoofed,
                age_secs: c.since.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                child_sas: c.children.len(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.identity.cmp(&b.identity));
    rows
}

pub async fn print_leases(config: &Config) -> Result<(), String> {
    match control::ask(&config.control_socket, &Request::Leases)
        .await
        .map_err(|e| e.to_string())?
    {
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
        Response::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

pub async fn print_status(config: &Config) -> Result<(), String> {
    match control::ask(&config.control_socket, &Request::Status)
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Status(rows) => {
            println!(
                "{:<32} {:<22} {:<28} {:>12} {:>12} {:>8} {:>4} {:>8}",
                "IDENTITY", "OUTER", "INNER", "BYTES IN", "BYTES OUT", "AGE", "SAS", "SPOOFED"
            );
            for r in rows {
                let inner = r.inner.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<32} {:<22} {:<28} {:>12} {:>12} {:>7}s {:>4} {:>8}",
                    r.identity,
                    r.outer,
                    inner,
                    r.bytes_in,
                    r.bytes_out,
                    r.age_secs,
                    r.child_sas,
                    r.dropped_spoofed
                );
            }
            Ok(())
        }
        Response::Error(e) => Err(e),
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
