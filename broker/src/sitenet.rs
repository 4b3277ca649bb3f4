//! The broker's side of the DMZ sites, installed from the site store and
//! removed on stop: the WireGuard device and its peers, a route per site
//! prefix while the site is alive (and an unreachable route beneath it
//! always, so a dead site's prefix is answered with ICMPv6 unreachable
//! rather than leaking to the default route), policy rules when a routing
//! table is configured, and nftables for NAT, MSS clamping and source
//! filtering.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sixgate_dataplane::netconf;
use sixgate_dataplane::wireguard::{key_hex, Device, Peer, PeerStats};

use crate::config::{Sites, WireGuardBackend};
use crate::siteconfig::SiteFiles;
use crate::sites::{check_public_key, Site, SiteStore};

/// Metric of the unreachable routes: below every real route.
const UNREACHABLE_METRIC: &str = "4000000000";
/// Name of the broker's nftables table.
const NFT_TABLE: &str = "sixgate_sites";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    key: [u8; 32],
    /// Sites whose prefix route points into the tunnel.
    routed: HashSet<String>,
    /// Last received octet count of each site, and when it last grew.
    heard: HashMap<String, (u64, Instant)>,
}

/// `ip -6 route VERB ARGS [table T]`, in the sites' table if one is set.
fn route_cmd(cfg: &Sites, verb: &str, args: &[&str]) -> Result<(), String> {
    let table = cfg.table.map(|t| t.to_string());
    let mut argv = vec!["-6", "route", verb];
    argv.extend_from_slice(args);
    if let Some(t) = &table {
        argv.extend(["table", t.as_str()]);
    }
    netconf::ip(&argv).map_err(|e| e.to_string())
}

fn peer(site: &Site) -> Result<Peer, String> {
    Ok(Peer {
        public_key: check_public_key(&site.public_key).map_err(|e| e.to_string())?,
        preshared_key: check_public_key(&site.preshared_key).map_err(|e| e.to_string())?,
        allowed_ips: vec![
            site.prefix_text(),
            format!("{}/128", site.transfer6),
            format!("{}/32", site.transfer4),
        ],
    })
}

impl SiteNet {
    /// Brings up the WireGuard device with every stored site (what is in
    /// sled is what the kernel gets) and the routes, rules and nftables.
    pub fn start(cfg: &Sites, store: SiteStore) -> Result<SiteNet, String> {
        let key = store.broker_key().map_err(|e| e.to_string())?;
        store
            .release_expired(now_secs())
            .map_err(|e| e.to_string())?;
        // A crash may have left the device of an earlier run behind.
        let _ = netconf::del_link(&cfg.interface.0);
        let backend = match cfg.backend {
            WireGuardBackend::Auto => "auto",
            WireGuardBackend::Kernel => "kernel",
            WireGuardBackend::Userspace => "userspace",
        };
        let device = Device::start(&cfg.interface.0, backend).map_err(|e| e.to_string())?;
        let mut net = SiteNet {
            cfg: cfg.clone(),
            store,
            device: Some(device),
            key,
            routed: HashSet::new(),
            heard: HashMap::new(),
        };
        if let Err(e) = net.install() {
            net.stop();
            return Err(e);
        }
        Ok(net)
    }

    fn device(&self) -> Result<&Device, String> {
        self.device
            .as_ref()
            .ok_or_else(|| "the WireGuard device is stopped".to_string())
    }

    fn install(&mut self) -> Result<(), String> {
        let sites = self.store.list().map_err(|e| e.to_string())?;
        let peers: Vec<Peer> = sites.iter().map(peer).collect::<Result<_, _>>()?;
        let dev = &self.cfg.interface.0;
        self.device()?
            .configure(&self.key, self.cfg.listen_port, &peers)
            .map_err(|e| e.to_string())?;
        let net6 = self.store.transfer6_net().map_err(|e| e.to_string())?;
        let (_, len4) = self.store.transfer4_net();
        netconf::ip(&["link", "set", dev, "mtu", "1420", "up"]).map_err(|e| e.to_string())?;
        let a6 = format!("{}/64", std::net::Ipv6Addr::from(u128::from(net6) | 1));
        let a4 = format!("{}/{len4}", self.store.broker_transfer4());
        netconf::ip(&["-6", "addr", "replace", &a6, "dev", dev, "nodad"])
            .map_err(|e| e.to_string())?;
        netconf::ip(&["-4", "addr", "replace", &a4, "dev", dev]).map_err(|e| e.to_string())?;
        netconf::enable_ipv6_forwarding().map_err(|e| e.to_string())?;
        netconf::enable_ipv4_forwarding().map_err(|e| e.to_string())?;
        for site in &sites {
            self.install_site(site)?;
        }
        self.apply_nft(&sites)
    }

    fn install_site(&self, site: &Site) -> Result<(), String> {
        let prefix = site.prefix_text();
        route_cmd(
            &self.cfg,
            "replace",
            &["unreachable", &prefix, "metric", UNREACHABLE_METRIC],
        )?;
        if let Some(t) = self.cfg.table {
            let t = t.to_string();
            for dir in ["from", "to"] {
                // `ip rule add` does not replace: delete a left-over first.
                let _ = netconf::ip(&["-6", "rule", "del", dir, &prefix, "lookup", &t]);
                netconf::ip(&["-6", "rule", "add", dir, &prefix, "lookup", &t])
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn uninstall_site(&mut self, site: &Site) {
        let prefix = site.prefix_text();
        self.unroute(site);
        let _ = route_cmd(
            &self.cfg,
            "del",
            &["unreachable", &prefix, "metric", UNREACHABLE_METRIC],
        );
        if let Some(t) = self.cfg.table {
            for dir in ["from", "to"] {
                let _ = netconf::ip(&["-6", "rule", "del", dir, &prefix, "lookup", &t.to_string()]);
            }
        }
    }

    fn route(&mut self, site: &Site) -> Result<(), String> {
        route_cmd(
            &self.cfg,
            "replace",
            &[&site.prefix_text(), "dev", &self.cfg.interface.0],
        )?;
        self.routed.insert(site.name.clone());
        Ok(())
    }

    fn unroute(&mut self, site: &Site) {
        if self.routed.remove(&site.name) {
            let _ = route_cmd(
                &self.cfg,
                "del",
                &[&site.prefix_text(), "dev", &self.cfg.interface.0],
            );
        }
    }

    fn apply_nft(&self, sites: &[Site]) -> Result<(), String> {
        let net6 = self.store.transfer6_net().map_err(|e| e.to_string())?;
        let (net4, len4) = self.store.transfer4_net();
        let mut sources: Vec<String> = sites.iter().map(Site::prefix_text).collect();
        sources.push(format!("{net6}/64"));
        let (wg, up) = (&self.cfg.interface.0, &self.cfg.uplink);
        let ruleset = format!(
            r#"table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{wg}" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
        oifname "{wg}" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
        iifname "{wg}" ip6 saddr != {{ {sources} }} drop
        iifname "{wg}" ip saddr != {net4}/{len4} drop
        iifname "{wg}" oifname != "{up}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{up}" ip saddr {net4}/{len4} masquerade
    }}
}}
"#,
            sources = sources.join(", "),
        );
        netconf::nft(&ruleset).map_err(|e| e.to_string())
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
            .and_then(|p| self.device()?.set_peer(&p).map_err(|e| e.to_string()))
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
        uplink: &str,
        lan: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let site = self.get(name)?;
        let broker = self.public_key();
        let files = SiteFiles {
            site: &site,
            broker_public_key: &broker,
            endpoint: &self.cfg.endpoint.0.to_string(),
            transfer4_length: self.store.transfer4_net().1,
            keepalive: (self.cfg.peer_timeout / 3).clamp(1, 25),
            uplink,
            lan,
        };
        Ok(files.all())
    }

    fn stats(&self) -> HashMap<String, PeerStats> {
        self.device
            .as_ref()
            .and_then(|d| d.peer_stats().ok())
            .unwrap_or_default()
    }

    /// Every site with its counters.
    pub fn list(&self) -> Result<Vec<SiteState>, String> {
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
                        eprintln!("sixgate-broker: site {}: {e}", site.name);
                    }
                }
                (false, true) => self.unroute(&site),
                _ => {}
            }
        }
    }

    /// Removes everything installed: routes, rules, nftables, the device.
    pub fn stop(&mut self) {
        if let Ok(sites) = self.store.list() {
            for site in sites {
                self.uninstall_site(&site);
            }
        }
        let _ = netconf::nft(&format!(
            "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        ));
        if let Some(d) = self.device.take() {
            d.stop();
        }
    }
}
