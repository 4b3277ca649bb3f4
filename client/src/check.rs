//! `sixgate-client check`: what `up` checks, without connecting: the
//! credentials (the runtime's shared checks, as the broker will see the
//! certificate), whether the broker's name resolves now, and (for `check`
//! only, since `up` finds them by binding) the IKE ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sixgate_proto::cert::Purpose;
use sixgate_runtime::check::{self, CredentialFiles, Findings};
use sixgate_runtime::pki::Credentials;

use crate::config::Config;

/// Everything found about `config` at `now` (Unix seconds), and the
/// credentials if they had no error; `ports` binds the IKE ports too.
pub fn findings(config: &Config, ports: bool, now: i64) -> (Findings, Option<Credentials>) {
    let mut findings = Findings::default();
    let identity = config.identity.to_string();
    let credentials = check::credentials(
        &mut findings,
        &CredentialFiles {
            section: "",
            identity: &identity,
            certificate: &config.certificate,
            private_key: &config.private_key,
            ca: &config.ca,
            role: Purpose::Client,
            peers: "the broker",
        },
        now,
    );
    if let Err(e) = config.broker.0.resolve() {
        findings.warning(
            "broker",
            format!(
                "{} does not resolve now ({e}); the client keeps trying",
                config.broker.0
            ),
        );
    }
    if ports {
        let local = config.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let key = if config.local.is_some() {
            "local"
        } else {
            "broker"
        };
        check::udp_ports_free(
            &mut findings,
            key,
            &[SocketAddr::new(local, 500), SocketAddr::new(local, 4500)],
        );
    }
    (findings, credentials)
}
