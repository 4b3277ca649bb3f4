//! The IKE driver: an [`Endpoint`] on UDP sockets, with a tokio task that
//! feeds it datagrams and timeouts and carries out what it asks for.
//!
//! One socket is bound per listen address and port (500 and the NAT-T
//! port). On the NAT-T port a datagram is IKE if it starts with the
//! non-ESP marker (which is removed before the endpoint sees it), a NAT
//! keepalive if it is the single octet 0xFF, and ESP otherwise; ESP goes
//! to the attached data plane, or is counted and dropped if there is none.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sixgate_proto::crypto::IkeSaKeys;
use sixgate_proto::endpoint::{Config, ConnectRequest, Endpoint, Event, SaId, Stats};
use sixgate_proto::wire::{classify_udp4500, Udp4500};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// What the embedder can ask of a running driver.
#[derive(Debug)]
pub enum Command {
    /// Start an IKE SA as initiator; the id comes back on the channel.
    Connect(ConnectRequest, oneshot::Sender<SaId>),
    /// Delete an IKE SA.
    DeleteIkeSa(SaId),
    /// Rekey a Child SA (by its inbound SPI).
    RekeyChildSa(SaId, u32),

    /// Rekey an IKE SA.
    RekeyIkeSa(SaId),
    /// Report SKEYSEED and the keys of an IKE SA (interop tests compare
    /// them with a peer's key log).
    IkeSaSecrets(SaId, oneshot::Sender<Option<(Vec<u8>, IkeSaKeys)>>),
    /// Report the endpoint's counters.
    Stats(oneshot::Sender<Stats>),
    /// Stop the driver.
    Shutdown,
}

/// A data plane that takes ESP packets straight from the receive loop, in
/// place, with no copy and no channel.
pub trait EspHandler: Send + Sync + 'static {
    /// One ESP packet from `remote` to our `local` address.
    fn esp(&self, local: SocketAddr, remote: SocketAddr, packet: &mut [u8]);
}

/// An ESP packet received on the NAT-T port.
#[derive(Debug)]
pub struct EspDatagram {
    /// Sender.
    pub remote: SocketAddr,
    /// Our address it arrived on.
    pub local: SocketAddr,
    /// The packet, from the SPI on.
    pub packet: Vec<u8>,
}

/// The sockets, bound and ready.
pub struct IkeSockets {
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    nat_t_port: u16,
}

impl IkeSockets {
    /// Binds `port` and `nat_t_port` on every address.
    pub async fn bind(addrs: &[IpAddr], port: u16, nat_t_port: u16) -> io::Result<IkeSockets> {
        let mut sockets = Vec::new();
        for ip in addrs {
            for p in [port, nat_t_port] {
                let sock = UdpSocket::bind(SocketAddr::new(*ip, p)).await?;
                sockets.push((sock.local_addr()?, Arc::new(sock)));
            }
        }
        Ok(IkeSockets {
            sockets,
            nat_t_port,
        })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(a, _)| *a).collect()
    }

    /// The socket bound to `local` (to send ESP from the NAT-T port).
    pub fn socket(&self, local: SocketAddr) -> Option<Arc<UdpSocket>> {
        self.sockets
            .iter()
            .find(|(a, _)| *a == local)
            .map(|(_, s)| s.clone())
    }
}

/// Handles to a running driver.
pub struct DriverHandle {
    /// Commands in.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Events out.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// ESP packets out, when no data plane consumes them directly.
    pub esp: mpsc::Receiver<EspDatagram>,
    /// ESP packets dropped because nobody took them.
    pub esp_dropped: Arc<AtomicU64>,
}

/// Starts the driver task on the current tokio runtime. ESP goes to
/// `esp_handler` if given, else out through [`DriverHandle::esp`].
pub fn spawn(
    config: Arc<Config>,
    sockets: IkeSockets,
    esp_handler: Option<Arc<dyn EspHandler>>,
    configure: impl FnOnce(&mut Endpoint),
) -> DriverHandle {
    let now = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut endpoint = Endpoint::new(config, Box::new(rand_core::OsRng), now, unix);
    configure(&mut endpoint);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (esp_tx, esp_rx) = mpsc::channel(1024);
    let esp_dropped = Arc::new(AtomicU64::new(0));
    let (rx_tx, rx_rx) = mpsc::channel(1024);
    for (local, sock) in &sockets.sockets {
        let inline = (local.port() == sockets.nat_t_port)
            .then(|| esp_handler.clone())
            .flatten();
        tokio::spawn(receive(*local, sock.clone(), rx_tx.clone(), inline));
    }
    let driver = Driver {
        endpoint,
        sockets,
        events: ev_tx,
        esp: esp_tx,
        esp_dropped: esp_dropped.clone(),
    };
    tokio::spawn(driver.run(cmd_rx, rx_rx));
    DriverHandle {
        commands: cmd_tx,
        events: ev_rx,
        esp: esp_rx,
        esp_dropped,
    }
}

async fn receive(
    local: SocketAddr,
    sock: Arc<UdpSocket>,
    tx: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
    esp: Option<Arc<dyn EspHandler>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((len, remote)) => {
                let datagram = &mut buf[..len];
                if let Some(handler) = &esp {
                    // ESP: the SPI is never zero; IKE starts with the marker.
                    if len > 8 && datagram[..4] != [0; 4] {
                        handler.esp(local, remote, datagram);
                        continue;
                    }
                    if len == 1 {
                        continue; // NAT keepalive
                    }
                }
                if tx.send((local, remote, datagram.to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("receive on {local}: {e}"),
        }
    }
}

struct Driver {
    endpoint: Endpoint,
    sockets: IkeSockets,
    events: mpsc::UnboundedSender<Event>,
    esp: mpsc::Sender<EspDatagram>,
    esp_dropped: Arc<AtomicU64>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut datagrams: mpsc::Receiver<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) {
        loop {
            let timeout = self.endpoint.poll_timeout();
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((local, remote, data)) = datagrams.recv() => self.datagram(local, remote, &data),
                cmd = commands.recv() => match cmd {
                    Some(Command::Connect(req, reply)) => {
                        let id = self.endpoint.connect(Instant::now(), req);
                        let _ = reply.send(id);
                    }
                    Some(Command::DeleteIkeSa(sa)) => self.endpoint.delete_ike_sa(Instant::now(), sa),
                    Some(Command::RekeyChildSa(sa, spi)) => self.endpoint.rekey_child_sa(Instant::now(), sa, spi),
                    Some(Command::RekeyIkeSa(sa)) => self.endpoint.rekey_ike_sa(Instant::now(), sa),
                    Some(Command::IkeSaSecrets(sa, reply)) => {
                        let secrets = self.endpoint.ike_sa_secrets(sa).map(|(seed, keys)| (seed.to_vec(), keys.clone()));
                        let _ = reply.send(secrets);
                    }
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.endpoint.stats().clone());
                    }
                    Some(Command::Shutdown) | None => return,
                },
                () = sleep => self.endpoint.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
    }

    fn datagram(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        if local.port() != self.sockets.nat_t_port {
            self.endpoint.handle(now, remote, local, data);
            return;
        }
        match classify_udp4500(data) {
            Ok(Udp4500::Ike(ike)) => self.endpoint.handle(now, remote, local, ike),
            Ok(Udp4500::Esp(packet)) => {
                let d = EspDatagram {
                    remote,
                    local,
                    packet: packet.to_vec(),
                };
                if self.esp.try_send(d).is_err() {
                    self.esp_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Udp4500::NatKeepalive) | Err(_) => {}
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            match self.sockets.socket(t.local) {
                Some(sock) => {
                    if let Err(e) = sock.send_to(&t.payload, t.remote).await {
                        tracing::warn!("send to {}: {e}", t.remote);
                    }
                }
                None => tracing::warn!("no socket bound to {}", t.local),
            }
        }
        while let Some(e) = self.endpoint.poll_event() {
            let _ = self.events.send(e);
        }
    }
}

/// NAT keepalives (RFC 3948 2.3): one 0xFF octet every 20 s from the
/// NAT-T socket to each peer `peers` names, so NAT mappings on the way stay
/// open; until `peers` answers `None` (its data plane is gone).
pub async fn keepalive_loop(
    socket: Arc<UdpSocket>,
    mut peers: impl FnMut() -> Option<Vec<SocketAddr>>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(20));
    loop {
        tick.tick().await;
        let Some(mut remotes) = peers() else {
            return;
        };
        remotes.sort();
        remotes.dedup();
        for remote in remotes {
            let _ = socket.send_to(&[0xff], remote).await;
        }
    }
}

/// Turns on the kernel's ESP-in-UDP decapsulation on the NAT-T socket:
/// the kernel then takes ESP arriving there and leaves IKE (behind the
/// non-ESP marker) to us.
pub fn enable_kernel_espinudp(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const UDP_ENCAP: libc::c_int = 100;
    const UDP_ENCAP_ESPINUDP: libc::c_int = 2;
    let value: libc::c_int = UDP_ENCAP_ESPINUDP;
    // SAFETY: the descriptor is the socket's own and open for the whole
    // call; the option value is a c_int on our stack, with its size.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_UDP,
            UDP_ENCAP,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
