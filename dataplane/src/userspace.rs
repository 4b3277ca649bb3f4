//! The userspace ESP data plane: inner IPv6 packets from a TUN device are
//! sealed into ESP and sent in UDP on the NAT-T port; ESP arriving there
//! is opened and written back to the TUN device (like strongSwan's
//! kernel-libipsec, always UDP-encapsulated, so it runs where the kernel
//! has no ESP).
//!
//! Outbound SAs are found by the inner destination address (a host route
//! per client on the broker, the default on a client), inbound SAs by SPI.
//! A rekey installs the new SA pair and moves outbound traffic to it at
//! once, while the old inbound SA keeps accepting until it is deleted, so
//! no packet in flight is lost.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sixgate_proto::endpoint::ChildSa;
use sixgate_proto::wire::TrafficSelector;
use tokio::net::UdpSocket;

use crate::esp::{Counters, EspSa};
use crate::udp::EspHandler;

/// IP protocol number of IPv6 inside ESP.
const IPV6: u8 = 41;

/// Traffic counters of one Child SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Received and opened.
    pub inbound: Counters,
    /// Sealed and sent.
    pub outbound: Counters,
}

struct Outbound {
    sa: EspSa,
    remote: SocketAddr,
}

/// The sending side: outbound SAs and the routes to them. Its own lock, so
/// the two directions of a TCP flow never wait for each other.
#[derive(Default)]
struct SendTable {
    sas: HashMap<u32, Outbound>,
    /// Host selectors (a client's /128) to outbound SPI.
    hosts: HashMap<Ipv6Addr, u32>,
    /// Other selectors, most recent first.
    ranges: Vec<(TrafficSelector, u32)>,
}

impl SendTable {
    fn route(&self, dst: Ipv6Addr) -> Option<u32> {
        if let Some(spi) = self.hosts.get(&dst) {
            return Some(*spi);
        }
        self.ranges
            .iter()
            .find(|(ts, _)| match ts {
                TrafficSelector::Ipv6(r) => r.start <= dst && dst <= r.end,
                _ => false,
            })
            .map(|(_, spi)| *spi)
    }

    fn unroute(&mut self, outbound_spi: u32) {
        self.hosts.retain(|_, spi| *spi != outbound_spi);
        self.ranges.retain(|(_, spi)| *spi != outbound_spi);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    /// The receiving side: inbound SAs by SPI.
    inbound: Mutex<HashMap<u32, EspSa>>,
    send: Mutex<SendTable>,
    /// Inbound SPI to the outbound SPI of the same Child SA.
    pairs: Mutex<HashMap<u32, u32>>,
    /// Packets with no SA to go out on, or coming in for no SA.
    no_sa: AtomicU64,
    tun_writer: std::fs::File,
}

impl EspHandler for Shared {
    fn esp(&self, _local: SocketAddr, _remote: SocketAddr, packet: &mut [u8]) {
        let spi = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let mut inbound = lock(&self.inbound);
        let Some(sa) = inbound.get_mut(&spi) else {
            self.no_sa.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok((inner, next_header)) = sa.open(packet) else {
            return;
        };
        drop(inbound);
        if next_header == IPV6 {
            // A TUN write takes the packet or drops it; it does not block.
            let _ = (&self.tun_writer).write(inner);
        }
    }
}

/// A running userspace data plane.
#[derive(Clone)]
pub struct Userspace {
    shared: Arc<Shared>,
    tun_name: String,
}

impl Userspace {
    /// Creates the TUN device `tun_name` (up, with `mtu`) and starts the
    /// loop that sends its packets out through `socket` (the NAT-T socket).
    pub fn start(tun_name: &str, mtu: u16, socket: Arc<UdpSocket>) -> io::Result<Userspace> {
        let mut config = tun::Configuration::default();
        config.tun_name(tun_name).mtu(mtu).up();
        let device = tun::create_as_async(&config)
            .map_err(|e| io::Error::other(format!("TUN device {tun_name}: {e}")))?;
        // The receive path writes to the TUN device synchronously from the
        // socket's receive loop; it gets its own descriptor for that.
        // SAFETY: the descriptor belongs to `device`, which outlives this
        // borrow; it is only duplicated here.
        #[allow(unsafe_code)]
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(device.as_raw_fd()) };
        let writer = std::fs::File::from(rustix::io::dup(fd)?);
        let shared = Arc::new(Shared {
            inbound: Mutex::new(HashMap::new()),
            send: Mutex::new(SendTable::default()),
            pairs: Mutex::new(HashMap::new()),
            no_sa: AtomicU64::new(0),
            tun_writer: writer,
        });
        tokio::spawn(send_loop(device, shared.clone(), socket.clone()));
        tokio::spawn(keepalive_loop(Arc::downgrade(&shared), socket));
        Ok(Userspace {
            shared,
            tun_name: tun_name.to_string(),
        })
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// The receive side, to hand to the UDP driver.
    pub fn esp_handler(&self) -> Arc<dyn EspHandler> {
        self.shared.clone()
    }

    /// Installs both directions of a Child SA and routes its remote
    /// selectors to it.
    pub fn install(&self, child: &ChildSa) -> io::Result<()> {
        let inbound = EspSa::new(child.inbound_spi, &child.inbound, child.esn)
            .ok_or_else(|| io::Error::other("inbound keys"))?;
        let outbound = EspSa::new(child.outbound_spi, &child.outbound, child.esn)
            .ok_or_else(|| io::Error::other("outbound keys"))?;
        lock(&self.shared.inbound).insert(child.inbound_spi, inbound);
        lock(&self.shared.pairs).insert(child.inbound_spi, child.outbound_spi);
        let mut send = lock(&self.shared.send);
        send.sas.insert(
            child.outbound_spi,
            Outbound {
                sa: outbound,
                remote: child.remote,
            },
        );
        for ts in &child.remote_ts {
            if let TrafficSelector::Ipv6(r) = ts {
                if r.start == r.end {
                    send.hosts.insert(r.start, child.outbound_spi);
                    continue;
                }
            }
            send.ranges.insert(0, (ts.clone(), child.outbound_spi));
        }
        Ok(())
    }

    /// Removes a Child SA (by its inbound SPI), and its routes if they
    /// still point at it.
    pub fn remove(&self, inbound_spi: u32) {
        lock(&self.shared.inbound).remove(&inbound_spi);
        if let Some(out) = lock(&self.shared.pairs).remove(&inbound_spi) {
            let mut send = lock(&self.shared.send);
            send.sas.remove(&out);
            send.unroute(out);
        }
    }

    /// The counters of a Child SA, by inbound SPI.
    pub fn counters(&self, inbound_spi: u32) -> Option<SaCounters> {
        let inbound = lock(&self.shared.inbound).get(&inbound_spi)?.counters;
        let out = lock(&self.shared.pairs).get(&inbound_spi).copied();
        let outbound = out
            .and_then(|o| lock(&self.shared.send).sas.get(&o).map(|o| o.sa.counters))
            .unwrap_or_default();
        Some(SaCounters { inbound, outbound })
    }

    /// Packets dropped for want of an SA.
    pub fn no_sa_drops(&self) -> u64 {
        self.shared.no_sa.load(Ordering::Relaxed)
    }
}

async fn send_loop(device: tun::AsyncDevice, shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut packet = vec![0u8; 65536];
    let mut sealed = Vec::with_capacity(65536 + 64);
    loop {
        let n = match device.recv(&mut packet).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("TUN read: {e}");
                return;
            }
        };
        let inner = &packet[..n];
        // IPv6 only: version 6, destination at octets 24..40.
        let Some(dst) = inner.get(24..40).filter(|_| inner[0] >> 4 == 6) else {
            continue;
        };
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(dst).unwrap_or_default());
        let remote = {
            let mut send = lock(&shared.send);
            let Some(spi) = send.route(dst) else {
                shared.no_sa.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(out) = send.sas.get_mut(&spi) else {
                continue;
            };
            if out.sa.seal(inner, IPV6, &mut sealed).is_err() {
                continue;
            }
            out.remote
        };
        if let Err(e) = socket.send_to(&sealed, remote).await {
            tracing::debug!("ESP to {remote}: {e}");
        }
    }
}

/// NAT keepalives (RFC 3948 4): one 0xFF octet to every peer every 20 s,
/// so NAT mappings on the way stay open.
async fn keepalive_loop(shared: std::sync::Weak<Shared>, socket: Arc<UdpSocket>) {
    let mut tick = tokio::time::interval(Duration::from_secs(20));
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let remotes: Vec<SocketAddr> = {
            let send = lock(&shared.send);
            let mut r: Vec<SocketAddr> = send.sas.values().map(|o| o.remote).collect();
            r.sort();
            r.dedup();
            r
        };
        drop(shared);
        crate::udp::send_keepalives(&socket, &remotes).await;
    }
}
