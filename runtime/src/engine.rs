//! The runtime: one task that owns the IKE [`Endpoint`] and turns what it
//! says into what the system must do, in the right order.
//!
//! The task takes IKE datagrams from the receive loops (through a bounded
//! queue: see [`sixgate_dataplane::udp`]), timers, kernel events,
//! commands from the daemon, and the answers of the lease writer
//! ([`crate::admission`]). After each input it drains the endpoint's
//! events first and acts on them, then sends its datagrams: a response
//! that announces a Child SA leaves only after the SA is installed. A
//! Child SA that fails to install is deleted with the peer (with its IKE
//! SA, if it was the only one) and counted, never left announced and
//! missing. The task also keeps the one table of connections that status
//! reads: identity, outer address, Child SAs with their algorithms and
//! SPIs, and traffic that outlives rekeys.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sixgate_dataplane::dns::Resolver;
use sixgate_dataplane::plane::KernelAction;
use sixgate_dataplane::udp::{Datagram, EspHandler, IkeSockets, ReceiveCounters};
use sixgate_dataplane::userspace::PeerMoved;
use sixgate_dataplane::userspace::SaCounters;
use sixgate_dataplane::xfrm::KernelEvent;
use sixgate_proto::cert::Revocations;
use sixgate_proto::endpoint::{
    self, ChildSa, ConnectRequest, DownReason, Endpoint, Event, SaId, Stats,
};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::{classify_udp4500, TrafficSelector, Udp4500};
use tokio::sync::{mpsc, oneshot};

use crate::admission::{Admission, AdmissionCounters, Admitted, LeaseStore};
use crate::plane::Plane;

/// Which side of the tunnels this runtime is.
pub enum Role {
    /// The broker: admits addresses and routes each client's into the
    /// tunnel.
    Responder,
    /// A client: installs the address it is given and, if asked, the DNS
    /// servers that come with it.
    Initiator {
        /// Where to put the DNS servers (and take them away).
        dns: Option<Resolver>,
    },
}

/// What the daemon asks of the runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Start an IKE SA as initiator; its id comes back.
    Connect(ConnectRequest, oneshot::Sender<SaId>),
    /// Delete an IKE SA (with a Delete to the peer).
    DeleteIkeSa(SaId),
    /// Rekey a Child SA, by IKE SA and inbound SPI.
    RekeyChildSa(SaId, u32),
    /// Rekey an IKE SA.
    RekeyIkeSa(SaId),
    /// Our address towards the peer of an IKE SA changed: move the SA
    /// there (MOBIKE). The answer says whether it follows; if not, the
    /// caller reconnects.
    Roam(SaId, IpAddr, oneshot::Sender<bool>),
    /// The connections, for status.
    Connections(oneshot::Sender<Vec<Connection>>),
    /// The counters.
    Stats(oneshot::Sender<RuntimeStats>),
    /// Replace what is revoked; the IKE SAs it now revokes end at once
    /// (with a Delete to each peer).
    SetRevocations(Revocations),
    /// Replace the engine's configuration (a reload); SAs stay up.
    SetConfig(NewConfig),
    /// Delete every IKE SA, wait up to `linger` for the peers to answer,
    /// remove everything installed, and stop.
    Shutdown {
        /// How long to wait for the deletes.
        linger: Duration,
        /// Answered once everything is removed.
        done: oneshot::Sender<()>,
    },
}

/// A configuration for [`Command::SetConfig`] (it holds a private key,
/// which `Debug` does not show).
pub struct NewConfig(pub Arc<endpoint::Config>);

impl std::fmt::Debug for NewConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewConfig(..)")
    }
}

/// One Child SA, as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildStatus {
    /// Our SPI (the peer sends with it), hex.
    pub inbound_spi: String,
    /// The peer's SPI, hex.
    pub outbound_spi: String,
    /// The encryption algorithm.
    pub encryption: String,
    /// The integrity algorithm, for non-AEAD ciphers.
    pub integrity: Option<String>,
    /// Extended sequence numbers.
    pub esn: bool,
    /// ESP in UDP.
    pub udp_encapsulation: bool,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<String>,
    /// Seconds until it is rekeyed (none while a rekey is under way).
    #[serde(default)]
    pub rekey_in_secs: Option<u64>,
}

/// Traffic of a connection: its Child SAs, live and rekeyed away.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Traffic {
    /// Inner octets received.
    pub bytes_in: u64,
    /// Inner octets sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Packets that decrypted but were not the peer's to send: not IPv6,
    /// or from outside its selectors (its lease, on the broker).
    pub dropped_spoofed: u64,
    /// Packets refused as replays.
    pub dropped_replayed: u64,
    /// Packets refused as forgeries.
    pub dropped_auth: u64,
}

impl From<SaCounters> for Traffic {
    fn from(c: SaCounters) -> Traffic {
        Traffic {
            bytes_in: c.inbound.bytes,
            bytes_out: c.outbound.bytes,
            packets_in: c.inbound.packets,
            packets_out: c.outbound.packets,
            dropped_spoofed: c.inbound.spoofed,
            dropped_replayed: c.inbound.replayed,
            dropped_auth: c.inbound.auth_failed,
        }
    }
}

/// One IKE SA and what hangs off it, as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    /// The runtime's number for it.
    pub sa: u64,
    /// The identity the peer proved.
    pub identity: String,
    /// The peer's outer address.
    pub remote: SocketAddr,
    /// Whether we initiated it.
    pub initiator: bool,
    /// Seconds since it came up.
    pub age_secs: u64,
    /// The IKE SA's algorithms.
    pub ike_suite: String,
    /// The inner address: the client's lease (broker), or ours (client).
    pub address: Option<Ipv6Addr>,
    /// DNS servers it gave us (client).
    pub dns: Vec<IpAddr>,
    /// Its Child SAs.
    pub child_sas: Vec<ChildStatus>,
    /// Its traffic.
    pub traffic: Traffic,
    /// Seconds until the IKE SA is rekeyed (none while a rekey is under
    /// way).
    #[serde(default)]
    pub ike_rekey_in_secs: Option<u64>,
    /// Seconds since the peer was last heard from (a liveness check goes
    /// out after `dpd_interval` of silence).
    #[serde(default)]
    pub last_heard_secs: u64,
}

impl Connection {
    /// The IKE SA and its Child SAs as `status` prints them under the
    /// connection's line, the way `swanctl --list-sas` shows them:
    /// algorithms, SPIs, selectors, when each rekeys, when the peer was
    /// last heard.
    pub fn sa_lines(&self) -> Vec<String> {
        let rekey =
            |t: Option<u64>| t.map_or_else(|| "rekeying".to_string(), |s| format!("rekey in {s}s"));
        let mut lines = vec![format!(
            "  IKE SA #{}: {}, {}, peer heard {}s ago",
            self.sa,
            self.ike_suite,
            rekey(self.ike_rekey_in_secs),
            self.last_heard_secs
        )];
        for c in &self.child_sas {
            lines.push(format!(
                "  Child SA {}_i {}_o: {}{}{}{}, {}, remote {}",
                c.inbound_spi,
                c.outbound_spi,
                c.encryption,
                c.integrity
                    .as_deref()
                    .map_or_else(String::new, |i| format!("/{i}")),
                if c.esn { "/ESN" } else { "" },
                if c.udp_encapsulation {
                    ", ESP in UDP"
                } else {
                    ""
                },
                rekey(c.rekey_in_secs),
                c.remote_ts.join(" ")
            ));
        }
        lines
    }
}

/// The runtime's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeStats {
    /// IKE datagrams dropped because the IKE task was behind.
    pub ike_queue_full: u64,
    /// ESP on a socket without a data plane.
    pub esp_unclaimed: u64,
    /// Child SAs the data plane refused (each deleted with the peer).
    pub install_failures: u64,
    /// Leases made durable.
    pub leases_assigned: u64,
    /// Group commits of the lease store.
    pub lease_flushes: u64,
    /// The engine's drop counters.
    pub ike: Stats,
    /// IKE SAs now, authenticated or not.
    #[serde(default)]
    pub ike_sas: usize,
    /// Half-open IKE SAs now.
    #[serde(default)]
    pub half_open: usize,
    /// IKE SAs that came up.
    #[serde(default)]
    pub setups: u64,
    /// IKE SAs rekeyed.
    #[serde(default)]
    pub ike_rekeys: u64,
    /// Child SAs rekeyed.
    #[serde(default)]
    pub child_rekeys: u64,
    /// IKE SAs (and attempts) that ended, by [`reason_label`].
    #[serde(default)]
    pub ends: BTreeMap<String, u64>,
}

/// What the runtime counts of the engine's events.
#[derive(Default)]
struct Tally {
    setups: u64,
    ike_rekeys: u64,
    child_rekeys: u64,
    ends: BTreeMap<String, u64>,
}

/// A short, bounded name for why an IKE SA ended, for metrics labels:
/// the refusals carry the notify's name (`refused_AUTHENTICATION_FAILED`).
pub fn reason_label(reason: &DownReason) -> String {
    let notify_name = |n: &sixgate_proto::wire::NotifyType| n.name().unwrap_or("other");
    match reason {
        DownReason::DeletedByPeer => "deleted_by_peer".into(),
        DownReason::DeletedLocally => "deleted_locally".into(),
        DownReason::PeerDead => "peer_dead".into(),
        DownReason::Replaced => "replaced".into(),
        DownReason::HalfOpenTimeout => "half_open_timeout".into(),
        DownReason::RefusedByPeer(n) => format!("refused_by_peer_{}", notify_name(n)),
        DownReason::RefusedPeer(n, _) => format!("refused_{}", notify_name(n)),
        DownReason::Revoked => "revoked".into(),
        DownReason::MoveFailed(_) => "move_failed".into(),
        _ => "other".into(),
    }
}

/// Everything the runtime runs with.
pub struct Parts {
    /// The engine's configuration.
    pub ike: Arc<endpoint::Config>,
    /// Which side.
    pub role: Role,
    /// The bound IKE sockets.
    pub sockets: IkeSockets,
    /// The data plane.
    pub plane: Arc<dyn Plane>,
    /// Its ESP receive path (the userspace plane), if it has one.
    pub esp: Option<Arc<dyn EspHandler>>,
    /// Its kernel events (the XFRM plane), if it has them, with the
    /// mapping from an event to the Child SA to rekey.
    pub kernel_events: Option<KernelEvents>,
    /// Authenticated ESP from new peer addresses (the userspace plane).
    pub peer_moves: Option<mpsc::UnboundedReceiver<PeerMoved>>,
    /// The lease store (responders).
    pub leases: Option<Box<dyn LeaseStore>>,
    /// What is revoked from the start (see [`Command::SetRevocations`]).
    pub revocations: Revocations,
}

/// Kernel events and the plane's reading of them.
pub struct KernelEvents {
    /// The events.
    pub events: mpsc::UnboundedReceiver<KernelEvent>,
    /// What an event asks of the engine.
    pub action_for: Box<dyn Fn(KernelEvent) -> Option<KernelAction> + Send>,
}

/// A running runtime.
pub struct RuntimeHandle {
    /// Commands in.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Every engine event, after the runtime acted on it (for logs,
    /// reconnect policies, test tools).
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The task; it ends after a [`Command::Shutdown`].
    pub task: tokio::task::JoinHandle<()>,
}

impl RuntimeHandle {
    /// An orderly stop ([`Command::Shutdown`]): deletes every IKE SA,
    /// waits up to `linger` for the peers to answer, removes everything
    /// installed, and returns when that is done.
    pub async fn shutdown(&self, linger: Duration) {
        let (done, stopped) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { linger, done })
            .is_ok()
        {
            let _ = stopped.await;
        }
    }
}

/// How many IKE datagrams may wait for the IKE task before new ones are
/// dropped (and counted).
const IKE_QUEUE: usize = 4096;

/// Starts the runtime on the current tokio runtime.
pub fn spawn(parts: Parts) -> io::Result<RuntimeHandle> {
    let now = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut endpoint = Endpoint::new(parts.ike, Box::new(rand_core::OsRng), now, unix);
    endpoint.set_revocations(now, parts.revocations);
    let (ike_tx, ike_rx) = mpsc::channel(IKE_QUEUE);
    let receive = Arc::new(ReceiveCounters::default());
    parts
        .sockets
        .spawn_receivers(parts.esp, ike_tx, receive.clone());
    let (admission, admitted) = match parts.leases {
        Some(store) => {
            let (a, rx) = Admission::start(store)?;
            (Some(a), Some(rx))
        }
        None => (None, None),
    };
    let admission_counters = admission.as_ref().map(Admission::counters);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let nat_t_port = parts.sockets.nat_t_port();
    let runtime = Runtime {
        endpoint,
        sockets: parts.sockets,
        nat_t_port,
        plane: parts.plane,
        role: parts.role,
        admission,
        admission_counters,
        connections: HashMap::new(),
        events: ev_tx,
        install_failures: 0,
        tally: Tally::default(),
        receive,
        shutdown: None,
    };
    let inputs = Inputs {
        commands: cmd_rx,
        datagrams: ike_rx,
        admitted,
        kernel: parts.kernel_events,
        peer_moves: parts.peer_moves,
    };
    let task = tokio::spawn(runtime.run(inputs));
    Ok(RuntimeHandle {
        commands: cmd_tx,
        events: ev_rx,
        task,
    })
}

struct ChildState {
    outbound_spi: u32,
    status: ChildStatus,
    /// The host addresses its remote selectors route (broker).
    routes: Vec<Ipv6Addr>,
}

struct ConnState {
    identity: CanonicalIdentity,
    remote: SocketAddr,
    initiator: bool,
    since: Instant,
    suite: String,
    address: Option<Ipv6Addr>,
    dns: Vec<IpAddr>,
    children: BTreeMap<u32, ChildState>,
    /// The traffic of its Child SAs that are gone.
    retired: SaCounters,
}

struct Runtime {
    endpoint: Endpoint,
    sockets: IkeSockets,
    nat_t_port: u16,
    plane: Arc<dyn Plane>,
    role: Role,
    admission: Option<Admission>,
    admission_counters: Option<Arc<AdmissionCounters>>,
    connections: HashMap<SaId, ConnState>,
    events: mpsc::UnboundedSender<Event>,
    install_failures: u64,
    /// Setups, rekeys and ends, for [`RuntimeStats`].
    tally: Tally,
    receive: Arc<ReceiveCounters>,
    /// Shutting down: until when, and whom to tell.
    shutdown: Option<(tokio::time::Instant, oneshot::Sender<()>)>,
}

async fn recv_or_never<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn hosts(ts: &[TrafficSelector]) -> Vec<Ipv6Addr> {
    ts.iter()
        .filter_map(|t| match t {
            TrafficSelector::Ipv6(r) if r.start == r.end => Some(r.start),
            _ => None,
        })
        .collect()
}

fn selector_text(ts: &TrafficSelector) -> String {
    match ts {
        TrafficSelector::Ipv6(r) if r.start == r.end => format!("{}/128", r.start),
        TrafficSelector::Ipv6(r) => format!("{}-{}", r.start, r.end),
        TrafficSelector::Ipv4(r) => format!("{}-{}", r.start, r.end),
        other => format!("{other:?}"),
    }
}

/// What the IKE task takes in.
struct Inputs {
    commands: mpsc::UnboundedReceiver<Command>,
    datagrams: mpsc::Receiver<Datagram>,
    admitted: Option<mpsc::UnboundedReceiver<Admitted>>,
    kernel: Option<KernelEvents>,
    peer_moves: Option<mpsc::UnboundedReceiver<PeerMoved>>,
}

impl Runtime {
    async fn run(mut self, inputs: Inputs) {
        let Inputs {
            mut commands,
            mut datagrams,
            mut admitted,
            kernel,
            mut peer_moves,
        } = inputs;
        let (mut kernel_events, action_for) = match kernel {
            Some(k) => (Some(k.events), Some(k.action_for)),
            None => (None, None),
        };
        loop {
            if let Some((deadline, _)) = &self.shutdown {
                if self.connections.is_empty() || tokio::time::Instant::now() >= *deadline {
                    break;
                }
            }
            let timeout = self.endpoint.poll_timeout();
            let linger = self.shutdown.as_ref().map(|(d, _)| *d);
            let sleep = async {
                match (timeout, linger) {
                    (Some(t), Some(l)) => tokio::time::sleep_until(l.min(t.into())).await,
                    (Some(t), None) => tokio::time::sleep_until(t.into()).await,
                    (None, Some(l)) => tokio::time::sleep_until(l).await,
                    (None, None) => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // The daemon is gone without a shutdown: clean up.
                    None => break,
                },
                Some(d) = datagrams.recv() => self.datagram(d),
                Some(a) = recv_or_never(&mut admitted) => self.admitted(a),
                Some(ev) = recv_or_never(&mut kernel_events) => {
                    match action_for.as_ref().and_then(|f| f(ev)) {
                        Some(KernelAction::Rekey(sa, spi)) => {
                            self.endpoint.rekey_child_sa(Instant::now(), sa, spi)
                        }
                        Some(KernelAction::PeerMoved(m)) => {
                            self.endpoint.esp_from(Instant::now(), m.ike_sa, m.remote)
                        }
                        None => {}
                    }
                }
                Some(m) = recv_or_never(&mut peer_moves) => {
                    self.endpoint.esp_from(Instant::now(), m.ike_sa, m.remote);
                }
                () = sleep => self.endpoint.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
        self.remove_everything();
        if let Some((_, done)) = self.shutdown.take() {
            let _ = done.send(());
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Connect(req, reply) => {
                let id = self.endpoint.connect(now, req);
                let _ = reply.send(id);
            }
            Command::DeleteIkeSa(sa) => self.endpoint.delete_ike_sa(now, sa),
            Command::RekeyChildSa(sa, spi) => self.endpoint.rekey_child_sa(now, sa, spi),
            Command::RekeyIkeSa(sa) => self.endpoint.rekey_ike_sa(now, sa),
            Command::Roam(sa, local, reply) => {
                let _ = reply.send(self.endpoint.roam(now, sa, local));
            }
            Command::Connections(reply) => {
                let _ = reply.send(self.connections());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::SetRevocations(revocations) => {
                self.endpoint.set_revocations(now, revocations);
            }
            Command::SetConfig(NewConfig(config)) => self.endpoint.set_config(config),
            Command::Shutdown { linger, done } => {
                let ids: Vec<SaId> = self.connections.keys().copied().collect();
                for sa in ids {
                    self.endpoint.delete_ike_sa(now, sa);
                }
                self.shutdown = Some((tokio::time::Instant::now() + linger, done));
            }
        }
    }

    fn datagram(&mut self, d: Datagram) {
        let now = Instant::now();
        if d.local.port() != self.nat_t_port {
            self.endpoint.handle(now, d.remote, d.local, &d.payload);
            return;
        }
        if let Ok(Udp4500::Ike(ike)) = classify_udp4500(&d.payload) {
            self.endpoint.handle(now, d.remote, d.local, ike);
        }
    }

    fn admitted(&mut self, a: Admitted) {
        let held = self
            .endpoint
            .address_assigned(Instant::now(), a.sa, a.address);
        match (a.address, held) {
            (Some(address), true) => {
                tracing::debug!("lease {address} of {} is durable", a.identity)
            }
            (Some(address), false) => {
                if let Some(adm) = &mut self.admission {
                    adm.release(&a.identity, Some(address));
                }
            }
            (None, _) => {
                tracing::warn!(
                    "no address for {}: the pool is exhausted or the lease store failed",
                    a.identity
                );
                if let Some(adm) = &mut self.admission {
                    adm.release(&a.identity, None);
                }
            }
        }
    }

    /// Acts on every event, then sends every datagram.
    async fn flush(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            self.on_event(&event);
            let _ = self.events.send(event);
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            match self.sockets.socket(t.local) {
                Some(sock) => {
                    if let Err(e) = sock.send_to(&t.payload, t.remote).await {
                        tracing::warn!("sending to {}: {e}", t.remote);
                    }
                }
                None => tracing::warn!("no socket bound to {}", t.local),
            }
        }
    }

    fn on_event(&mut self, event: &Event) {
        let now = Instant::now();
        match event {
            Event::IkeSaUp {
                sa,
                peer_identity,
                suite,
                remote,
                initiator,
            } => {
                self.tally.setups += 1;
                if *initiator {
                    tracing::info!("connected to {peer_identity} at {remote}");
                } else {
                    tracing::info!("{peer_identity} connected from {remote}");
                }
                self.connections.insert(
                    *sa,
                    ConnState {
                        identity: peer_identity.clone(),
                        remote: *remote,
                        initiator: *initiator,
                        since: now,
                        suite: suite.to_string(),
                        address: None,
                        dns: Vec::new(),
                        children: BTreeMap::new(),
                        retired: SaCounters::default(),
                    },
                );
            }
            Event::AddressRequested { sa, identity } => match &mut self.admission {
                Some(adm) => adm.request(*sa, identity.clone()),
                None => {
                    self.endpoint.address_assigned(now, *sa, None);
                }
            },
            Event::AddressReleased {
                identity, address, ..
            } => {
                if let Some(adm) = &mut self.admission {
                    adm.release(identity, Some(*address));
                }
            }
            Event::AddressAssigned { sa, address, dns } => {
                self.address_assigned(*sa, address.0, dns)
            }
            Event::ChildSaUp(child) => self.child_up(child, None),
            Event::ChildSaRekeyed {
                old_inbound_spi,
                new,
            } => {
                self.tally.child_rekeys += 1;
                self.child_up(new, Some(*old_inbound_spi))
            }
            Event::ChildSaDown {
                ike_sa,
                inbound_spi,
                ..
            } => self.child_down(*ike_sa, *inbound_spi),
            Event::ChildSaRefused { sa, notify } => {
                let who = self
                    .connections
                    .get(sa)
                    .map_or_else(|| "a peer".to_string(), |c| c.identity.to_string());
                tracing::warn!("tunnel of {who} refused: {}", notify.describe());
            }
            Event::IkeSaDown {
                sa,
                remote,
                peer,
                reason,
            } => self.ike_down(*sa, *remote, peer.as_deref(), reason),
            Event::IkeSaRekeyed { sa } => {
                self.tally.ike_rekeys += 1;
                if let Some(c) = self.connections.get(sa) {
                    tracing::info!("IKE SA of {} at {} rekeyed", c.identity, c.remote);
                }
            }
            Event::PathChanged {
                sa,
                local,
                remote,
                children,
            } => self.path_changed(*sa, *local, *remote, children),
            Event::InitRefused { remote, reason } => {
                tracing::warn!("refused IKE_SA_INIT from {remote}: {reason}")
            }
            _ => {}
        }
    }

    /// The IKE SA moved (a NAT's new mapping, MOBIKE): its Child SAs
    /// follow in the data plane, or, where it cannot move them, the IKE SA
    /// ends so that the peer connects anew.
    fn path_changed(
        &mut self,
        sa: SaId,
        local: SocketAddr,
        remote: SocketAddr,
        children: &[ChildSa],
    ) {
        let Some(conn) = self.connections.get_mut(&sa) else {
            return;
        };
        tracing::info!(
            "{} moved from {} to {remote} (our side {local})",
            conn.identity,
            conn.remote
        );
        conn.remote = remote;
        for child in children {
            if let Some(c) = conn.children.get_mut(&child.inbound_spi) {
                c.status.udp_encapsulation = child.udp_encapsulation;
            }
            if let Err(e) = self.plane.move_child(child) {
                tracing::warn!(
                    "moving the tunnel of {} to {remote}: {e}; ending it so that it is set up anew",
                    conn.identity
                );
                self.endpoint.delete_ike_sa(Instant::now(), sa);
                return;
            }
        }
    }

    fn address_assigned(&mut self, sa: SaId, address: Ipv6Addr, dns: &[IpAddr]) {
        if let Err(e) = self.plane.set_virtual_address(address) {
            tracing::error!("putting {address} and the default route in place: {e}");
        }
        if let Role::Initiator {
            dns: Some(resolver),
        } = &self.role
        {
            if !dns.is_empty() {
                if let Err(e) = resolver.apply(dns) {
                    tracing::error!("DNS servers to {}: {e}", resolver.describe());
                }
            }
        }
        tracing::info!("up with {address}, DNS {dns:?}");
        if let Some(c) = self.connections.get_mut(&sa) {
            c.address = Some(address);
            c.dns = dns.to_vec();
        }
    }

    fn child_up(&mut self, child: &ChildSa, replaces: Option<u32>) {
        if let Err(e) = self.plane.install(child) {
            // Announced but not installed: take it back, with the peer.
            self.install_failures += 1;
            tracing::error!(
                "installing Child SA {:08x}/{:08x}: {e}; deleting it",
                child.inbound_spi,
                child.outbound_spi
            );
            let now = Instant::now();
            let others = self
                .connections
                .get(&child.ike_sa)
                .is_some_and(|c| !c.children.is_empty());
            if others && replaces.is_none() {
                self.endpoint
                    .delete_child_sa(now, child.ike_sa, child.inbound_spi);
            } else {
                // The only Child SA, or the one that replaces the old (which
                // the rekey deletes): without it the tunnel carries nothing,
                // so the peer should know at once and start again.
                self.endpoint.delete_ike_sa(now, child.ike_sa);
            }
            return;
        }
        let who = self
            .connections
            .get(&child.ike_sa)
            .map_or_else(String::new, |c| format!("{}: ", c.identity));
        let rekey = replaces.map_or_else(String::new, |old| format!(", rekeying {old:08x}"));
        tracing::info!(
            "{who}Child SA {:08x}/{:08x} installed ({}{}{rekey})",
            child.inbound_spi,
            child.outbound_spi,
            child.encr,
            child.integ.map_or_else(String::new, |i| format!("-{i}")),
        );
        let routes = match self.role {
            Role::Responder => hosts(&child.remote_ts),
            Role::Initiator { .. } => Vec::new(),
        };
        for a in &routes {
            if let Err(e) = self.plane.add_host_route(*a) {
                tracing::error!("route to {a}: {e}");
            }
        }
        let status = ChildStatus {
            inbound_spi: format!("{:08x}", child.inbound_spi),
            outbound_spi: format!("{:08x}", child.outbound_spi),
            encryption: child.encr.to_string(),
            integrity: child.integ.map(|i| i.to_string()),
            esn: child.esn,
            udp_encapsulation: child.udp_encapsulation,
            remote_ts: child.remote_ts.iter().map(selector_text).collect(),
            rekey_in_secs: None,
        };
        if let Some(c) = self.connections.get_mut(&child.ike_sa) {
            c.remote = child.remote;
            if !c.initiator {
                c.address = c.address.or_else(|| routes.first().copied());
            }
            c.children.insert(
                child.inbound_spi,
                ChildState {
                    outbound_spi: child.outbound_spi,
                    status,
                    routes,
                },
            );
        }
    }

    /// Whether a Child SA of any connection still routes `addr`.
    fn routed(&self, addr: Ipv6Addr) -> bool {
        self.connections
            .values()
            .any(|c| c.children.values().any(|ch| ch.routes.contains(&addr)))
    }

    fn child_down(&mut self, ike_sa: SaId, inbound_spi: u32) {
        let last = self.plane.counters(inbound_spi).unwrap_or_default();
        self.plane.remove(inbound_spi);
        let Some(c) = self.connections.get_mut(&ike_sa) else {
            return;
        };
        c.retired.absorb(last);
        let Some(gone) = c.children.remove(&inbound_spi) else {
            return;
        };
        tracing::debug!(
            "Child SA {inbound_spi:08x}/{:08x} removed",
            gone.outbound_spi
        );
        for a in gone.routes {
            // A rekeyed SA's successor, or the same client reconnected on
            // a new IKE SA, may route the same address.
            if !self.routed(a) {
                let _ = self.plane.delete_host_route(a);
            }
        }
    }

    fn ike_down(&mut self, sa: SaId, remote: SocketAddr, peer: Option<&str>, reason: &DownReason) {
        *self.tally.ends.entry(reason_label(reason)).or_default() += 1;
        let Some(c) = self.connections.remove(&sa) else {
            let who = peer.map_or_else(String::new, |p| format!(" as {p}"));
            match reason {
                DownReason::RefusedPeer(..) => {
                    tracing::warn!("refused {remote}{who}: {reason}")
                }
                DownReason::RefusedByPeer(_) => {
                    tracing::warn!("{remote}{who} refused us: {reason}")
                }
                _ => tracing::debug!("attempt from {remote}{who} ended: {reason}"),
            }
            return;
        };
        if c.initiator {
            tracing::info!("disconnected from {} at {}: {reason}", c.identity, c.remote);
        } else {
            tracing::info!("{} at {} disconnected: {reason}", c.identity, c.remote);
        }
        self.forget(c);
    }

    /// Removes what a connection installed (its Child SAs normally went
    /// before it, each with its own event).
    fn forget(&mut self, c: ConnState) {
        for (spi, child) in c.children {
            self.plane.remove(spi);
            for a in child.routes {
                if !self.routed(a) {
                    let _ = self.plane.delete_host_route(a);
                }
            }
        }
        if let (true, Some(addr)) = (c.initiator, c.address) {
            self.plane.clear_virtual_address(addr);
            if let Role::Initiator {
                dns: Some(resolver),
            } = &self.role
            {
                if let Err(e) = resolver.restore() {
                    tracing::error!("taking the DNS servers from {}: {e}", resolver.describe());
                }
            }
        }
    }

    fn remove_everything(&mut self) {
        let all: Vec<SaId> = self.connections.keys().copied().collect();
        for sa in all {
            if let Some(c) = self.connections.remove(&sa) {
                self.forget(c);
            }
        }
    }

    fn connections(&self) -> Vec<Connection> {
        let mut out: Vec<Connection> = self
            .connections
            .iter()
            .map(|(sa, c)| {
                let now = Instant::now();
                let timers = self.endpoint.timers(*sa);
                let until = |t: Instant| t.saturating_duration_since(now).as_secs();
                let child_rekey = |spi: &str| {
                    let spi = u32::from_str_radix(spi, 16).ok()?;
                    let t = timers.as_ref()?;
                    t.child_rekey_at
                        .iter()
                        .find(|(s, _)| *s == spi)
                        .map(|(_, at)| until(*at))
                };
                let mut total = c.retired;
                for spi in c.children.keys() {
                    if let Some(counters) = self.plane.counters(*spi) {
                        total.absorb(counters);
                    }
                }
                Connection {
                    sa: sa.0,
                    identity: c.identity.to_string(),
                    remote: c.remote,
                    initiator: c.initiator,
                    age_secs: c.since.elapsed().as_secs(),
                    ike_suite: c.suite.clone(),
                    address: c.address,
                    dns: c.dns.clone(),
                    child_sas: c
                        .children
                        .values()
                        .map(|ch| ChildStatus {
                            rekey_in_secs: child_rekey(&ch.status.inbound_spi),
                            ..ch.status.clone()
                        })
                        .collect(),
                    traffic: total.into(),
                    ike_rekey_in_secs: timers.as_ref().and_then(|t| t.ike_rekey_at).map(until),
                    last_heard_secs: timers
                        .as_ref()
                        .map_or(0, |t| now.saturating_duration_since(t.last_heard).as_secs()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity).then(a.sa.cmp(&b.sa)));
        out
    }

    fn stats(&self) -> RuntimeStats {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        RuntimeStats {
            ike_queue_full: load(&self.receive.ike_queue_full),
            esp_unclaimed: load(&self.receive.esp_unclaimed),
            install_failures: self.install_failures,
            leases_assigned: self
                .admission_counters
                .as_ref()
                .map_or(0, |c| load(&c.assigned)),
            lease_flushes: self
                .admission_counters
                .as_ref()
                .map_or(0, |c| load(&c.flushes)),
            ike: self.endpoint.stats().clone(),
            ike_sas: self.endpoint.ike_sa_count(),
            half_open: self.endpoint.half_open_count(),
            setups: self.tally.setups,
            ike_rekeys: self.tally.ike_rekeys,
            child_rekeys: self.tally.child_rekeys,
            ends: self.tally.ends.clone(),
        }
    }
}
