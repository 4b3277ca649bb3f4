//! The client's configuration file (TOML). Values are typed where they
//! are read; errors name the file, the key and the problem, and unknown
//! keys are refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sixgate_runtime::config::{self as common, ConfigError, DataplaneSection, HostPort, Identity};
use sixgate_runtime::privileges::ProcessSection;

/// The broker: a host name or an address, with the IKE port (500 unless
/// given); a name is resolved at each connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Broker(pub HostPort);

impl TryFrom<String> for Broker {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        HostPort::parse(&text, Some(500)).map(Broker)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
    pub broker: Broker,
    pub broker_identity: Identity,
    pub identity: Identity,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub ca: Vec<PathBuf>,
    /// Our address towards the broker; found by a route lookup if absent
    /// (and again whenever addresses or routes change: the tunnel moves
    /// with MOBIKE). A fixed `local` does not roam.
    pub local: Option<IpAddr>,
    /// Announce MOBIKE and move the tunnel when our address changes.
    #[serde(default = "default_mobike")]
    pub mobike: bool,
    /// Seconds of silence before a liveness check.
    #[serde(default = "default_dpd")]
    pub dpd_interval: u64,
    /// Seconds without a word from the broker, with a request unanswered,
    /// after which the tunnel is down (and reconnected).
    #[serde(default = "default_dead_after")]
    pub dead_after: u64,
    /// First retransmission timeout, milliseconds (it doubles per try).
    #[serde(default = "default_retransmit")]
    pub retransmit_timeout_ms: u64,
    /// Retransmissions before the broker is declared dead.
    #[serde(default = "default_tries")]
    pub retransmit_tries: u32,
    /// Child SA lifetime before rekeying, seconds.
    #[serde(default = "default_child_lifetime")]
    pub child_lifetime: u64,
    /// Put the DNS servers the broker gives in place: on the tunnel
    /// device through systemd-resolved where it runs, otherwise in
    /// /etc/resolv.conf (and the original back on `down`). `resolv_conf`
    /// is its older name.
    #[serde(default, alias = "resolv_conf")]
    pub set_dns: bool,
    #[serde(default = "default_control")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub dataplane: DataplaneSection,
    /// `[process]`: the user to run as.
    #[serde(default)]
    pub process: ProcessSection,
}

fn default_dpd() -> u64 {
    10
}
fn default_mobike() -> bool {
    true
}
fn default_dead_after() -> u64 {
    30
}
fn default_retransmit() -> u64 {
    2000
}
fn default_child_lifetime() -> u64 {
    3600
}
fn default_tries() -> u32 {
    5
}
fn default_control() -> PathBuf {
    PathBuf::from("/run/sixgate/client.sock")
}

/// The client's default device (TUN or XFRM interface).
pub const DEFAULT_DEVICE: &str = "sgc0";

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = common::load(path)?;
        c.path = path.to_path_buf();
        let bad = |key: &str, problem: &str| ConfigError::key(path, key, problem);
        common::resolve(path, &mut c.certificate);
        common::resolve(path, &mut c.private_key);
        c.ca.iter_mut().for_each(|p| common::resolve(path, p));
        common::resolve(path, &mut c.control_socket);
        for (key, p) in [
            ("certificate", &c.certificate),
            ("private_key", &c.private_key),
        ] {
            if !p.exists() {
                return Err(bad(key, &format!("{} does not exist", p.display())));
            }
        }
        if c.ca.is_empty() {
            return Err(bad("ca", "at least one CA certificate is needed"));
        }
        if c.child_lifetime < 2 {
            return Err(bad("child_lifetime", "must be at least 2 seconds"));
        }
        if c.retransmit_tries == 0 || c.retransmit_timeout_ms == 0 || c.dpd_interval == 0 {
            return Err(bad("retransmit_tries", "timers and tries must be positive"));
        }
        if c.dead_after <= c.dpd_interval {
            return Err(bad(
                "dead_after",
                "must be longer than dpd_interval, or a quiet tunnel dies before its first check",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
broker = "192.0.2.1"
broker_identity = "broker.example.net"
identity = "client@example.net"
certificate = "CERTS/client.pem"
private_key = "CERTS/client.key"
ca = ["CERTS/ca.pem"]
[dataplane]
backend = "userspace"
"#;

    fn load(dir: &Path, body: &str) -> Result<Config, String> {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example/ecdsa");
        let p = dir.join("client.toml");
        std::fs::write(&p, body.replace("CERTS", &certs.display().to_string())).unwrap();
        Config::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_loads_and_errors_name_file_key_problem() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), GOOD).unwrap();
        assert_eq!(c.dataplane.device(DEFAULT_DEVICE), "sgc0");
        assert_eq!(c.control_socket, PathBuf::from("/run/sixgate/client.sock"));
        assert_eq!(c.broker.0.to_string(), "192.0.2.1:500");
        assert!(!c.set_dns);
        for key in ["set_dns", "resolv_conf"] {
            let on = load(
                dir.path(),
                &GOOD.replace("[dataplane]", &format!("{key} = true\n[dataplane]")),
            );
            assert!(on.unwrap().set_dns, "{key}");
        }
        let named = load(
            dir.path(),
            &GOOD.replace("\"192.0.2.1\"", "\"vpn.example.org:4500\""),
        )
        .unwrap();
        assert_eq!(
            (named.broker.0.host.as_str(), named.broker.0.port),
            ("vpn.example.org", 4500)
        );
        for (from, to, key, problem) in [
            (
                "broker = \"192.0.2.1\"",
                "broker = \"broker example\"",
                "broker",
                "neither a host name nor an address",
            ),
            (
                "backend = \"userspace\"",
                "backend = \"kernel\"",
                "backend",
                "unknown variant",
            ),
            (
                "backend = \"userspace\"",
                "backend = \"xfrm\"\nmtu = 1000",
                "dataplane.mtu",
                "at least 1280",
            ),
            (
                "CERTS/client.pem",
                "CERTS/none.pem",
                "certificate",
                "does not exist",
            ),
            (
                "identity = \"client@example.net\"",
                "identity = \"client@example.net\"\nidentitty = \"x\"",
                "identitty",
                "unknown field",
            ),
            (
                "[dataplane]",
                "child_lifetime = 1\n[dataplane]",
                "child_lifetime",
                "at least 2",
            ),
        ] {
            let e = load(dir.path(), &GOOD.replace(from, to)).unwrap_err();
            assert!(
                e.contains("client.toml") && e.contains(key) && e.contains(problem),
                "{key}/{problem}: {e}"
            );
        }
    }
}
