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
//! no packet in flight is lost. An authenticated packet from an address
//! that is not its peer's is reported ([`PeerMoved`]), and the SA sends
//! there once the IKE engine says it follows.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sixgate_proto::endpoint::{ChildSa, SaId};
use sixgate_proto::wire::TrafficSelector;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::esp::{Counters, EspSa};
use crate::offload::{self, Coalescer, Outgoing, VNET_HDR_LEN};
use crate::selectors::{Selectors, IPV6_NEXT_HEADER as IPV6};
use crate::tun::Tun;
use crate::udp::{self, EspHandler};

/// Traffic counters of one Child SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Received and opened.
    pub inbound: Counters,
    /// Sealed and sent.
    pub outbound: Counters,
}

impl SaCounters {
    /// Adds the traffic counts of `other` (an SA that is gone) to these.
    pub fn absorb(&mut self, other: SaCounters) {
        for (mine, theirs) in [
            (&mut self.inbound, other.inbound),
            (&mut self.outbound, other.outbound),
        ] {
            mine.packets += theirs.packets;
            mine.bytes += theirs.bytes;
            mine.replayed += theirs.replayed;
            mine.auth_failed += theirs.auth_failed;
            mine.spoofed += theirs.spoofed;
        }
    }
}

struct Outbound {
    sa: EspSa,
    remote: SocketAddr,
    /// The peer's selectors, to route by.
    selectors: Vec<TrafficSelector>,
    /// Install order: the newest SA of a selector carries its traffic.
    order: u64,
}

/// The sending side: outbound SAs and the routes to them. Its own lock, so
/// the two directions of a TCP flow never wait for each other.
///
/// Outbound SAs are kept under the inbound SPI of their Child SA: that SPI
/// is ours and unique, where the outbound one is the peer's choice, which
/// another peer could repeat.
#[derive(Default)]
struct SendTable {
    sas: HashMap<u32, Outbound>,
    /// Host selectors (a client's /128) to a Child SA (inbound SPI).
    hosts: HashMap<Ipv6Addr, u32>,
    /// Other selectors, most recent first.
    ranges: Vec<(TrafficSelector, u32)>,
    installs: u64,
}

fn host_of(ts: &TrafficSelector) -> Option<Ipv6Addr> {
    match ts {
        TrafficSelector::Ipv6(r) if r.start == r.end => Some(r.start),
        _ => None,
    }
}

impl SendTable {
    fn route(&self, dst: Ipv6Addr) -> Option<u32> {
        if let Some(child) = self.hosts.get(&dst) {
            return Some(*child);
        }
        self.ranges
            .iter()
            .find(|(ts, _)| match ts {
                TrafficSelector::Ipv6(r) => r.start <= dst && dst <= r.end,
                _ => false,
            })
            .map(|(_, child)| *child)
    }

    fn insert(&mut self, child: u32, sa: EspSa, remote: SocketAddr, selectors: &[TrafficSelector]) {
        self.installs += 1;
        for ts in selectors {
            match host_of(ts) {
                Some(h) => {
                    self.hosts.insert(h, child);
                }
                None => self.ranges.insert(0, (ts.clone(), child)),
            }
        }
        self.sas.insert(
            child,
            Outbound {
                sa,
                remote,
                selectors: selectors.to_vec(),
                order: self.installs,
            },
        );
    }

    /// Removes a Child SA's outbound side. Its hosts go to the newest other
    /// SA with the same selector (after a rekey collision both new SAs
    /// route it, and either may be the one deleted).
    fn remove(&mut self, child: u32) {
        self.sas.remove(&child);
        self.ranges.retain(|(_, c)| *c != child);
        let orphaned: Vec<Ipv6Addr> = self
            .hosts
            .iter()
            .filter(|(_, c)| **c == child)
            .map(|(h, _)| *h)
            .collect();
        for h in orphaned {
            let heir = self
                .sas
                .iter()
                .filter(|(_, o)| o.selectors.iter().any(|ts| host_of(ts) == Some(h)))
                .max_by_key(|(_, o)| o.order)
                .map(|(c, _)| *c);
            match heir {
                Some(c) => {
                    self.hosts.insert(h, c);
                }
                None => {
                    self.hosts.remove(&h);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The receiving side of a Child SA: its ESP state and what it may carry.
pub struct Inbound {
    /// Its ESP state (keys, replay window, counters).
    pub sa: EspSa,
    /// What the peer may send through it.
    pub selectors: Selectors,
}

impl Inbound {
    /// Opens an ESP packet for this SA in place and returns the inner
    /// packet if it authenticated and is one the peer may send; refusals
    /// are counted in the SA's counters.
    pub fn receive<'a>(&mut self, packet: &'a mut [u8]) -> Option<&'a [u8]> {
        let (inner, next_header) = self.sa.open(packet).ok()?;
        // Authenticated is not authorised: the peer may send only IPv6
        // from its own selectors (its leased address, on the broker).
        if self.selectors.check(inner, next_header).is_err() {
            self.sa.counters.spoofed += 1;
            return None;
        }
        Some(inner)
    }
}

/// The SPI of an ESP packet: the inbound SA to open it with.
pub fn esp_spi(packet: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(..4)?.try_into().ok()?))
}

/// An inbound SA with where its peer is.
struct Receiving {
    inbound: Inbound,
    ike_sa: SaId,
    /// The peer's address as the IKE SA knows it.
    peer: SocketAddr,
    /// A new source already reported, so that a moved peer's packets
    /// are reported once, not each.
    reported: Option<SocketAddr>,
}

/// An authenticated ESP packet came from somewhere other than its peer's
/// address: for the IKE engine to decide whether the SA follows
/// ([`sixgate_proto::endpoint::Endpoint::esp_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMoved {
    /// The Child SA's IKE SA.
    pub ike_sa: SaId,
    /// Where the packet came from.
    pub remote: SocketAddr,
}

struct Shared {
    /// The receiving side: inbound SAs by SPI.
    inbound: Mutex<HashMap<u32, Receiving>>,
    /// Where moved peers are reported, once someone listens.
    moves: Mutex<Option<mpsc::UnboundedSender<PeerMoved>>>,
    send: Mutex<SendTable>,
    /// Packets with no SA to go out on, or coming in for no SA.
    no_sa: AtomicU64,
    /// What a batch of ESP brought, joined for the TUN device.
    gro: Mutex<Coalescer>,
    tun: Tun,
    /// Sends the ESP of one TUN read in as few calls as it can.
    segments: udp::SegmentSender,
}

impl Shared {
    fn write_tun(&self, pieces: &[&[u8]]) {
        if let Err(e) = self.tun.write(pieces) {
            tracing::debug!("TUN write: {e}");
        }
    }
}

impl EspHandler for Shared {
    fn esp(&self, _local: SocketAddr, remote: SocketAddr, packet: &mut [u8]) {
        let mut inbound = lock(&self.inbound);
        let Some(child) = esp_spi(packet).and_then(|spi| inbound.get_mut(&spi)) else {
            self.no_sa.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let highest = child.inbound.sa.highest_received();
        let Some(inner) = child.inbound.receive(packet) else {
            return;
        };
        // Authenticated, and newer than any before it: if it came from a
        // new address, a NAT in front of the peer may have a new mapping.
        // (A late packet from the old path moves nothing back.)
        let newest = child.inbound.sa.highest_received() > highest;
        if newest && remote != child.peer && child.reported != Some(remote) {
            child.reported = Some(remote);
            if let Some(tx) = lock(&self.moves).as_ref() {
                let _ = tx.send(PeerMoved {
                    ike_sa: child.ike_sa,
                    remote,
                });
            }
        }
        drop(inbound);
        lock(&self.gro).push(inner, |pieces| self.write_tun(pieces));
    }

    fn flush(&self) {
        lock(&self.gro).flush(|pieces| self.write_tun(pieces));
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
        let tun = Tun::create(tun_name, mtu)?;
        // Datagrams that arrive together come up together, to be joined
        // for the TUN device; without UDP GRO they come one by one.
        if let Err(e) = udp::enable_gro(&socket) {
            tracing::debug!("UDP GRO on the NAT-T socket: {e}");
        }
        let shared = Arc::new(Shared {
            inbound: Mutex::new(HashMap::new()),
            moves: Mutex::new(None),
            send: Mutex::new(SendTable::default()),
            no_sa: AtomicU64::new(0),
            gro: Mutex::new(Coalescer::default()),
            tun,
            segments: udp::SegmentSender::new(),
        });
        tokio::spawn(send_loop(shared.clone(), socket.clone()));
        let weak = Arc::downgrade(&shared);
        tokio::spawn(crate::udp::keepalive_loop(socket, move || {
            let shared = weak.upgrade()?;
            let send = lock(&shared.send);
            Some(send.sas.values().map(|o| o.remote).collect())
        }));
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
        let selectors = Selectors::of(child)?;
        let inbound = EspSa::new(child.inbound_spi, &child.inbound, child.esn)
            .ok_or_else(|| io::Error::other("inbound keys"))?;
        let outbound = EspSa::new(child.outbound_spi, &child.outbound, child.esn)
            .ok_or_else(|| io::Error::other("outbound keys"))?;
        lock(&self.shared.inbound).insert(
            child.inbound_spi,
            Receiving {
                inbound: Inbound {
                    sa: inbound,
                    selectors,
                },
                ike_sa: child.ike_sa,
                peer: child.remote,
                reported: None,
            },
        );
        lock(&self.shared.send).insert(child.inbound_spi, outbound, child.remote, &child.remote_ts);
        Ok(())
    }

    /// Sends a Child SA's ESP to its new outer address from now on, and
    /// expects the peer's from there.
    pub fn move_child(&self, child: &ChildSa) -> io::Result<()> {
        match lock(&self.shared.inbound).get_mut(&child.inbound_spi) {
            Some(r) => {
                r.peer = child.remote;
                r.reported = None;
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "no such Child SA")),
        }
        if let Some(out) = lock(&self.shared.send).sas.get_mut(&child.inbound_spi) {
            out.remote = child.remote;
        }
        Ok(())
    }

    /// Reports authenticated ESP from new addresses on the returned
    /// channel (one report per SA and address).
    pub fn peer_moves(&self) -> mpsc::UnboundedReceiver<PeerMoved> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.shared.moves) = Some(tx);
        rx
    }

    /// Removes a Child SA (by its inbound SPI), and its routes if no other
    /// SA carries them.
    pub fn remove(&self, inbound_spi: u32) {
        lock(&self.shared.inbound).remove(&inbound_spi);
        lock(&self.shared.send).remove(inbound_spi);
    }

    /// The counters of a Child SA, by inbound SPI.
    pub fn counters(&self, inbound_spi: u32) -> Option<SaCounters> {
        let inbound = lock(&self.shared.inbound)
            .get(&inbound_spi)?
            .inbound
            .sa
            .counters;
        let outbound = lock(&self.shared.send)
            .sas
            .get(&inbound_spi)
            .map(|o| o.sa.counters)
            .unwrap_or_default();
        Some(SaCounters { inbound, outbound })
    }

    /// Packets dropped for want of an SA.
    pub fn no_sa_drops(&self) -> u64 {
        self.shared.no_sa.load(Ordering::Relaxed)
    }
}

/// The most datagrams one UDP GSO send may carry (UDP_MAX_SEGMENTS of
/// the kernels before 6.9), and the most octets (one UDP datagram's).
const GSO_SEGMENTS: usize = 64;
const GSO_OCTETS: usize = 65_000;

async fn send_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut read = vec![0u8; VNET_HDR_LEN + 65536];
    let mut sealed = Vec::with_capacity(GSO_OCTETS + 2048);
    loop {
        let n = match shared.tun.read(&mut read).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("TUN read: {e}");
                return;
            }
        };
        let outgoing = match offload::prepare(&mut read[..n]) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!("TUN packet dropped: {e:?}");
                continue;
            }
        };
        let (dst, count) = match &outgoing {
            // IPv6 only.
            Outgoing::One(p) => match offload::destination(p) {
                Some(d) => (d, 1),
                None => continue,
            },
            Outgoing::Tcp(segments) => (segments.destination(), segments.count()),
        };
        // Sealed in runs that one UDP GSO send carries: equal sizes but
        // the last of each run.
        let mut next = 0;
        while next < count {
            sealed.clear();
            let mut segment = 0;
            let remote = {
                let mut send = lock(&shared.send);
                let Some(child) = send.route(dst) else {
                    shared
                        .no_sa
                        .fetch_add((count - next) as u64, Ordering::Relaxed);
                    break;
                };
                let Some(out) = send.sas.get_mut(&child) else {
                    break;
                };
                // A run's first segment always fits (`segment` is 0 then).
                while next < count && sealed.len() + segment <= GSO_OCTETS {
                    let before = sealed.len();
                    let sealing = match &outgoing {
                        Outgoing::One(p) => out
                            .sa
                            .seal_appending(IPV6, &mut sealed, |o| o.extend_from_slice(p)),
                        Outgoing::Tcp(segments) => out
                            .sa
                            .seal_appending(IPV6, &mut sealed, |o| segments.append(next, o)),
                    };
                    if sealing.is_err() {
                        sealed.truncate(before);
                        next = count;
                        break;
                    }
                    next += 1;
                    let len = sealed.len() - before;
                    if segment == 0 {
                        segment = len;
                    }
                    if len < segment || (sealed.len() / segment) >= GSO_SEGMENTS {
                        break;
                    }
                }
                out.remote
            };
            if sealed.is_empty() {
                break;
            }
            if let Err(e) = shared
                .segments
                .send(&socket, remote, &sealed, segment)
                .await
            {
                tracing::debug!("ESP to {remote}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sixgate_proto::crypto::EspKeys;
    use sixgate_proto::wire::TsRange;

    fn sa(outbound_spi: u32) -> EspSa {
        let keys = EspKeys::AesGcm16 {
            key: vec![7; 16],
            salt: [1; 4],
        };
        EspSa::new(outbound_spi, &keys, false).unwrap()
    }

    fn host(a: &str) -> TrafficSelector {
        let a: Ipv6Addr = a.parse().unwrap();
        TrafficSelector::Ipv6(TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start: a,
            end: a,
        })
    }

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 4500))
    }

    #[test]
    fn two_peers_choosing_the_same_spi_keep_their_own_routes() {
        let mut t = SendTable::default();
        let (a, b) = (
            "2001:db8::a".parse().unwrap(),
            "2001:db8::b".parse().unwrap(),
        );
        // Both peers picked outbound SPI 0x1234; our inbound SPIs differ.
        t.insert(100, sa(0x1234), peer(2), &[host("2001:db8::a")]);
        t.insert(200, sa(0x1234), peer(3), &[host("2001:db8::b")]);
        assert_eq!(t.route(a), Some(100));
        assert_eq!(t.route(b), Some(200));
        assert_eq!(t.sas[&100].remote, peer(2));
        t.remove(200);
        assert_eq!(t.route(a), Some(100), "removing B leaves A alone");
        assert_eq!(t.route(b), None);
    }

    #[test]
    fn after_a_rekey_collision_either_new_sa_may_go() {
        let mut t = SendTable::default();
        let a: Ipv6Addr = "2001:db8::a".parse().unwrap();
        t.insert(1, sa(11), peer(2), &[host("2001:db8::a")]);
        // Both ends rekeyed at once: two new SAs for the same selector.
        t.insert(2, sa(12), peer(2), &[host("2001:db8::a")]);
        t.insert(3, sa(13), peer(2), &[host("2001:db8::a")]);
        t.remove(1);
        assert_eq!(t.route(a), Some(3), "the newest carries the traffic");
        // The redundant one deleted is the one routing: the other takes over.
        t.remove(3);
        assert_eq!(t.route(a), Some(2));
        t.remove(2);
        assert_eq!(t.route(a), None);
    }
}
