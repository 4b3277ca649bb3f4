//! Runtimes on loopback UDP, no root needed (for the runtime's own tests
//! and the admission bench): a CA made on the fly,
//! brokers and clients with identities of their own, data planes that
//! record (or slow down, or refuse) what they are asked to install, and a
//! lease store in memory whose flush can be slowed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sixgate_dataplane::udp::IkeSockets;
use sixgate_proto::auth::PrivateKey;
use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};
use sixgate_proto::endpoint::{self, ts, ChildSa, ConnectRequest, Event, SaId};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_runtime::admission::LeaseStore;
use sixgate_runtime::ca::{CertificateAuthority, KeyKind, Usage};
use sixgate_runtime::engine::{self, Parts, Role, RuntimeHandle};
use sixgate_runtime::plane::Plane;
use tokio::sync::mpsc;

/// The IKE port of these tests (unprivileged); NAT-T is the next one.
pub const IKE_PORT: u16 = 5500;
pub const NAT_T_PORT: u16 = IKE_PORT + 1;

pub fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("sixgate runtime test CA", KeyKind::EcdsaP256, 2).unwrap()
}

/// The engine configuration of `identity`, with a certificate from `ca`.
pub fn ike_config(ca: &CertificateAuthority, identity: &str, usage: Usage) -> endpoint::Config {
    let id = CanonicalIdentity::parse(identity).unwrap();
    let issued = ca.issue(&id, usage, KeyKind::EcdsaP256, 2).unwrap();
    let chain = certificates_from_pem(issued.certificate.as_bytes()).unwrap();
    let key = PrivateKey::from_pem(issued.private_key.as_bytes()).unwrap();
    let anchors =
        TrustAnchors::new(certificates_from_pem(ca.certificate().as_bytes()).unwrap()).unwrap();
    let mut c = endpoint::Config::new(id.to_wire().unwrap(), chain, Arc::new(key), anchors);
    c.nat_t_port = NAT_T_PORT;
    c
}

/// What a plane was asked to do, and when.
#[derive(Debug, Clone)]
pub struct Installed {
    pub at: Instant,
    pub inbound_spi: u32,
}

/// A data plane that installs nothing but records (after `delay`) what
/// it was asked to install, and refuses the installs `fail` says to.
pub struct TestPlane {
    pub delay: Duration,
    pub installed: Mutex<Vec<Installed>>,
    pub removed: Mutex<Vec<u32>>,
    /// Installs to refuse, by their number (0: the first).
    pub fail: Vec<u32>,
    calls: AtomicU32,
}

impl TestPlane {
    pub fn new(delay: Duration, fail: Vec<u32>) -> Arc<TestPlane> {
        Arc::new(TestPlane {
            delay,
            installed: Mutex::new(Vec::new()),
            removed: Mutex::new(Vec::new()),
            fail,
            calls: AtomicU32::new(0),
        })
    }

    pub fn installs(&self) -> Vec<Installed> {
        self.installed.lock().unwrap().clone()
    }
}

impl Plane for TestPlane {
    fn install(&self, child: &ChildSa) -> io::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        // A kernel or a disk that takes its time: blocking, as netlink is.
        std::thread::sleep(self.delay);
        if self.fail.contains(&n) {
            return Err(io::Error::other("the test refuses this install"));
        }
        self.installed.lock().unwrap().push(Installed {
            at: Instant::now(),
            inbound_spi: child.inbound_spi,
        });
        Ok(())
    }
    fn remove(&self, inbound_spi: u32) {
        self.removed.lock().unwrap().push(inbound_spi);
    }
}

/// Leases in memory; each flush takes `flush_delay` (a slow disk).
pub struct MemLeases {
    pub flush_delay: Duration,
    pub flushes: Arc<AtomicU64>,
    leases: HashMap<CanonicalIdentity, Ipv6Addr>,
}

impl MemLeases {
    pub fn new(flush_delay: Duration) -> (Box<MemLeases>, Arc<AtomicU64>) {
        let flushes = Arc::new(AtomicU64::new(0));
        (
            Box::new(MemLeases {
                flush_delay,
                flushes: flushes.clone(),
                leases: HashMap::new(),
            }),
            flushes,
        )
    }
}

impl LeaseStore for MemLeases {
    fn assign(&mut self, identity: &CanonicalIdentity) -> io::Result<Option<Ipv6Addr>> {
        let n = self.leases.len() as u16;
        Ok(Some(*self.leases.entry(identity.clone()).or_insert_with(
            || Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 1, n),
        )))
    }
    fn release(&mut self, _: &CanonicalIdentity, _: Ipv6Addr) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.flush_delay);
        Ok(())
    }
}

/// A runtime on `ip`, ports [`IKE_PORT`] and [`NAT_T_PORT`].
pub async fn runtime(
    ip: IpAddr,
    ike: endpoint::Config,
    role: Role,
    plane: Arc<dyn Plane>,
    leases: Option<Box<dyn LeaseStore>>,
) -> RuntimeHandle {
    let sockets = IkeSockets::bind(&[ip], IKE_PORT, NAT_T_PORT).await.unwrap();
    engine::spawn(Parts {
        ike: Arc::new(ike),
        role,
        sockets,
        plane,
        esp: None,
        kernel_events: None,
        peer_moves: None,
        leases,
        revocations: Default::default(),
    })
    .unwrap()
}

pub fn client_role() -> Role {
    Role::Initiator { dns: None }
}

/// A broker (broker.example.net) on `ip` with `plane` and `leases`.
pub async fn broker(
    ca: &CertificateAuthority,
    ip: IpAddr,
    plane: Arc<dyn Plane>,
    leases: Box<dyn LeaseStore>,
) -> RuntimeHandle {
    let ike = ike_config(ca, "broker.example.net", Usage::Broker);
    runtime(ip, ike, Role::Responder, plane, Some(leases)).await
}

/// A client of identity `who` on `ip` with `plane`.
pub async fn client(
    ca: &CertificateAuthority,
    ip: IpAddr,
    who: &str,
    plane: Arc<dyn Plane>,
) -> RuntimeHandle {
    let ike = ike_config(ca, who, Usage::Client);
    runtime(ip, ike, client_role(), plane, None).await
}

/// What a client asks the broker at `broker` for.
pub fn connect_request(client: IpAddr, broker: IpAddr) -> ConnectRequest {
    ConnectRequest {
        remote: SocketAddr::new(broker, IKE_PORT),
        local: SocketAddr::new(client, IKE_PORT),
        remote_identity: Some(CanonicalIdentity::parse("broker.example.net").unwrap()),
        request_address: true,
        initial_contact: true,
        local_ts: vec![ts::ipv6_any()],
        remote_ts: vec![ts::ipv6_any()],
    }
}

/// Starts an IKE SA from `client`.
pub async fn connect(client: &RuntimeHandle, request: ConnectRequest) -> SaId {
    let (tx, rx) = tokio::sync::oneshot::channel();
    client
        .commands
        .send(engine::Command::Connect(request, tx))
        .unwrap();
    rx.await.unwrap()
}

/// Waits (up to 20 s) for an event that `want` accepts.
pub async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    mut want: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = events.recv().await.expect("the runtime stopped");
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .expect("no such event within 20 s")
}

pub async fn stats(handle: &RuntimeHandle) -> sixgate_runtime::engine::RuntimeStats {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.commands.send(engine::Command::Stats(tx)).unwrap();
    rx.await.unwrap()
}
