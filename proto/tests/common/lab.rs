//! Endpoints wired together in memory: a virtual clock, a link that can
//! drop, duplicate, reorder and delay datagrams and drops those above its
//! MTU, and an address pool that answers the responder's address requests
//! (at once, or after a delay, as a slow disk would).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use sixgate_proto::cert::TrustAnchors;
use sixgate_proto::endpoint::{Config, ConnectRequest, Endpoint, Event, SaId, Transmit};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::{classify_udp4500, Identification, Udp4500};

pub const CLIENT: &str = "192.0.2.2";
pub const BROKER: &str = "192.0.2.1";

/// A pool of `size` addresses after `base`, kept in memory, shared with
/// the test so it can look at the leases. Like the daemons' admission, it
/// counts the SAs holding each address: a lease is released when the last
/// of them goes (a reconnect overlaps the old SA).
#[derive(Clone, Default)]
pub struct MemPool(pub Arc<Mutex<PoolState>>);

#[derive(Default)]
pub struct PoolState {
    pub size: u32,
    pub leases: HashMap<Vec<u8>, Ipv6Addr>,
    pub holders: HashMap<Ipv6Addr, usize>,
    pub released: Vec<Ipv6Addr>,
}

impl MemPool {
    pub fn new(size: u32) -> Self {
        MemPool(Arc::new(Mutex::new(PoolState {
            size,
            ..Default::default()
        })))
    }

    pub fn assign(&self, identity: &CanonicalIdentity) -> Option<Ipv6Addr> {
        let mut s = self.0.lock().unwrap();
        let a = match s.leases.get(&identity.storage_key()) {
            Some(a) => *a,
            None => {
                let n = s.leases.len() as u32;
                if n >= s.size {
                    return None;
                }
                let a = Ipv6Addr::from(
                    u128::from("2001:db8:100::100".parse::<Ipv6Addr>().unwrap()) + u128::from(n),
                );
                s.leases.insert(identity.storage_key(), a);
                a
            }
        };
        *s.holders.entry(a).or_default() += 1;
        Some(a)
    }

    pub fn release(&self, _identity: &CanonicalIdentity, address: Ipv6Addr) {
        let mut s = self.0.lock().unwrap();
        let n = s.holders.entry(address).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            s.released.push(address);
        }
    }
}

pub fn config(kind: &str, who: &str, identity: Identification) -> Config {
    let chain = super::certs(&format!("{kind}/{who}.pem"));
    let key = Arc::new(super::private_key(&format!("{kind}/{who}.key")));
    let anchors = TrustAnchors::new(super::certs(&format!("{kind}/ca.pem"))).unwrap();
    let mut c = Config::new(identity, chain, key, anchors);
    c.dns = vec!["2001:db8:ffff::53".parse().unwrap()];
    c
}

pub fn broker_config(kind: &str) -> Config {
    config(kind, "broker", Identification::fqdn("broker.example.net"))
}

pub fn client_config(kind: &str) -> Config {
    config(kind, "client", Identification::rfc822("client@example.net"))
}

pub fn connect_request() -> ConnectRequest {
    ConnectRequest {
        remote: SocketAddr::new(BROKER.parse().unwrap(), 500),
        local: SocketAddr::new(CLIENT.parse().unwrap(), 500),
        remote_identity: Some(CanonicalIdentity::parse("broker.example.net").unwrap()),
        request_address: true,
        initial_contact: true,
        local_ts: vec![sixgate_proto::endpoint::ts::ipv6_any()],
        remote_ts: vec![sixgate_proto::endpoint::ts::ipv6_any()],
    }
}

pub struct Node {
    pub ep: Endpoint,
    pub ip: IpAddr,
    pub events: Vec<Event>,
    /// When each of `events` came, on the lab's clock.
    pub event_times: Vec<Instant>,
    pub sent: Vec<Transmit>,
    /// Where its address requests go (responders).
    pub pool: Option<MemPool>,
    /// How long the pool takes to make a lease durable.
    pub pool_delay: Duration,
    /// Address requests being written: (when done, SA, address).
    admitting: Vec<(Instant, SaId, Option<Ipv6Addr>)>,
}

#[derive(Clone, Copy)]
pub struct Link {
    /// Percent of datagrams lost.
    pub loss: u32,
    /// Percent duplicated.
    pub duplicate: u32,
    /// Percent delivered after the next one.
    pub reorder: u32,
    /// One-way delay of every datagram.
    pub latency: Duration,
    /// Datagrams whose IPv4 packet (UDP payload + 28) exceeds this are lost.
    pub mtu: usize,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            loss: 0,
            duplicate: 0,
            reorder: 0,
            latency: Duration::ZERO,
            mtu: 65535,
        }
    }
}

/// A NAT in front of the node at `inside`: what it sends appears from
/// `public`, its ports shifted by `port_shift`, and only datagrams to that
/// mapping reach it. Changing `public` or `port_shift` is a rebinding: the
/// old mapping is gone.
#[derive(Clone, Copy)]
pub struct Masquerade {
    pub inside: IpAddr,
    pub public: IpAddr,
    pub port_shift: u16,
}

impl Masquerade {
    /// The datagram as it leaves the NAT, or `None` if no mapping takes it.
    fn translate(&self, mut t: Transmit) -> Option<Transmit> {
        if t.local.ip() == self.inside {
            t.local = SocketAddr::new(self.public, t.local.port() + self.port_shift);
        } else if t.remote.ip() == self.public {
            // Only the IKE ports are mapped (a shift that changed leaves
            // the old mapping's datagrams nowhere to go).
            let port = t
                .remote
                .port()
                .checked_sub(self.port_shift)
                .filter(|p| [500, 4500].contains(p))?;
            t.remote = SocketAddr::new(self.inside, port);
        } else if t.remote.ip() == self.inside {
            return None;
        }
        Some(t)
    }
}

pub struct Lab {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub link: Link,
    /// Datagrams to nodes with these IPs are dropped (a dead peer).
    pub blackhole: Vec<IpAddr>,
    /// Datagrams for which this holds are dropped (a peer that never
    /// sends some message).
    pub drop_if: Option<fn(&Transmit) -> bool>,
    /// Datagrams that exceeded the MTU.
    pub too_big: usize,
    /// A NAT in front of one node, if any.
    pub masquerade: Option<Masquerade>,
    /// More datagrams than this in one delivery are a message storm (a
    /// bug), unless a test of many SAs raises it.
    pub storm_limit: usize,
    rng: rand_chacha::ChaCha20Rng,
    /// In flight: when each arrives.
    wire: VecDeque<(Instant, Transmit)>,
}

impl Lab {
    pub fn new(seed: u64, configs: Vec<(&str, Config)>) -> Lab {
        let now = Instant::now();
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, (ip, c))| Node {
                ep: Endpoint::new(
                    Arc::new(c),
                    Box::new(super::rng(seed * 100 + i as u64)),
                    now,
                    super::NOW,
                ),
                ip: ip.parse().unwrap(),
                events: Vec::new(),
                event_times: Vec::new(),
                sent: Vec::new(),
                pool: None,
                pool_delay: Duration::ZERO,
                admitting: Vec::new(),
            })
            .collect();
        Lab {
            now,
            nodes,
            link: Link::default(),
            blackhole: Vec::new(),
            drop_if: None,
            too_big: 0,
            masquerade: None,
            storm_limit: 10_000,
            rng: super::rng(seed),
            wire: VecDeque::new(),
        }
    }

    /// Client (node 0) and broker (node 1) with a pool of `pool` addresses.
    pub fn pair(seed: u64, client: Config, broker: Config, pool: &MemPool) -> Lab {
        let mut lab = Lab::new(seed, vec![(CLIENT, client), (BROKER, broker)]);
        lab.nodes[1].pool = Some(pool.clone());
        lab
    }

    pub fn client(&mut self) -> &mut Node {
        &mut self.nodes[0]
    }

    pub fn broker(&mut self) -> &mut Node {
        &mut self.nodes[1]
    }

    /// The first IKE SA node `node` reported up.
    pub fn ike_sa(&self, node: usize) -> SaId {
        self.nodes[node]
            .events
            .iter()
            .find_map(|e| match e {
                Event::IkeSaUp { sa, .. } => Some(*sa),
                _ => None,
            })
            .expect("IKE SA up")
    }

    pub fn connect(&mut self) -> SaId {
        let now = self.now;
        self.nodes[0].ep.connect(now, connect_request())
    }

    /// Drains every node: events first (as the embedder must), answering
    /// address requests from the pool, then transmits onto the wire.
    fn collect(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            loop {
                let due: Vec<(SaId, Option<Ipv6Addr>)> = node
                    .admitting
                    .iter()
                    .filter(|(at, _, _)| *at <= now)
                    .map(|(_, sa, a)| (*sa, *a))
                    .collect();
                node.admitting.retain(|(at, _, _)| *at > now);
                for (sa, address) in due {
                    let held = node.ep.address_assigned(now, sa, address);
                    if let (false, Some(a), Some(pool)) = (held, address, &node.pool) {
                        pool.release(&CanonicalIdentity::parse("gone@x").unwrap(), a);
                    }
                }
                let mut any = false;
                while let Some(e) = node.ep.poll_event() {
                    any = true;
                    match (&e, &node.pool) {
                        (Event::AddressRequested { sa, identity }, Some(pool)) => {
                            let address = pool.assign(identity);
                            node.admitting.push((now + node.pool_delay, *sa, address));
                        }
                        (
                            Event::AddressReleased {
                                identity, address, ..
                            },
                            Some(pool),
                        ) => pool.release(identity, *address),
                        _ => {}
                    }
                    node.events.push(e);
                    node.event_times.push(now);
                }
                let ready = node.admitting.iter().any(|(at, _, _)| *at <= now);
                if !any && !ready {
                    break;
                }
            }
            while let Some(t) = node.ep.poll_transmit() {
                node.sent.push(t.clone());
                self.wire.push_back((now + self.link.latency, t));
            }
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && self.rng.next_u32() % 100 < percent
    }

    /// The next datagram that is due by now, if any.
    fn next_due(&mut self) -> Option<Transmit> {
        let now = self.now;
        let i = self.wire.iter().position(|(at, _)| *at <= now)?;
        self.wire.remove(i).map(|(_, t)| t)
    }

    /// Delivers everything in flight that is due (and what it causes) at
    /// the current time.
    pub fn deliver(&mut self) {
        self.collect();
        let mut budget = self.storm_limit;
        while let Some(t) = self.next_due() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if t.payload.len() + 28 > self.link.mtu {
                self.too_big += 1;
                continue;
            }
            if self.chance(self.link.loss)
                || self.blackhole.contains(&t.remote.ip())
                || self.drop_if.is_some_and(|f| f(&t))
            {
                continue;
            }
            let at = self.now;
            if self.chance(self.link.duplicate) {
                self.wire.push_back((at, t.clone()));
            }
            if self.chance(self.link.reorder) && !self.wire.is_empty() {
                self.wire.insert(1, (at, t));
                continue;
            }
            let t = match self.masquerade {
                Some(m) => match m.translate(t) {
                    Some(t) => t,
                    None => continue,
                },
                None => t,
            };
            let now = self.now;
            if let Some(node) = self.nodes.iter_mut().find(|n| n.ip == t.remote.ip()) {
                let payload = if t.remote.port() == 4500 {
                    match classify_udp4500(&t.payload) {
                        Ok(Udp4500::Ike(ike)) => ike.to_vec(),
                        _ => continue,
                    }
                } else {
                    t.payload.clone()
                };
                node.ep.handle(now, t.local, t.remote, &payload);
            }
            self.collect();
        }
    }

    /// Advances the clock to the next timer (at most `max`), runs it, and
    /// delivers. Returns false if no timer is pending within `max`.
    pub fn tick(&mut self, max: Duration) -> bool {
        self.deliver();
        let timers: Vec<Instant> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.ep.poll_timeout())
            .collect();
        let arrivals = self.wire.iter().map(|(at, _)| *at);
        let admissions = self
            .nodes
            .iter()
            .flat_map(|n| n.admitting.iter().map(|(at, _, _)| *at));
        let next = timers.into_iter().chain(arrivals).chain(admissions).min();
        match next {
            Some(t) if t <= self.now + max => {
                self.now = self.now.max(t);
                let now = self.now;
                for n in &mut self.nodes {
                    n.ep.handle_timeout(now);
                }
                self.deliver();
                true
            }
            _ => {
                self.now += max;
                false
            }
        }
    }

    /// Runs until `done` holds, for at most `limit` of virtual time.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Lab) -> bool) -> bool {
        let end = self.now + limit;
        self.deliver();
        while !done(self) {
            if self.now >= end {
                return false;
            }
            let step = end - self.now;
            self.tick(step);
        }
        true
    }

    /// Runs for `d` of virtual time, timers included.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = end - self.now;
            if !self.tick(step) {
                break;
            }
        }
        self.now = self.now.max(end);
        self.deliver();
    }
}

/// The IKE message a datagram carries, for handing it to an endpoint by
/// hand (on the NAT-T port, without the non-ESP marker).
pub fn ike_message(t: &Transmit) -> Vec<u8> {
    match t.remote.port() {
        4500 => match classify_udp4500(&t.payload) {
            Ok(Udp4500::Ike(ike)) => ike.to_vec(),
            _ => Vec::new(),
        },
        _ => t.payload.clone(),
    }
}

pub fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

/// The IKE header's exchange type and whether it is a request, read from
/// the cleartext header of a datagram (port 500, or 4500 after the
/// non-ESP marker).
pub fn exchange_of(t: &Transmit) -> Option<(u8, bool)> {
    let ike = if t.remote.port() == 4500 {
        t.payload.get(4..)?
    } else {
        &t.payload[..]
    };
    Some((*ike.get(18)?, ike.get(19)? & 0x20 == 0))
}
