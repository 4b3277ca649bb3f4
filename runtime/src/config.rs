//! What both daemons' configuration files share: the `[dataplane]`
//! section, the value types that are parsed once, at deserialization
//! (identities, networks, host-and-port pairs), and loading a file with
//! errors that name the file, the dotted key and the problem.
//!
//! Values are checked where serde meets them (`try_from` on newtypes), so
//! a configuration that loaded is made of typed values that need no
//! second parse; [`load`] reports the path of the key a value came from
//! (through serde_path_to_error), so `pool.prefix` is named as such.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sixgate_dataplane::plane::{Limits, PlaneConfig};
use sixgate_dataplane::xfrm::Owner;
use sixgate_proto::identity::CanonicalIdentity;

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key's value is wrong (or the TOML around it is).
    #[error("{}: key `{key}`: {problem}", file.display())]
    Key {
        /// The file.
        file: PathBuf,
        /// The dotted key, e.g. `pool.prefix`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The file is not TOML, or a problem not tied to one key.
    #[error("{}: {problem}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    /// A problem with `key` in `file`.
    pub fn key(file: &Path, key: impl Into<String>, problem: impl fmt::Display) -> ConfigError {
        ConfigError::Key {
            file: file.to_path_buf(),
            key: key.into(),
            problem: problem.to_string(),
        }
    }
}

/// Reads and deserializes a TOML file; errors name the key they concern.
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let de = toml::Deserializer::new(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // toml's own message starts with the position and the line; the
        // last line is what serde said.
        let message = inner.message().trim().to_string();
        if key == "." || key.is_empty() {
            ConfigError::File {
                file: file.to_path_buf(),
                problem: inner.to_string().trim().to_string(),
            }
        } else {
            ConfigError::Key {
                file: file.to_path_buf(),
                key,
                problem: message,
            }
        }
    })
}

/// Resolves `p` against the directory of the configuration file.
pub fn resolve(file: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        let dir = file.parent().unwrap_or(Path::new("."));
        *p = dir.join(&*p);
    }
}

/// An identity as written (an address, `user@domain`, a DN, a host
/// name), kept in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Identity(pub CanonicalIdentity);

impl TryFrom<String> for Identity {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        CanonicalIdentity::parse(&text)
            .map(Identity)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An IP network type of ipnet's, as [`Net`] checks it.
pub trait Network: FromStr + Copy + PartialEq + fmt::Display {
    /// "IPv6" or "IPv4", for messages.
    const FAMILY: &'static str;
    /// The network with its host bits cleared.
    fn trunc(&self) -> Self;
    /// Its prefix length.
    fn prefix_len(&self) -> u8;
}

macro_rules! network {
    ($net:ty, $family:literal) => {
        impl Network for $net {
            const FAMILY: &'static str = $family;
            fn trunc(&self) -> Self {
                <$net>::trunc(self)
            }
            fn prefix_len(&self) -> u8 {
                <$net>::prefix_len(self)
            }
        }
    };
}

network!(Ipv6Net, "IPv6");
network!(Ipv4Net, "IPv4");

/// A network, `ADDRESS/LENGTH`, whose host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Net<N: Network>(pub N);

/// An IPv6 network.
pub type Net6 = Net<Ipv6Net>;
/// An IPv4 network.
pub type Net4 = Net<Ipv4Net>;

impl<N: Network> FromStr for Net<N> {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let net: N = text
            .parse()
            .map_err(|_| format!("{text:?} is not an {} network (ADDRESS/LENGTH)", N::FAMILY))?;
        if net.trunc() != net {
            let address = text.split('/').next().unwrap_or(text);
            return Err(format!(
                "{address} has host bits set for /{}",
                net.prefix_len()
            ));
        }
        Ok(Net(net))
    }
}

impl<N: Network> TryFrom<String> for Net<N> {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl<N: Network> fmt::Display for Net<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `HOST:PORT`, `[IPV6]:PORT`, or a bare host with a default port: where
/// something connects to. The host may be a name, resolved when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A name or an address literal (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// Parses `text`, taking `default_port` when it names none.
    pub fn parse(text: &str, default_port: Option<u16>) -> Result<HostPort, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not HOST:PORT");
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            let port = default_port.ok_or_else(bad)?;
            return Ok(HostPort {
                host: ip.to_string(),
                port,
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (text, default_port.ok_or_else(bad)?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !name_ok && host.parse::<IpAddr>().is_err() {
            return Err(format!("{host:?} is neither a host name nor an address"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// The addresses it names now (a DNS or /etc/hosts lookup for a name).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The `[dataplane]` section both daemons' configuration files share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneSection {
    /// "userspace" (ESP over TUN, in this process) or "xfrm" (the kernel).
    #[serde(default)]
    pub backend: BackendKind,
    /// The device to create: the TUN device (userspace) or the XFRM
    /// interface (xfrm). Each daemon has its own default.
    pub tun: Option<InterfaceName>,
    /// The device's MTU (userspace).
    #[serde(default = "default_mtu")]
    pub mtu: Mtu,
    /// xfrm: route through an XFRM interface where the kernel has them
    /// (else policy-based on the uplink).
    #[serde(default = "default_true")]
    pub route_based: bool,
    /// xfrm: carry ESP in UDP even where no NAT is detected. (The
    /// userspace backend always does.)
    #[serde(default)]
    pub force_udp_encapsulation: bool,
    /// xfrm: rekey a Child SA after this many bytes in either direction
    /// (the kernel's soft limit; the hard limit, where the SA is dropped,
    /// is twice it). 0: by time only.
    #[serde(default)]
    pub rekey_bytes: u64,
}

/// Which ESP data plane.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// ESP in UDP, in this process, over a TUN device.
    #[default]
    Userspace,
    /// The kernel's IPsec (XFRM).
    Xfrm,
}

/// A network interface name: 1 to 15 characters, no '/' or spaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct InterfaceName(pub String);

impl TryFrom<String> for InterfaceName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err("an interface name of 1 to 15 characters, without '/' or spaces".into());
        }
        Ok(InterfaceName(name))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An MTU for a device that carries IPv6: at least 1280.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u16")]
pub struct Mtu(pub u16);

impl TryFrom<u16> for Mtu {
    type Error = String;
    fn try_from(mtu: u16) -> Result<Self, String> {
        if mtu < 1280 {
            return Err("IPv6 needs at least 1280".into());
        }
        Ok(Mtu(mtu))
    }
}

fn default_mtu() -> Mtu {
    Mtu(1400)
}

fn default_true() -> bool {
    true
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            backend: BackendKind::default(),
            tun: None,
            mtu: default_mtu(),
            route_based: true,
            force_udp_encapsulation: false,
            rekey_bytes: 0,
        }
    }
}

impl DataplaneSection {
    /// The device name, or `default`.
    pub fn device<'a>(&'a self, default: &'a str) -> &'a str {
        self.tun.as_ref().map_or(default, |t| t.0.as_str())
    }

    /// The data plane's settings for a daemon whose outer address is
    /// `local` and whose Child SAs live `child_lifetime`.
    pub fn plane_config(
        &self,
        owner: Owner,
        default_device: &str,
        local: IpAddr,
        child_lifetime: Duration,
    ) -> PlaneConfig {
        let mut limits = Limits::default();
        if self.rekey_bytes > 0 {
            limits.soft_bytes = self.rekey_bytes;
            limits.hard_bytes = self.rekey_bytes.saturating_mul(2);
        }
        // The IKE engine rekeys by time; the kernel's hard limit only
        // catches an SA whose rekey never happened.
        limits.hard_secs = child_lifetime.as_secs().saturating_mul(2);
        PlaneConfig {
            owner,
            kernel: self.backend == BackendKind::Xfrm,
            device: self.device(default_device).to_string(),
            mtu: self.mtu.0,
            route_based: self.route_based,
            limits,
            local,
            proxy_ndp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_where_they_are_read() {
        assert!("2001:db8::/64".parse::<Net6>().is_ok());
        let e = "2001:db8::1/64".parse::<Net6>().unwrap_err();
        assert!(e.contains("host bits"), "{e}");
        assert!("2001:db8::/129".parse::<Net6>().is_err());
        assert!("10.0.0.0/8".parse::<Net4>().is_ok());
        assert!("10.0.0.1/8".parse::<Net4>().is_err());
        for (text, host, port) in [
            ("vpn.example.org", "vpn.example.org", 500),
            ("vpn.example.org:4500", "vpn.example.org", 4500),
            ("192.0.2.1", "192.0.2.1", 500),
            ("192.0.2.1:4500", "192.0.2.1", 4500),
            ("[2001:db8::1]:4500", "2001:db8::1", 4500),
            ("2001:db8::1", "2001:db8::1", 500),
        ] {
            let hp = HostPort::parse(text, Some(500)).unwrap();
            assert_eq!((hp.host.as_str(), hp.port), (host, port), "{text}");
        }
        assert!(HostPort::parse("vpn example", Some(500)).is_err());
        assert!(HostPort::parse("vpn.example.org", None).is_err());
        assert!(HostPort::parse("vpn.example.org:x", None).is_err());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        pool: Pool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Pool {
        prefix: Net6,
    }

    #[test]
    fn errors_name_the_file_and_the_dotted_key() {
        let dir = std::env::temp_dir().join(format!("sgcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.toml");
        std::fs::write(&file, "[pool]\nprefix = \"2001:db8::1/64\"\n").unwrap();
        let e = load::<Sample>(&file).unwrap_err().to_string();
        assert!(e.starts_with(&file.display().to_string()), "{e}");
        assert!(
            e.contains("key `pool.prefix`") && e.contains("host bits"),
            "{e}"
        );
        std::fs::write(&file, "[pool]\nprefix = \"2001:db8::/64\"\ncolour = 1\n").unwrap();
        let e = load::<Sample>(&file).unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains("unknown field"), "{e}");
        std::fs::write(&file, "[pool\n").unwrap();
        assert!(load::<Sample>(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
