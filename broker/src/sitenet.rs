//! The broker's side of the DMZ sites, installed from the site store and
//! removed on stop: the WireGuard device and its peers, a route per site
//! prefix while the site is alive (and an unreachable route beneath it
//! always, so a dead site's prefix is answered with ICMPv6 unreachable
//! rather than leaking to the default route), policy rules when a routing
//! table is configured, and nftables for NAT, MSS clamping and source
//! filtering.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sixgate_dataplane::nft::{SitesRules, SITES};
use sixgate_dataplane::rtnl::{Route, RouteTarget, Rtnl, Rule, RT_TABLE_MAIN, SITES_PROTOCOL};
use sixgate_dataplane::wireguard::{self, key_hex, Device, Peer, PeerStats};

use crate::config::{Sites, WireGuardBackend};
use crate::siteconfig::{RouterOptions, SiteFiles};
use crate::sites::{check_public_key, decode_key, Site, SiteStore};

/// Metric of the unreachable routes: below every real route.
const UNREACHABLE_METRIC: u32 = 4_000_000_000;
/// Metric of a live site's prefix route.
const SITE_METRIC: u32 = 1024;
/// The WireGuard link's MTU: 1500 minus the IPv4 and WireGuard headers.
const WIREGUARD_MTU: u32 = 1420;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// A site as `site list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SiteState {
    /// The site.
    pub site: Site,
    /// Its WireGuard counters.
    pub last_handshake: u64,
    /// Octets received from it.
    pub rx_bytes: u64,
    /// Octets sent to it.
    pub tx_bytes: u64,
    /// Whether its prefix is routed to it now.
    pub up: bool,
}

/// The running sites.
pub struct SiteNet {
    cfg: Sites,
    store: SiteStore,
    device: Option<Device>,
    /// Routes and rules go in with the sites' protocol number.
    rtnl: Rtnl,
    /// The WireGuard link's index.
    link: u32,
    key: [u8; 32],
    /// Sites whose prefix route points into the tunnel.
    routed: HashSet<String>,
    /// Last received octet count of each site, and when it last grew.
    heard: HashMap<String, (u64, Instant)>,
    /// The road warriors' pool, which sites may reach.
    road_warriors: String,
}

fn peer(site: &Site) -> Result<Peer, String> {
    Ok(Peer {
        public_key: check_public_key(&site.public_key).map_err(|e| e.to_string())?,
        preshared_key: decode_key(&site.preshared_key).map_err(|e| e.to_string())?,
        allowed_ips: vec![
            (IpAddr::V6(site.prefix), site.prefix_length),
            (IpAddr::V6(site.transfer6), 128),
            (IpAddr::V4(site.transfer4), 32),
        ],
    })
}

impl SiteNet {
    /// Brings up the WireGuard device with every stored site (what is in
    /// sled is what the kernel gets) and the routes, rules and nftables,
    /// after removing what a killed run left: its routes and rules (by
    /// their protocol number), its device or wireguard-go, its table.
    /// Sites may reach the road warriors of `road_warriors` (the pool).
    pub fn start(cfg: &Sites, store: SiteStore, road_warriors: String) -> Result<SiteNet, String> {
        let key = store.broker_key().map_err(|e| e.to_string())?;
        store
            .release_expired(now_secs())
            .map_err(|e| e.to_string())?;
        let mut rtnl = Rtnl::open(SITES_PROTOCOL).map_err(|e| format!("rtnetlink: {e}"))?;
        let stale = rtnl.flush_own_routes().map_err(io)? + rtnl.flush_own_rules().map_err(io)?;
        if stale > 0 {
            tracing::info!("removed {stale} site routes and rules of an earlier run");
        }
        let backend = match cfg.backend {
            WireGuardBackend::Auto => wireguard::Backend::Auto,
            WireGuardBackend::Kernel => wireguard::Backend::Kernel,
            WireGuardBackend::Userspace => wireguard::Backend::Userspace,
        };
        let name = &cfg.interface.0;
        let device = Device::start(name, backend, &mut rtnl)
            .map_err(|e| format!("WireGuard device {name}: {e}"))?;
        tracing::info!(
            "sites on {} WireGuard device {name}",
            if device.is_kernel() {
                "a kernel"
            } else {
                "a wireguard-go"
            }
        );
        let link = rtnl.link_index(name).map_err(io)?;
        let mut net = SiteNet {
            cfg: cfg.clone(),
            store,
            device: Some(device),
            rtnl,
            link,
            key,
            routed: HashSet::new(),
            heard: HashMap::new(),
            road_warriors,
        };
        if let Err(e) = net.install() {
            net.stop();
            return Err(e);
        }
        Ok(net)
    }

    fn device(&mut self) -> Result<&mut Device, String> {
        self.device
            .as_mut()
            .ok_or_else(|| "the WireGuard device is stopped".to_string())
    }

    fn table(&self) -> u32 {
        self.cfg.table.unwrap_or(RT_TABLE_MAIN)
    }

    fn install(&mut self) -> Result<(), String> {
        let sites = self.store.list().map_err(|e| e.to_string())?;
        let peers: Vec<Peer> = sites.iter().map(peer).collect::<Result<_, _>>()?;
        let (key, port) = (self.key, self.cfg.listen_port);
        self.device()?.configure(&key, port, &peers).map_err(io)?;
        let net6 = self.store.transfer6_net().map_err(|e| e.to_string())?;
        let (_, len4) = self.store.transfer4_net();
        let broker4 = self.store.broker_transfer4();
        self.rtnl
            .set_link_up(self.link, WIREGUARD_MTU)
            .map_err(io)?;
        let broker6 = Ipv6Addr::from(u128::from(net6) | 1);
        self.rtnl
            .replace_address(self.link, IpAddr::V6(broker6), 64)
            .map_err(io)?;
        self.rtnl
            .replace_address(self.link, IpAddr::V4(broker4), len4)
            .map_err(io)?;
        for site in &sites {
            self.install_site(site)?;
        }
        self.apply_nft(&sites)
    }

    fn prefix(site: &Site) -> (IpAddr, u8) {
        (IpAddr::V6(site.prefix), site.prefix_length)
    }

    fn unreachable(&self, site: &Site) -> Route {
        Route {
            dst: Self::prefix(site),
            target: RouteTarget::Unreachable,
            table: self.table(),
            metric: UNREACHABLE_METRIC,
            src: None,
        }
    }

    fn live(&self, site: &Site) -> Route {
        Route {
            dst: Self::prefix(site),
            target: RouteTarget::Link(self.link),
            table: self.table(),
            metric: SITE_METRIC,
            src: None,
        }
    }

    fn rules(&self, site: &Site) -> Vec<Rule> {
        let Some(table) = self.cfg.table else {
            return Vec::new();
        };
        [true, false]
            .into_iter()
            .map(|from| Rule {
                prefix: Self::prefix(site),
                from,
                table,
            })
            .collect()
    }

    fn install_site(&mut self, site: &Site) -> Result<(), String> {
        let unreachable = self.unreachable(site);
        self.rtnl.replace_route(&unreachable).map_err(io)?;
        for rule in self.rules(site) {
            self.rtnl.add_rule(&rule).map_err(io)?;
        }
        Ok(())
    }

    fn uninstall_site(&mut self, site: &Site) {
        self.unroute(site);
        let unreachable = self.unreachable(site);
        let _ = self.rtnl.remove_route(&unreachable);
        for rule in self.rules(site) {
            let _ = self.rtnl.delete_rule(&rule);
        }
    }

    fn route(&mut self, site: &Site) -> Result<(), String> {
        let live = self.live(site);
        self.rtnl.replace_route(&live).map_err(io)?;
        self.routed.insert(site.name.clone());
        Ok(())
    }

    fn unroute(&mut self, site: &Site) {
        if self.routed.remove(&site.name) {
            let live = self.live(site);
            let _ = self.rtnl.remove_route(&live);
        }
    }

    fn apply_nft(&self, sites: &[Site]) -> Result<(), String> {
        let net6 = self.store.transfer6_net().map_err(|e| e.to_string())?;
        let (net4, len4) = self.store.transfer4_net();
        let mut sources: Vec<String> = sites.iter().map(Site::prefix_text).collect();
        sources.push(format!("{net6}/64"));
        let rules = SitesRules {
            wireguard: &self.cfg.interface.0,
            uplink4: self.cfg.uplink4(),
            uplink6: self.cfg.uplink6(),
            sources6: &sources,
            transfer4: &format!("{net4}/{len4}"),
            road_warriors: Some(&self.road_warriors),
        };
        SITES.replace(&rules.render()).map_err(io)
    }

    /// Adds a site and configures it at once.
    pub fn add(
        &mut self,
        name: &str,
        public_key: Option<&str>,
        prefix_length: Option<u8>,
    ) -> Result<Site, String> {
        let len = prefix_length.unwrap_or(self.cfg.prefix_length);
        let site = self
            .store
            .add(name, public_key, len, now_secs())
            .map_err(|e| e.to_string())?;
        let done = peer(&site)
            .and_then(|p| self.device()?.set_peer(&p).map_err(io))
            .and_then(|()| self.install_site(&site))
            .and_then(|()| self.apply_nft(&self.store.list().map_err(|e| e.to_string())?));
        if let Err(e) = done {
            // Nothing half-configured: take it back out.
            let _ = self.remove(name);
            return Err(e);
        }
        Ok(site)
    }

    /// Removes a site: peer, routes and rules go now, the prefix after the
    /// hold-down.
    pub fn remove(&mut self, name: &str) -> Result<Site, String> {
        let site = self
            .store
            .remove(name, now_secs())
            .map_err(|e| e.to_string())?;
        if let Ok(p) = peer(&site) {
            let _ = self.device()?.remove_peer(&p.public_key);
        }
        self.uninstall_site(&site);
        self.heard.remove(name);
        self.apply_nft(&self.store.list().map_err(|e| e.to_string())?)?;
        Ok(site)
    }

    /// A site by name.
    pub fn get(&self, name: &str) -> Result<Site, String> {
        self.store.get(name).map_err(|e| e.to_string())
    }

    /// The broker's WireGuard public key (base64).
    pub fn public_key(&self) -> String {
        use base64::Engine;
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.key));
        base64::engine::general_purpose::STANDARD.encode(public.as_bytes())
    }

    /// The DMZ router's files for a site.
    pub fn files(
        &self,
        name: &str,
        router: &RouterOptions,
    ) -> Result<Vec<(String, String)>, String> {
        router.check()?;
        let site = self.get(name)?;
        let broker = self.public_key();
        let files = SiteFiles {
            site: &site,
            broker_public_key: &broker,
            endpoint: &self.cfg.endpoint.0,
            transfer4_length: self.store.transfer4_net().1,
            keepalive: (self.cfg.peer_timeout / 3).clamp(1, 25),
            router,
        };
        Ok(files.all())
    }

    fn stats(&mut self) -> HashMap<String, PeerStats> {
        self.device
            .as_mut()
            .and_then(|d| d.peer_stats().ok())
            .unwrap_or_default()
    }

    /// Every site with its counters.
    pub fn list(&mut self) -> Result<Vec<SiteState>, String> {
        let stats = self.stats();
        let sites = self.store.list().map_err(|e| e.to_string())?;
        Ok(sites
            .into_iter()
            .map(|site| {
                let s = check_public_key(&site.public_key)
                    .ok()
                    .and_then(|k| stats.get(&key_hex(&k)).cloned())
                    .unwrap_or_default();
                let up = self.routed.contains(&site.name);
                SiteState {
                    site,
                    last_handshake: s.last_handshake,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    up,
                }
            })
            .collect())
    }

    /// Routes each site's prefix into the tunnel while the site is heard
    /// from, and takes the route away (leaving the unreachable route) once
    /// it has been silent for `peer_timeout`.
    pub fn check_liveness(&mut self) {
        let stats = self.stats();
        let timeout = Duration::from_secs(self.cfg.peer_timeout);
        let Ok(sites) = self.store.list() else { return };
        for site in sites {
            let rx = check_public_key(&site.public_key)
                .ok()
                .and_then(|k| stats.get(&key_hex(&k)))
                .map_or(0, |s| s.rx_bytes);
            let now = Instant::now();
            let entry = self
                .heard
                .entry(site.name.clone())
                .or_insert((0, now - timeout));
            if rx > entry.0 {
                *entry = (rx, now);
            }
            let alive = rx > 0 && now.duration_since(entry.1) < timeout;
            match (alive, self.routed.contains(&site.name)) {
                (true, false) => {
                    if let Err(e) = self.route(&site) {
                        tracing::warn!("routing site {}: {e}", site.name);
                    }
                }
                (false, true) => self.unroute(&site),
                _ => {}
            }
        }
    }

    /// Takes what a reload may change while the sites stay connected: the
    /// endpoint and keepalive their files name, the default prefix length,
    /// the liveness timeout, the hold-down and the uplinks (the nftables
    /// table is replaced in one transaction). What would move the sites'
    /// device, port, prefixes or routes is kept as it is; its keys are
    /// returned, to be named.
    pub fn reconfigure(&mut self, fresh: &Sites) -> Result<Vec<&'static str>, String> {
        let old = &self.cfg;
        let at_start: Vec<&'static str> = [
            ("sites.prefix", old.prefix != fresh.prefix),
            ("sites.transfer4", old.transfer4 != fresh.transfer4),
            ("sites.interface", old.interface != fresh.interface),
            ("sites.listen_port", old.listen_port != fresh.listen_port),
            ("sites.table", old.table != fresh.table),
            ("sites.backend", old.backend != fresh.backend),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        let kept = Sites {
            prefix: old.prefix,
            transfer4: old.transfer4,
            interface: old.interface.clone(),
            listen_port: old.listen_port,
            table: old.table,
            backend: old.backend,
            ..fresh.clone()
        };
        let previous = std::mem::replace(&mut self.cfg, kept);
        let sites = self.store.list().map_err(|e| e.to_string())?;
        if let Err(e) = self.apply_nft(&sites) {
            self.cfg = previous;
            return Err(format!("the sites' nftables table: {e}"));
        }
        self.store.set_hold_down(self.cfg.hold_down);
        Ok(at_start)
    }

    /// Removes everything installed: routes, rules, nftables, the device.
    pub fn stop(&mut self) {
        if let Ok(sites) = self.store.list() {
            for site in sites {
                self.uninstall_site(&site);
            }
        }
        let _ = SITES.remove();
        if let Some(d) = self.device.take() {
            d.stop(&mut self.rtnl);
        }
    }
}
