//! The broker's configuration file (TOML). Values are typed where they are
//! read (identities, networks, host:port, backends), so a configuration
//! that loaded needs no second parse; every problem names the file, the
//! key and what is wrong with it. Unknown keys are errors: a misspelt key
//! silently ignored is a misconfigured broker.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sixgate_dataplane::nft::Service;
use sixgate_proto::crypto::Legacy;
use sixgate_proto::endpoint::Unique;
use sixgate_proto::proposal::{EspPolicy, IkePolicy};
use sixgate_runtime::config::{
    self as common, ConfigError, DataplaneSection, HostPort, Identity, InterfaceName, Net4, Net6,
};
use sixgate_runtime::privileges::ProcessSection;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[ike]`: addresses, identity and credentials.
    pub ike: Ike,
    /// `[pool]`: the addresses handed to clients.
    pub pool: Pool,
    /// `[dataplane]`: how ESP is carried.
    #[serde(default)]
    pub dataplane: DataplaneSection,
    /// `[storage]`: where the state lives.
    pub storage: Storage,
    /// `[control]`: the control socket.
    #[serde(default)]
    pub control: Control,
    /// `[sites]`: DMZ sites over WireGuard, if any.
    pub sites: Option<Sites>,
    /// `[limits]`: what one identity, IKE SA or source may hold.
    #[serde(default)]
    pub limits: Limits,
    /// `[process]`: the user to run as.
    #[serde(default)]
    pub process: ProcessSection,
    /// `[metrics]`: Prometheus metrics, if wanted.
    pub metrics: Option<MetricsSection>,
}

/// The `[metrics]` section.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where `GET /metrics` is served (`127.0.0.1:9469`).
    pub listen: std::net::SocketAddr,
}

/// What one identity, one IKE SA and one source address may hold; the
/// defaults suit road warriors.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Live IKE SAs per identity (2: a reconnect may overlap the old SA).
    pub ike_sas_per_identity: usize,
    /// Child SAs per IKE SA, rekeyed ones not yet deleted included.
    pub child_sas_per_ike_sa: usize,
    /// Traffic selectors per side of a Child SA.
    pub traffic_selectors_per_child_sa: usize,
    /// Half-open IKE SAs one address may hold once it returns cookies
    /// (a CGNAT puts many clients behind one address).
    pub half_open_per_source: usize,
    /// Half-open IKE SAs in all.
    pub half_open: usize,
    /// Seconds after a peer's rekey before we delete the Child SA it
    /// replaced, if the peer has not.
    pub rekey_grace: u64,
    /// A second connection of a connected identity: "replace" (the old
    /// one gets a Delete), "keep" (the newcomer is refused) or "never"
    /// (both stay, up to ike_sas_per_identity).
    pub unique: Unique,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            ike_sas_per_identity: 2,
            child_sas_per_ike_sa: 2,
            traffic_selectors_per_child_sa: 16,
            half_open_per_source: 1024,
            half_open: 4096,
            rekey_grace: 30,
            unique: Unique::Replace,
        }
    }
}

/// Which WireGuard implementation carries the sites.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WireGuardBackend {
    /// The kernel's, where it has WireGuard; else wireguard-go.
    #[default]
    Auto,
    /// The kernel's.
    Kernel,
    /// wireguard-go.
    Userspace,
}

/// Where sites connect to: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SiteEndpoint(pub HostPort);

impl TryFrom<String> for SiteEndpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        HostPort::parse(&text, None).map(SiteEndpoint)
    }
}

/// DMZ sites over WireGuard: the delegated prefixes and the tunnel.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Sites {
    /// The prefix that site prefixes are cut from.
    pub prefix: Net6,
    /// The default length of a site's prefix (64, 60 or 56).
    #[serde(default = "default_site_length")]
    pub prefix_length: u8,
    /// IPv4 inside the tunnels, NAT'd out of the uplink.
    pub transfer4: Net4,
    /// The WireGuard interface.
    #[serde(default = "default_wg_interface")]
    pub interface: InterfaceName,
    /// Its UDP port.
    #[serde(default = "default_wg_port")]
    pub listen_port: u16,
    /// What sites connect to, host:port.
    pub endpoint: SiteEndpoint,
    /// The broker's upstream interface, for both families unless
    /// `uplink4` or `uplink6` name another.
    pub uplink: Option<String>,
    /// The IPv4 upstream (where the sites' IPv4 is NAT'd out).
    pub uplink4: Option<String>,
    /// The IPv6 upstream (where the sites' prefixes are routed from).
    pub uplink6: Option<String>,
    /// A routing table (with rules) for the site prefixes, instead of main.
    pub table: Option<u32>,
    /// Which WireGuard.
    #[serde(default)]
    pub backend: WireGuardBackend,
    /// A site that sent nothing for this many seconds is down: its prefix
    /// is answered with ICMPv6 unreachable until it is back. Sites send a
    /// keepalive every third of it.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout: u64,
    /// Seconds a removed site's prefix is held back before reuse.
    #[serde(default = "default_hold_down")]
    pub hold_down: u64,
}

impl Sites {
    /// The IPv4 upstream interface.
    pub fn uplink4(&self) -> &str {
        self.uplink4
            .as_deref()
            .or(self.uplink.as_deref())
            .unwrap_or_default()
    }

    /// The IPv6 upstream interface.
    pub fn uplink6(&self) -> &str {
        self.uplink6
            .as_deref()
            .or(self.uplink.as_deref())
            .unwrap_or_default()
    }
}

fn default_site_length() -> u8 {
    64
}
fn default_wg_interface() -> InterfaceName {
    InterfaceName("sgwg0".into())
}
fn default_wg_port() -> u16 {
    51820
}
fn default_peer_timeout() -> u64 {
    75
}
fn default_hold_down() -> u64 {
    7 * 24 * 3600
}

/// The `[ike]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ike {
    /// Addresses for UDP 500 and 4500.
    pub listen: Vec<IpAddr>,
    /// Our IKE identity (a host name, RFC 822 name, DN or address).
    pub identity: Identity,
    /// Our certificate; the chain may follow the leaf in the same file.
    pub certificate: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub private_key: PathBuf,
    /// Trust anchors for client certificates.
    pub ca: Vec<PathBuf>,
    /// CRL files (DER or PEM) of those CAs; re-read on SIGHUP.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Liveness check interval, seconds.
    #[serde(default = "default_dpd")]
    pub dpd_interval: u64,
    /// Follow clients that announce MOBIKE to their new addresses.
    #[serde(default = "default_mobike")]
    pub mobike: bool,
    /// IKE messages above this size are fragmented (RFC 7383).
    #[serde(default = "default_fragment_size")]
    pub fragment_size: usize,
    /// Child SA lifetime before rekeying, seconds.
    #[serde(default = "default_child_lifetime")]
    pub child_lifetime: u64,
    /// IKE SA lifetime before rekeying, seconds.
    #[serde(default = "default_ike_lifetime")]
    pub ike_lifetime: u64,
    /// IKE proposals in strongSwan's syntax (`aes256-sha256-modp2048`);
    /// `default` stands for sixgate's defaults.
    #[serde(default = "default_proposals")]
    pub proposals: Vec<String>,
    /// ESP proposals in strongSwan's syntax (`aes256gcm16`, `aes256-sha1`).
    #[serde(default = "default_proposals")]
    pub esp_proposals: Vec<String>,
    /// SHA-1 (in proposals, AUTH and certificate chains), MODP-1024 and
    /// short RSA keys, for clients that need them (Windows' defaults, iOS
    /// and macOS with RSA certificates).
    #[serde(default)]
    pub legacy: bool,
}

fn default_proposals() -> Vec<String> {
    vec!["default".into()]
}

fn default_child_lifetime() -> u64 {
    3600
}

fn default_ike_lifetime() -> u64 {
    4 * 3600
}

fn default_mobike() -> bool {
    true
}
fn default_dpd() -> u64 {
    30
}

fn default_fragment_size() -> usize {
    1280
}

/// The `[pool]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// The pool, "ADDRESS/LENGTH", /64 to /128.
    pub prefix: Net6,
    /// DNS servers handed to clients that ask.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// `[pool.static]`: identity = address.
    #[serde(default, rename = "static")]
    pub reservations: BTreeMap<Identity, Ipv6Addr>,
    /// Services on the broker itself that clients may use, as
    /// `PROTOCOL/PORT` (`["udp/53", "tcp/53"]`); ICMPv6 always.
    #[serde(default)]
    pub broker_services: Vec<BrokerService>,
    /// Whether clients may reach each other through the broker.
    #[serde(default)]
    pub client_to_client: bool,
    /// An interface on which the broker answers neighbour solicitations
    /// for each connected client's address (proxy NDP), for a pool inside
    /// a /64 that the provider puts on that link instead of routing it.
    pub proxy_ndp: Option<InterfaceName>,
}

/// A service on the broker, `udp/53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BrokerService(pub Service);

impl TryFrom<String> for BrokerService {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse().map(BrokerService)
    }
}

/// The broker's default device (TUN or XFRM interface).
pub const DEFAULT_DEVICE: &str = "sgb0";

/// The `[storage]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The state directory (leases, sites, control socket).
    pub path: PathBuf,
}

/// The `[control]` section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The control socket; default `<storage.path>/broker.sock`.
    pub socket: Option<PathBuf>,
}

/// The checked configuration, paths resolved against the file's directory.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file as written.
    pub file: File,
    /// The pool's first address.
    pub pool_base: Ipv6Addr,
    /// How many addresses it holds.
    pub pool_size: u64,
    /// Where the control socket is.
    pub control_socket: PathBuf,
    /// What IKE SAs may use.
    pub ike_policy: IkePolicy,
    /// What Child SAs may use.
    pub esp_policy: EspPolicy,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut file: File = common::load(path)?;
        let bad = |key: &str, problem: String| ConfigError::key(path, key, problem);
        common::resolve(path, &mut file.ike.certificate);
        common::resolve(path, &mut file.ike.private_key);
        file.ike
            .ca
            .iter_mut()
            .chain(file.ike.crl.iter_mut())
            .for_each(|p| common::resolve(path, p));
        common::resolve(path, &mut file.storage.path);
        if file.ike.listen.is_empty() {
            return Err(bad("ike.listen", "at least one address is needed".into()));
        }
        if file.ike.listen.iter().any(|a| a.is_unspecified()) {
            return Err(bad(
                "ike.listen",
                "name the addresses; the unspecified address breaks NAT detection".into(),
            ));
        }
        for (key, p) in [
            ("ike.certificate", &file.ike.certificate),
            ("ike.private_key", &file.ike.private_key),
        ] {
            if !p.exists() {
                return Err(bad(key, format!("{} does not exist", p.display())));
            }
        }
        if file.ike.ca.is_empty() {
            return Err(bad(
                "ike.ca",
                "at least one CA certificate is needed".into(),
            ));
        }
        if file.ike.child_lifetime < 2 || file.ike.ike_lifetime < 2 {
            return Err(bad(
                "ike.child_lifetime",
                "lifetimes must be at least 2 seconds".into(),
            ));
        }
        if !(576..=65535).contains(&file.ike.fragment_size) {
            return Err(bad(
                "ike.fragment_size",
                "must be between 576 and 65535".into(),
            ));
        }
        let pool = file.pool.prefix.0;
        let len = pool.prefix_len();
        if !(64..=128).contains(&len) {
            return Err(bad(
                "pool.prefix",
                format!("prefix length {len} is outside 64..=128"),
            ));
        }
        let pool_base = pool.network();
        let pool_size = match 128 - u32::from(len) {
            bits if bits >= 64 => u64::MAX,
            bits => 1u64 << bits,
        };
        for (identity, addr) in &file.pool.reservations {
            if !pool.contains(addr) {
                return Err(bad(
                    &format!("pool.static.\"{identity}\""),
                    format!("{addr} is outside {pool}"),
                ));
            }
        }
        if let Some(sites) = &file.sites {
            let len = sites.prefix.0.prefix_len();
            if len > 56 {
                return Err(bad(
                    "sites.prefix",
                    format!("/{len} cannot hold a /56; use /56 or shorter"),
                ));
            }
            if ![64, 60, 56].contains(&sites.prefix_length) {
                return Err(bad("sites.prefix_length", "one of 64, 60, 56".into()));
            }
            if sites.transfer4.0.prefix_len() > 30 {
                return Err(bad("sites.transfer4", "needs at least a /30".into()));
            }
            if sites.uplink4().is_empty() || sites.uplink6().is_empty() {
                return Err(bad(
                    "sites.uplink",
                    "name the upstream interface (or uplink4 and uplink6 both)".into(),
                ));
            }
            if sites.peer_timeout < 3 {
                return Err(bad("sites.peer_timeout", "at least 3 seconds".into()));
            }
        }
        let limits = &file.limits;
        for (key, value, least) in [
            (
                "limits.ike_sas_per_identity",
                limits.ike_sas_per_identity,
                1,
            ),
            (
                "limits.child_sas_per_ike_sa",
                limits.child_sas_per_ike_sa,
                2,
            ),
            (
                "limits.traffic_selectors_per_child_sa",
                limits.traffic_selectors_per_child_sa,
                1,
            ),
            (
                "limits.half_open_per_source",
                limits.half_open_per_source,
                1,
            ),
            ("limits.half_open", limits.half_open, 1),
        ] {
            if value < least {
                return Err(bad(key, format!("must be at least {least}")));
            }
        }
        let legacy = if file.ike.legacy {
            Legacy::Allow
        } else {
            Legacy::Refuse
        };
        let ike_policy = IkePolicy::from_strongswan(&file.ike.proposals, legacy)
            .map_err(|e| bad("ike.proposals", e.to_string()))?;
        let esp_policy = EspPolicy::from_strongswan(&file.ike.esp_proposals, legacy)
            .map_err(|e| bad("ike.esp_proposals", e.to_string()))?;
        let control_socket = match &mut file.control.socket {
            Some(p) => {
                common::resolve(path, p);
                p.clone()
            }
            None => file.storage.path.join("broker.sock"),
        };
        Ok(Config {
            path: path.to_path_buf(),
            file,
            pool_base,
            pool_size,
            control_socket,
            ike_policy,
            esp_policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example/ecdsa");
        let text = body.replace("CERTS", &certs.display().to_string());
        let p = dir.join("broker.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = r#"
[ike]
listen = ["192.0.2.1"]
identity = "broker.example.net"
certificate = "CERTS/broker.pem"
private_key = "CERTS/broker.key"
ca = ["CERTS/ca.pem"]
[pool]
prefix = "2001:db8:100::100/120"
dns = ["2001:db8:ffff::53"]
[pool.static]
"client2@example.net" = "2001:db8:100::1ff"
[dataplane]
backend = "userspace"
[storage]
path = "state"
"#;

    #[test]
    fn the_documented_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&write(dir.path(), GOOD)).unwrap();
        assert_eq!(c.pool_size, 256);
        assert_eq!(
            c.pool_base,
            "2001:db8:100::100".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            c.file.storage.path,
            dir.path().join("state"),
            "relative to the file"
        );
        assert_eq!(c.control_socket, dir.path().join("state/broker.sock"));
        let minimal = GOOD.replace("[dataplane]\nbackend = \"userspace\"\n", "");
        let c = Config::load(&write(dir.path(), &minimal)).unwrap();
        assert_eq!(
            (
                c.file.dataplane.device(DEFAULT_DEVICE),
                c.file.dataplane.mtu.0
            ),
            ("sgb0", 1400),
            "defaults without [dataplane]"
        );
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "prefix = \"2001:db8:100::100/120\"",
                "prefix = \"2001::/20\"",
                "pool.prefix",
                "outside 64..=128",
            ),
            (
                "prefix = \"2001:db8:100::100/120\"",
                "prefix = \"2001:db8:100::101/120\"",
                "pool.prefix",
                "host bits",
            ),
            (
                "\"2001:db8:100::1ff\"",
                "\"2001:db8:200::1\"",
                "pool.static.\"client2@example.net\"",
                "outside",
            ),
            (
                "listen = [\"192.0.2.1\"]",
                "listen = [\"0.0.0.0\"]",
                "ike.listen",
                "name the addresses",
            ),
            (
                "CERTS/broker.key",
                "CERTS/nonexistent.key",
                "ike.private_key",
                "does not exist",
            ),
            (
                "backend = \"userspace\"",
                "backend = \"kernel\"",
                "backend",
                "unknown variant",
            ),
            (
                "backend = \"userspace\"",
                "backend = \"xfrm\"\ntun = \"much-too-long-a-name\"",
                "dataplane.tun",
                "1 to 15 characters",
            ),
            (
                "[storage]",
                "[storage]\ncolour = \"blue\"",
                "colour",
                "unknown field",
            ),
            (
                "identity = \"broker.example.net\"",
                "identity = \"broker example\"",
                "ike.identity",
                "neither",
            ),
            (
                "[pool.static]",
                "broker_services = [\"udp/53\", \"icmp/1\"]\n[pool.static]",
                "pool.broker_services",
                "not udp or tcp",
            ),
            (
                "identity = \"broker.example.net\"",
                "identity = \"broker.example.net\"\nproposals = [\"aes256-sha1-modp1024\"]",
                "ike.proposals",
                "`sha1` in `aes256-sha1-modp1024` needs `legacy = true`",
            ),
            (
                "identity = \"broker.example.net\"",
                "identity = \"broker.example.net\"\nesp_proposals = [\"blowfish\"]",
                "ike.esp_proposals",
                "not an algorithm",
            ),
            (
                "[storage]",
                "[limits]\nchild_sas_per_ike_sa = 1\n[storage]",
                "limits.child_sas_per_ike_sa",
                "at least 2",
            ),
            (
                "[storage]",
                "[limits]\nike_sas_per_identity = -1\n[storage]",
                "limits.ike_sas_per_identity",
                "invalid value",
            ),
        ];
        for (from, to, key, problem) in cases {
            let p = write(dir.path(), &GOOD.replace(from, to));
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.starts_with(&p.display().to_string()), "{e}");
            assert!(e.contains(key), "{key}: {e}");
            assert!(e.contains(problem), "{problem}: {e}");
        }
        let e = Config::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn sites_may_have_an_upstream_per_family() {
        let dir = tempfile::tempdir().unwrap();
        let sites = "[sites]\nprefix = \"2001:db8:200::/48\"\ntransfer4 = \"100.64.0.0/24\"\n\
                     endpoint = \"192.0.2.1:51820\"\n";
        let with = |lines: &str| GOOD.replace("[storage]", &format!("{sites}{lines}\n[storage]"));
        for (lines, families) in [
            ("uplink = \"eth0\"", ("eth0", "eth0")),
            (
                "uplink4 = \"ens3\"\nuplink6 = \"he-ipv6\"",
                ("ens3", "he-ipv6"),
            ),
            (
                "uplink = \"eth0\"\nuplink6 = \"he-ipv6\"",
                ("eth0", "he-ipv6"),
            ),
        ] {
            let c = Config::load(&write(dir.path(), &with(lines))).unwrap();
            let s = c.file.sites.unwrap();
            assert_eq!((s.uplink4(), s.uplink6()), families, "{lines}");
        }
        let e = Config::load(&write(dir.path(), &with("uplink4 = \"ens3\"")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sites.uplink") && e.contains("uplink4 and uplink6"),
            "{e}"
        );
    }
}
