//! Two endpoints wired together in memory: a virtual clock, a link that
//! can drop, duplicate and reorder, and an address pool.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use sixgate_proto::cert::TrustAnchors;
use sixgate_proto::endpoint::{
    AddressPool, Config, ConnectRequest, Endpoint, Event, SaId, Transmit,
};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::{classify_udp4500, Identification, Udp4500};

pub const CLIENT: &str = "192.0.2.2";
pub const BROKER: &str = "192.0.2.1";

/// A pool of `size` addresses after `base`, kept in memory, shared with
/// the test so it can look at the leases.
#[derive(Clone, Default)]
pub struct MemPool(pub Arc<Mutex<PoolState>>);

#[derive(Default)]
pub struct PoolState {
    pub size: u32,
    pub leases: HashMap<Vec<u8>, Ipv6Addr>,
    pub released: Vec<Ipv6Addr>,
}

impl MemPool {
    pub fn new(size: u32) -> Self {
        MemPool(Arc::new(Mutex::new(PoolState {
            size,
            ..Default::default()
        })))
    }
}

impl AddressPool for MemPool {
    fn assign(&mut self, identity: &CanonicalIdentity) -> Option<Ipv6Addr> {
        let mut s = self.0.lock().unwrap();
        if let Some(a) = s.leases.get(&identity.storage_key()) {
            return Some(*a);
        }
        let n = s.leases.len() as u32;
        if n >= s.size {
            return None;
        }
        let a = Ipv6Addr::from(
            u128::from("2001:db8:100::100".parse::<Ipv6Addr>().unwrap()) + u128::from(n),
        );
        s.leases.insert(identity.storage_key(), a);
        Some(a)
    }
    fn release(&mut self, _identity: &CanonicalIdentity, address: Ipv6Addr) {
        self.0.lock().unwrap().released.push(address);
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
    pub sent: Vec<Transmit>,
}

#[derive(Default, Clone, Copy)]
pub struct Link {
    /// Percent of datagrams lost.
    pub loss: u32,
    /// Percent duplicated.
    pub duplicate: u32,
    /// Percent delivered after the next one.
    pub reorder: u32,
}

pub struct Lab {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub link: Link,
    /// Datagrams to nodes with these IPs are dropped (a dead peer).
    pub blackhole: Vec<IpAddr>,
    rng: rand_chacha::ChaCha20Rng,
    wire: VecDeque<Transmit>,
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
                sent: Vec::new(),
            })
            .collect();
        Lab {
            now,
            nodes,
            link: Link::default(),
            blackhole: Vec::new(),
            rng: super::rng(seed),
            wire: VecDeque::new(),
        }
    }

    /// Client (node 0) and broker (node 1) with a pool of `pool` addresses.
    pub fn pair(seed: u64, client: Config, broker: Config, pool: &MemPool) -> Lab {
        let mut lab = Lab::new(seed, vec![(CLIENT, client), (BROKER, broker)]);
        lab.nodes[1].ep.set_address_pool(Box::new(pool.clone()));
        lab
    }

    pub fn client(&mut self) -> &mut Node {
        &mut self.nodes[0]
    }

    pub fn broker(&mut self) -> &mut Node {
        &mut self.nodes[1]
    }

    pub fn connect(&mut self) -> SaId {
        let now = self.now;
        self.nodes[0].ep.connect(now, connect_request())
    }

    fn collect(&mut self) {
        for node in &mut self.nodes {
            while let Some(t) = node.ep.poll_transmit() {
                node.sent.push(t.clone());
                self.wire.push_back(t);
            }
            while let Some(e) = node.ep.poll_event() {
                node.events.push(e);
            }
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && self.rng.next_u32() % 100 < percent
    }

    /// Delivers everything in flight (and what it causes) at the current time.
    pub fn deliver(&mut self) {
        self.collect();
        let mut budget = 10_000;
        while let Some(t) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if self.chance(self.link.loss) || self.blackhole.contains(&t.remote.ip()) {
                continue;
            }
            if self.chance(self.link.duplicate) {
                self.wire.push_back(t.clone());
            }
            if self.chance(self.link.reorder) && !self.wire.is_empty() {
                self.wire.insert(1, t);
                continue;
            }
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
        let next = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
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

pub fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}
