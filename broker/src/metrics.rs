//! Prometheus metrics (`[metrics] listen`): a scrape of `GET /metrics`
//! asks the running broker for a [`Snapshot`] and renders it with the
//! prometheus-client crate in the text exposition format. Collecting at
//! scrape time keeps the counters where they already live (the engine, the
//! runtime, the data plane, the stores); nothing is counted twice.
//!
//! Per-client series are bounded: at most [`MAX_CLIENT_SERIES`]
//! identities get their own `identity` label (the rest are summed in
//! `sixgate_clients_unlabelled`), so a broker with many clients cannot
//! make its metrics unbounded. The names are listed in docs/metrics.md.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sixgate_runtime::engine::{Connection, RuntimeStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::leases::Lease;
use crate::sitenet::SiteState;

/// Clients with series of their own.
pub const MAX_CLIENT_SERIES: usize = 1000;

/// What one scrape shows.
pub struct Snapshot {
    /// The runtime's and the engine's counters.
    pub runtime: RuntimeStats,
    /// The connections.
    pub connections: Vec<Connection>,
    /// The leases.
    pub leases: Vec<Lease>,
    /// How many addresses the pool holds.
    pub pool_size: u64,
    /// The sites, if configured.
    pub sites: Vec<SiteState>,
    /// Packets the road warriors' firewall dropped.
    pub firewall_dropped: Option<u64>,
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers a family of counters and returns it.
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

/// Registers a family of gauges and returns it.
fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The text exposition of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("sixgate");
    let rt = &s.runtime;
    gauge(
        &mut r,
        "ike_sas",
        "IKE SAs, authenticated or not",
        rt.ike_sas as f64,
    );
    gauge(
        &mut r,
        "ike_sas_half_open",
        "IKE SAs between IKE_SA_INIT and IKE_AUTH",
        rt.half_open as f64,
    );
    gauge(
        &mut r,
        "connected_clients",
        "Authenticated IKE SAs",
        s.connections.len() as f64,
    );
    let children: usize = s.connections.iter().map(|c| c.child_sas.len()).sum();
    gauge(&mut r, "child_sas", "Installed Child SAs", children as f64);
    counter(&mut r, "ike_setups", "IKE SAs that came up", rt.setups);
    let ends = counters(
        &mut r,
        "ike_ends",
        "IKE SAs and attempts that ended, by reason (refusals as refused_NOTIFY)",
    );
    for (reason, n) in &rt.ends {
        ends.get_or_create(&labels(&[("reason", reason)]))
            .inc_by(*n);
    }
    counter(
        &mut r,
        "ike_init_refused",
        "IKE_SA_INITs refused statelessly",
        rt.ike.inits_refused,
    );
    counter(
        &mut r,
        "ike_cookies_sent",
        "Cookies demanded",
        rt.ike.cookies_sent,
    );
    counter(
        &mut r,
        "ike_half_open_dropped",
        "IKE_SA_INITs dropped at the half-open limit",
        rt.ike.half_open_dropped,
    );
    counter(
        &mut r,
        "ike_integrity_failed",
        "IKE datagrams whose integrity check failed",
        rt.ike.integrity_failed,
    );
    counter(&mut r, "ike_rekeys", "IKE SAs rekeyed", rt.ike_rekeys);
    counter(&mut r, "child_rekeys", "Child SAs rekeyed", rt.child_rekeys);
    counter(
        &mut r,
        "ike_moves",
        "IKE SAs moved to new addresses (NAT rebinding, MOBIKE)",
        rt.ike.moves,
    );
    counter(
        &mut r,
        "ike_queue_full",
        "IKE datagrams dropped because the IKE task was behind",
        rt.ike_queue_full,
    );

    let leases = gauges(&mut r, "leases", "Address leases by state");
    let state = |l: &Lease| match (l.active, l.reserved) {
        (true, _) => "active",
        (false, true) => "reserved",
        (false, false) => "released",
    };
    for st in ["active", "reserved", "released"] {
        let n = s.leases.iter().filter(|l| state(l) == st).count();
        leases
            .get_or_create(&labels(&[("state", st)]))
            .set(n as i64);
    }
    gauge(
        &mut r,
        "pool_free",
        "Pool addresses never leased",
        s.pool_size.saturating_sub(s.leases.len() as u64) as f64,
    );

    let bytes = counters(
        &mut r,
        "client_bytes",
        "Inner octets of a connected client's tunnel",
    );
    let packets = counters(
        &mut r,
        "client_packets",
        "Inner packets of a connected client's tunnel",
    );
    let drops = counters(
        &mut r,
        "esp_dropped",
        "ESP packets dropped by cause, over the connected clients' SAs",
    );
    let (mut replay, mut auth, mut spoofed) = (0, 0, 0);
    for (i, c) in s.connections.iter().enumerate() {
        let t = &c.traffic;
        replay += t.dropped_replayed;
        auth += t.dropped_auth;
        spoofed += t.dropped_spoofed;
        if i >= MAX_CLIENT_SERIES {
            continue;
        }
        for (direction, b, p) in [
            ("in", t.bytes_in, t.packets_in),
            ("out", t.bytes_out, t.packets_out),
        ] {
            let l = labels(&[("identity", &c.identity), ("direction", direction)]);
            bytes.get_or_create(&l).inc_by(b);
            packets.get_or_create(&l).inc_by(p);
        }
    }
    for (cause, n) in [
        ("replay", replay),
        ("authentication", auth),
        ("spoofed_source", spoofed),
    ] {
        drops.get_or_create(&labels(&[("cause", cause)])).inc_by(n);
    }
    gauge(
        &mut r,
        "clients_unlabelled",
        "Connected clients beyond the per-client series limit",
        s.connections.len().saturating_sub(MAX_CLIENT_SERIES) as f64,
    );
    if let Some(n) = s.firewall_dropped {
        counter(
            &mut r,
            "firewall_dropped",
            "Packets the road warriors' firewall dropped",
            n,
        );
    }

    let site_up = gauges(&mut r, "site_up", "Whether a site's prefix is routed to it");
    let handshake = gauges(
        &mut r,
        "site_last_handshake_seconds",
        "A site's latest WireGuard handshake, Unix time (0: never)",
    );
    for site in &s.sites {
        let l = labels(&[("site", &site.site.name)]);
        site_up.get_or_create(&l).set(i64::from(site.up));
        handshake
            .get_or_create(&l)
            .set(i64::try_from(site.last_handshake).unwrap_or(i64::MAX));
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &r);
    text
}

/// Serves `GET /metrics` on `listener`, each scrape asking the broker's
/// main loop (through `snapshots`) for the text.
pub async fn serve(listener: TcpListener, snapshots: mpsc::Sender<oneshot::Sender<String>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, snapshots)).await;
        });
    }
}

/// One HTTP/1 exchange: the request head (8 KiB at most), then one
/// response, then the connection closes.
async fn answer(
    mut stream: TcpStream,
    snapshots: mpsc::Sender<oneshot::Sender<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let (status, body) =
        if first.starts_with(b"GET /metrics ") || first.starts_with(b"GET /metrics?") {
            let (tx, rx) = oneshot::channel();
            match snapshots.send(tx).await {
                Ok(()) => match rx.await {
                    Ok(text) => ("200 OK", text),
                    Err(_) => ("503 Service Unavailable", "stopping\n".to_string()),
                },
                Err(_) => ("503 Service Unavailable", "stopping\n".to_string()),
            }
        } else {
            ("404 Not Found", "GET /metrics\n".to_string())
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
