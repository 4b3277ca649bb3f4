//! The broker's configuration file (TOML). Every problem is reported with
//! the file, the key and what is wrong with it; unknown keys are errors,
//! since a misspelt key silently ignored is a misconfigured broker.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sixgate_dataplane::plane::DataplaneSection;

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
}

/// DMZ sites over WireGuard: the delegated prefixes and the tunnel.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Sites {
    /// The prefix that site prefixes are cut from.
    pub prefix: String,
    /// The default length of a site's prefix (64, 60 or 56).
    #[serde(default = "default_site_length")]
    pub prefix_length: u8,
    /// IPv4 inside the tunnels, NAT'd out of the uplink.
    pub transfer4: String,
    /// The WireGuard interface.
    #[serde(default = "default_wg_interface")]
    pub interface: String,
    /// Its UDP port.
    #[serde(default = "default_wg_port")]
    pub listen_port: u16,
    /// What sites connect to, host:port.
    pub endpoint: String,
    /// The broker's upstream interface.
    pub uplink: String,
    /// A routing table (with rules) for the site prefixes, instead of main.
    pub table: Option<u32>,
    /// "kernel", "userspace" (wireguard-go) or "auto".
    #[serde(default = "default_wg_backend")]
    pub backend: String,
    /// A site that sent nothing for this many seconds is down: its prefix
    /// is answered with ICMPv6 unreachable until it is back. Sites send a
    /// keepalive every third of it.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout: u64,
    /// Seconds a removed site's prefix is held back before reuse.
    #[serde(default = "default_hold_down")]
    pub hold_down: u64,
}

fn default_site_length() -> u8 {
    64
}
fn default_wg_interface() -> String {
    "sgwg0".into()
}
fn default_wg_port() -> u16 {
    51820
}
fn default_wg_backend() -> String {
    "auto".into()
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
    /// Our IKE identity (a host name, RFC 822 name or address).
    pub identity: String,
    /// Our certificate; the chain may follow the leaf in the same file.
    pub certificate: PathBuf,
    /// The certificate's private key (PKCS#8 or PKCS#1 PEM).
    pub private_key: PathBuf,
    /// Trust anchors for client certificates.
    pub ca: Vec<PathBuf>,
    /// Liveness check interval, seconds.
    #[serde(default = "default_dpd")]
    pub dpd_interval: u64,
    /// IKE messages above this size are fragmented (RFC 7383).
    #[serde(default = "default_fragment_size")]
    pub fragment_size: usize,
    /// Child SA lifetime before rekeying, seconds.
    #[serde(default = "default_child_lifetime")]
    pub child_lifetime: u64,
    /// IKE SA lifetime before rekeying, seconds.
    #[serde(default = "default_ike_lifetime")]
    pub ike_lifetime: u64,
}

fn default_child_lifetime() -> u64 {
    3600
}

fn default_ike_lifetime() -> u64 {
    4 * 3600
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
    /// The pool, "ADDRESS/LENGTH".
    pub prefix: String,
    /// DNS servers handed to clients that ask.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// `[pool.static]`: identity = address.
    #[serde(default, rename = "static")]
    pub reservations: BTreeMap<String, Ipv6Addr>,
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
}

/// An error naming the file, the key and the problem.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Parses an IPv6 network "ADDRESS/LENGTH" whose host bits are zero.
pub fn parse_net6(text: &str) -> Result<(Ipv6Addr, u8), String> {
    let (addr, len) = text.split_once('/').ok_or("expected ADDRESS/LENGTH")?;
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 128)
        .ok_or_else(|| format!("{len:?} is not a prefix length"))?;
    let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    if u128::from(addr) & host != 0 {
        return Err(format!("{addr} has host bits set for /{len}"));
    }
    Ok((addr, len))
}

/// Parses an IPv4 network "ADDRESS/LENGTH" whose host bits are zero.
pub fn parse_net4(text: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (addr, len) = text.split_once('/').ok_or("expected ADDRESS/LENGTH")?;
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{len:?} is not a prefix length"))?;
    let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    if u32::from(addr) & host != 0 {
        return Err(format!("{addr} has host bits set for /{len}"));
    }
    Ok((addr, len))
}

/// Parses "2001:db8::100/120" into its first address and size.
pub fn parse_prefix(text: &str) -> Result<(Ipv6Addr, u64), String> {
    let (addr, len) = text.split_once('/').ok_or("expected ADDRESS/LENGTH")?;
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
    let len: u32 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    if !(64..=128).contains(&len) {
        return Err(format!("prefix length {len} is outside 64..=128"));
    }
    let host_bits = 128 - len;
    let mask = if host_bits == 128 {
        0
    } else {
        u128::MAX << host_bits
    };
    let base = u128::from(addr) & mask;
    if base != u128::from(addr) {
        return Err(format!("{addr} has host bits set for /{len}"));
    }
    let size = if host_bits >= 64 {
        u64::MAX
    } else {
        1u64 << host_bits
    };
    Ok((Ipv6Addr::from(base), size))
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        let mut file: File =
            toml::from_str(&text).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        let bad =
            |key: &str, problem: String| ConfigError(format!("{shown}: key `{key}`: {problem}"));
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        resolve(&mut file.ike.certificate);
        resolve(&mut file.ike.private_key);
        file.ike.ca.iter_mut().for_each(resolve);
        resolve(&mut file.storage.path);
        if file.ike.listen.is_empty() {
            return Err(bad("ike.listen", "at least one address is needed".into()));
        }
        if file.ike.listen.iter().any(|a| a.is_unspecified()) {
            return Err(bad(
                "ike.listen",
                "name the addresses; the unspecified address breaks NAT detection".into(),
            ));
        }
        sixgate_dataplane::pki::parse_identity(&file.ike.identity)
            .map_err(|e| bad("ike.identity", e))?;
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
        let (pool_base, pool_size) =
            parse_prefix(&file.pool.prefix).map_err(|e| bad("pool.prefix", e))?;
        for (identity, addr) in &file.pool.reservations {
            sixgate_dataplane::pki::parse_identity(identity)
                .map_err(|e| bad(&format!("pool.static.\"{identity}\""), e))?;
            let offset = u128::from(*addr).wrapping_sub(u128::from(pool_base));
            if offset >= u128::from(pool_size) {
                return Err(bad(
                    &format!("pool.static.\"{identity}\""),
                    format!("{addr} is outside {}", file.pool.prefix),
                ));
            }
        }
        file.dataplane.check().map_err(|(key, e)| bad(key, e))?;
        if let Some(sites) = &file.sites {
            let (_, len) = parse_net6(&sites.prefix).map_err(|e| bad("sites.prefix", e))?;
            if len > 56 {
                return Err(bad(
                    "sites.prefix",
                    format!("/{len} cannot hold a /56; use /56 or shorter"),
                ));
            }
            if ![64, 60, 56].contains(&sites.prefix_length) {
                return Err(bad("sites.prefix_length", "one of 64, 60, 56".into()));
            }
            let (_, len4) = parse_net4(&sites.transfer4).map_err(|e| bad("sites.transfer4", e))?;
            if len4 > 30 {
                return Err(bad("sites.transfer4", "needs at least a /30".into()));
            }
            if sites
                .endpoint
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(bad("sites.endpoint", "expected HOST:PORT".into()));
            }
            if sites.interface.is_empty() || sites.interface.len() > 15 {
                return Err(bad(
                    "sites.interface",
                    "an interface name of 1 to 15 characters".into(),
                ));
            }
            if sites.peer_timeout < 3 {
                return Err(bad("sites.peer_timeout", "at least 3 seconds".into()));
            }
            if !["auto", "kernel", "userspace"].contains(&sites.backend.as_str()) {
                return Err(bad(
                    "sites.backend",
                    "one of \"auto\", \"kernel\", \"userspace\"".into(),
                ));
            }
        }
        let control_socket = match &mut file.control.socket {
            Some(p) => {
                resolve(p);
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
                c.file.dataplane.mtu
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
                "prefix = \"2001:db8:100::100/20\"",
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
}
