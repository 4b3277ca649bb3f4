//! `sixgate-broker check`: what a start checks, without starting. The
//! configuration has parsed by the time this runs; here come the findings
//! that need the files, the host or each other: the credentials (through
//! the runtime's shared checks), the CRLs, a pool clients cannot use, the
//! sites' uplink, and (for `check` only, since a start finds them by
//! binding) the ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sixgate_proto::cert::Purpose;
use sixgate_runtime::check::{self, CredentialFiles, Findings};
use sixgate_runtime::pki::Credentials;

use crate::config::Config;
use crate::revocations;

/// Whether to try binding the ports too (not at a start, which binds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Bind each port and drop it again.
    Check,
    /// Leave them to the start.
    Skip,
}

/// Everything found about `config` at `now` (Unix seconds), and the
/// credentials if they had no error.
pub fn findings(config: &Config, ports: Ports, now: i64) -> (Findings, Option<Credentials>) {
    let f = &config.file;
    let mut findings = Findings::default();
    let identity = f.ike.identity.to_string();
    let credentials = check::credentials(
        &mut findings,
        &CredentialFiles {
            section: "ike.",
            identity: &identity,
            certificate: &f.ike.certificate,
            private_key: &f.ike.private_key,
            ca: &f.ike.ca,
            role: Purpose::Server,
            peers: "clients (sixgate, strongSwan, iOS, macOS, Windows, Android)",
        },
        now,
    );
    if let Some(credentials) = &credentials {
        match revocations::load_crls(&f.ike.crl, &credentials.anchors, now) {
            Ok((_, warnings)) => {
                for w in warnings {
                    findings.warning("ike.crl", w);
                }
            }
            Err(e) => findings.error("ike.crl", e),
        }
    }
    let pool = f.pool.prefix.0;
    let base = pool.network();
    let unusable = if base.is_multicast() {
        Some("multicast")
    } else if base.segments()[0] & 0xffc0 == 0xfe80 {
        Some("link-local (fe80::/10): no route can carry it through a tunnel")
    } else if base.is_loopback() || base.is_unspecified() {
        Some("the loopback or unspecified address")
    } else {
        None
    };
    if let Some(what) = unusable {
        findings.error(
            "pool.prefix",
            format!("{pool} is {what}; clients need unicast global (or unique local) addresses"),
        );
    }
    for (i, dns) in f.pool.dns.iter().enumerate() {
        if dns.is_unspecified() || dns.is_multicast() {
            findings.error(
                &format!("pool.dns[{i}]"),
                format!("{dns} is not a server's address"),
            );
        }
    }
    if let Some(sites) = &f.sites {
        let (up4, up6) = (sites.uplink4(), sites.uplink6());
        let key = |explicit: &Option<String>, own: &'static str| {
            if explicit.is_some() {
                own
            } else {
                "sites.uplink"
            }
        };
        check::interface_exists(&mut findings, key(&sites.uplink4, "sites.uplink4"), up4);
        if up6 != up4 {
            check::interface_exists(&mut findings, key(&sites.uplink6, "sites.uplink6"), up6);
        }
    }
    if let Some(link) = &f.pool.proxy_ndp {
        check::interface_exists(&mut findings, "pool.proxy_ndp", &link.0);
    }
    if ports == Ports::Check {
        let ike: Vec<SocketAddr> = f
            .ike
            .listen
            .iter()
            .flat_map(|a| [SocketAddr::new(*a, 500), SocketAddr::new(*a, 4500)])
            .collect();
        check::udp_ports_free(&mut findings, "ike.listen", &ike);
        if let Some(sites) = &f.sites {
            check::udp_ports_free(
                &mut findings,
                "sites.listen_port",
                &[SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    sites.listen_port,
                )],
            );
        }
    }
    if let (Ports::Check, Some(metrics)) = (ports, &f.metrics) {
        if let Err(e) = std::net::TcpListener::bind(metrics.listen) {
            findings.error("metrics.listen", format!("TCP {}: {e}", metrics.listen));
        }
    }
    (findings, credentials)
}
