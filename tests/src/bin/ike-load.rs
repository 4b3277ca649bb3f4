//! IKE setups under load, side by side in one run for sixgate-broker and
//! for strongSwan's charon (kernel-libipsec, tuned as strongSwan documents
//! for many clients): N initiators (sixgate-proto's, one identity and
//! certificate each, made on the fly from one CA), each from its own
//! address in a namespace beside the responder's (the addresses routed to
//! it, so the responder holds one neighbour entry, as behind a router),
//! start all at once or at a target rate, each asking for an address. Prints one table:
//! tunnels established, setups per second, p50 and p99 setup latency
//! (IKE_SA_INIT, a cookie round where asked, IKE_AUTH), failures by
//! reason, and the responder's CPU per setup and memory per tunnel.
//!
//! Run as root from a release build:
//! `cargo build --release --workspace && target/release/ike-load [N] [RATE] [--cgnat]`
//! (N defaults to 200; RATE, setups started per second, to all at once;
//! `--cgnat` puts the initiators behind one masquerading address).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sixgate_proto::auth::PrivateKey;
use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};
use sixgate_proto::endpoint::{ts, Config, ConnectRequest, Endpoint, Event};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::{classify_udp4500, Identification, Udp4500};
use sixgate_runtime::ca::{CertificateAuthority, KeyKind, Usage};
use sixgate_tests::{cpu_time, rss_kib, wait_for, Daemon, Netns, StrongSwan, TempDir};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Where the responder listens.
const RESPONDER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// How long one run may take.
const LIMIT: Duration = Duration::from_secs(360);

/// The i-th initiator's address, in 10.64.0.0/10.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        64 + (i / 62500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

fn identity(i: usize) -> String {
    format!("load-{i}@example.net")
}

/// What the generator saw.
#[derive(Debug, Default)]
struct Outcome {
    established: usize,
    failures: BTreeMap<String, usize>,
    elapsed: Duration,
    /// Setup latencies: the median and the 99th percentile.
    p50: Duration,
    p99: Duration,
}

/// The `p` quantile of `latencies` (sorted).
fn percentile(latencies: &[Duration], p: f64) -> Duration {
    latencies
        .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

impl Outcome {
    fn to_line(&self) -> String {
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        format!(
            "RESULT {} {} {} {} {}",
            self.established,
            self.elapsed.as_micros(),
            self.p50.as_micros(),
            self.p99.as_micros(),
            failures.join(",")
        )
    }

    fn from_line(line: &str) -> Option<Outcome> {
        let mut f = line.strip_prefix("RESULT ")?.split(' ');
        let established = f.next()?.parse().ok()?;
        let us = |v: Option<&str>| v.and_then(|v| v.parse().ok()).map(Duration::from_micros);
        let elapsed = us(f.next())?;
        let (p50, p99) = (us(f.next())?, us(f.next())?);
        let failures = f
            .next()
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        Some(Outcome {
            established,
            failures,
            elapsed,
            p50,
            p99,
        })
    }
}

/// The initiators: `n` endpoints, each with its own identity, sockets on
/// its own address (500 and 4500), started `rate` per second (0: at
/// once). Runs until each is up or has failed, or LIMIT.
async fn generate(dir: &Path, n: usize, rate: f64) -> Outcome {
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem"),
        &std::fs::read_to_string(dir.join("ca.key")).expect("ca.key"),
    )
    .expect("the CA");
    let anchors = certificates_from_pem(ca.certificate().as_bytes()).expect("CA certificate");
    let (tx, mut rx) = mpsc::channel::<(usize, SocketAddr, SocketAddr, Vec<u8>)>(65536);
    let mut endpoints = Vec::with_capacity(n);
    let mut sockets: Vec<[Arc<UdpSocket>; 2]> = Vec::with_capacity(n);
    let now = Instant::now();
    let unix = sixgate_runtime::clock::unix_now();
    for i in 0..n {
        let id = CanonicalIdentity::parse(&identity(i)).expect("identity");
        let issued = ca
            .issue(&id, Usage::Client, KeyKind::EcdsaP256, 30)
            .expect("a client certificate");
        let chain = certificates_from_pem(issued.certificate.as_bytes()).expect("chain");
        let key = PrivateKey::from_pem(issued.private_key.as_bytes()).expect("key");
        let config = Config::new(
            Identification::rfc822(&identity(i)),
            chain,
            Arc::new(key),
            TrustAnchors::new(anchors.clone()).expect("anchors"),
        );
        endpoints.push(Endpoint::new(
            Arc::new(config),
            Box::new(rand_core::OsRng),
            now,
            unix,
        ));
        let mut pair = Vec::new();
        for port in [500, 4500] {
            let local = SocketAddr::new(IpAddr::V4(source(i)), port);
            let socket = Arc::new(UdpSocket::bind(local).await.expect("bind a source"));
            let (socket2, tx) = (socket.clone(), tx.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((len, remote)) = socket2.recv_from(&mut buf).await {
                    let payload = if port == 4500 {
                        match classify_udp4500(&buf[..len]) {
                            Ok(Udp4500::Ike(ike)) => ike.to_vec(),
                            _ => continue,
                        }
                    } else {
                        buf[..len].to_vec()
                    };
                    if tx.send((i, local, remote, payload)).await.is_err() {
                        return;
                    }
                }
            });
            pair.push(socket);
        }
        sockets.push([pair[0].clone(), pair[1].clone()]);
    }
    drop(tx);

    let start = Instant::now();
    let mut started: Vec<Option<Instant>> = vec![None; n];
    let mut done = vec![false; n];
    let mut outcome = Outcome::default();
    let mut latencies = Vec::with_capacity(n);
    let mut next_start = 0usize;
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    while outcome.established + outcome.failures.values().sum::<usize>() < n {
        let now = Instant::now();
        if now - start > LIMIT {
            let left = done.iter().filter(|d| !**d).count();
            *outcome.failures.entry("unfinished".into()).or_default() += left;
            break;
        }
        // Start those that are due.
        while next_start < n && interval.is_none_or(|iv| start + iv * next_start as u32 <= now) {
            let i = next_start;
            let request = ConnectRequest {
                remote: SocketAddr::new(IpAddr::V4(RESPONDER), 500),
                local: SocketAddr::new(IpAddr::V4(source(i)), 500),
                remote_identity: Some(CanonicalIdentity::parse("broker.example.net").unwrap()),
                request_address: true,
                initial_contact: true,
                local_ts: vec![ts::ipv6_any()],
                remote_ts: vec![ts::ipv6_any()],
            };
            endpoints[i].connect(now, request);
            started[i] = Some(now);
            flush(
                i,
                &mut endpoints[i],
                &sockets[i],
                &started,
                &mut done,
                &mut outcome,
                &mut latencies,
            )
            .await;
            next_start += 1;
        }
        let timers = endpoints.iter_mut().filter_map(|e| e.poll_timeout()).min();
        let next_connect = interval
            .filter(|_| next_start < n)
            .map(|iv| start + iv * next_start as u32);
        let wake = [timers, next_connect, Some(now + Duration::from_millis(100))]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
        tokio::select! {
            got = rx.recv() => {
                let Some((i, local, remote, payload)) = got else { break };
                endpoints[i].handle(Instant::now(), local, remote, &payload);
                flush(i, &mut endpoints[i], &sockets[i], &started, &mut done, &mut outcome, &mut latencies).await;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                for i in 0..n {
                    if endpoints[i].poll_timeout().is_some_and(|t| t <= now) {
                        endpoints[i].handle_timeout(now);
                        flush(i, &mut endpoints[i], &sockets[i], &started, &mut done, &mut outcome, &mut latencies).await;
                    }
                }
            }
        }
    }
    outcome.elapsed = start.elapsed();
    latencies.sort();
    outcome.p50 = percentile(&latencies, 0.5);
    outcome.p99 = percentile(&latencies, 0.99);
    outcome
}

/// Sends what initiator `i` has to send and takes note of its events.
async fn flush(
    i: usize,
    endpoint: &mut Endpoint,
    sockets: &[Arc<UdpSocket>; 2],
    started: &[Option<Instant>],
    done: &mut [bool],
    outcome: &mut Outcome,
    latencies: &mut Vec<Duration>,
) {
    while let Some(t) = endpoint.poll_transmit() {
        let socket = if t.local.port() == 4500 {
            &sockets[1]
        } else {
            &sockets[0]
        };
        let _ = socket.send_to(&t.payload, t.remote).await;
    }
    while let Some(e) = endpoint.poll_event() {
        if done[i] {
            continue;
        }
        let failure = match e {
            Event::ChildSaUp(_) => {
                done[i] = true;
                outcome.established += 1;
                if let Some(at) = started[i] {
                    latencies.push(at.elapsed());
                }
                continue;
            }
            Event::IkeSaDown { reason, .. } => format!("{reason:?}"),
            Event::ChildSaRefused { .. } => "child_refused".to_string(),
            _ => continue,
        };
        done[i] = true;
        let reason: String = failure
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        *outcome.failures.entry(reason).or_default() += 1;
    }
}

/// The CA, and the responder's certificate (broker.example.net), in `dir`.
fn make_pki(dir: &Path) {
    let ca = CertificateAuthority::generate("ike-load CA", KeyKind::EcdsaP256, 30).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.certificate()).expect("ca.pem");
    std::fs::write(dir.join("ca.key"), ca.private_key()).expect("ca.key");
    let broker = ca
        .issue(
            &CanonicalIdentity::parse("broker.example.net").unwrap(),
            Usage::Broker,
            KeyKind::EcdsaP256,
            30,
        )
        .expect("broker certificate");
    std::fs::write(dir.join("broker.pem"), &broker.certificate).expect("broker.pem");
    std::fs::write(dir.join("broker.key"), &broker.private_key).expect("broker.key");
}

/// A directory of the responder's own, with the PKI in it.
fn responder_dir(pki: &Path, name: &str) -> std::path::PathBuf {
    let dir = pki.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["ca.pem", "ca.key", "broker.pem", "broker.key"] {
        std::fs::copy(pki.join(f), dir.join(f)).expect("copy");
    }
    dir
}

/// The namespaces of one run.
struct Lab {
    responder: Netns,
    initiators: Netns,
    /// The CGNAT between them, if any.
    nat: Option<Netns>,
}

/// The responder's namespace and the initiators', joined by a link; the
/// initiators' whole 10.64.0.0/10 is local to theirs (any address in it
/// can be bound). Routed from the responder's, or with `cgnat` behind a
/// router that masquerades them all as one address (10.0.0.2), as a
/// carrier-grade NAT does.
fn namespaces(cgnat: bool) -> Lab {
    let (responder, initiators) = (Netns::new("sgloadr"), Netns::new("sgloadi"));
    initiators.run(&["ip", "route", "add", "local", "10.64.0.0/10", "dev", "lo"]);
    if !cgnat {
        sixgate_tests::link(&responder, "10.0.0.1/24", &initiators, "10.0.0.2/24");
        responder.run(&["ip", "route", "add", "10.64.0.0/10", "via", "10.0.0.2"]);
        return Lab {
            responder,
            initiators,
            nat: None,
        };
    }
    let nat = Netns::new("sgloadn");
    sixgate_tests::link(&responder, "10.0.0.1/24", &nat, "10.0.0.2/24");
    sixgate_tests::link(&nat, "10.1.0.1/24", &initiators, "10.1.0.2/24");
    initiators.run(&["ip", "route", "add", "default", "via", "10.1.0.1"]);
    nat.run(&["ip", "route", "add", "10.64.0.0/10", "via", "10.1.0.2"]);
    nat.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    nat.run(&[
        "nft",
        "add table ip cgnat; add chain ip cgnat post { type nat hook postrouting priority srcnat; }; add rule ip cgnat post ip daddr 10.0.0.1 masquerade",
    ]);
    Lab {
        responder,
        initiators,
        nat: Some(nat),
    }
}

fn start_sixgate(ns: &Netns, dir: &Path) -> Daemon {
    let d = dir.display();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"[ike]
listen = ["{RESPONDER}"]
identity = "broker.example.net"
certificate = "{d}/broker.pem"
private_key = "{d}/broker.key"
ca = ["{d}/ca.pem"]
[pool]
prefix = "2001:db8:100::/112"
[dataplane]
backend = "userspace"
[storage]
path = "{d}/state"
"#
        ),
    )
    .expect("broker.toml");
    let daemon = Daemon::spawn(
        ns,
        &sixgate_tests::workspace_bin("sixgate-broker"),
        &["run", "--config", config.to_str().expect("path")],
        dir.join("broker.log"),
    );
    let socket = dir.join("state/broker.sock");
    wait_for(Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&socket)
            .ok()
            .map(drop)
    })
    .unwrap_or_else(|| panic!("the broker did not start:\n{}", daemon.log_text()));
    daemon
}

/// strongSwan's tuning for many clients (IkeSaTable and the cookie and
/// block thresholds, raised for a load test), and quiet logs.
const CHARON_TUNING: &str = "ikesa_table_size = 4096
    ikesa_table_segments = 16
    cookie_threshold = 100000
    block_threshold = 100000
    init_limit_half_open = 0
    filelog { log { default = 0
        ike = 0
        cfg = 0
        enc = 0 } }";

fn start_strongswan(ns: &Netns, dir: &Path) -> StrongSwan {
    let swanctl = dir.join("swanctl");
    for sub in ["x509", "x509ca", "private"] {
        std::fs::create_dir_all(swanctl.join(sub)).expect("mkdir");
    }
    std::fs::copy(dir.join("ca.pem"), swanctl.join("x509ca/ca.pem")).expect("ca");
    std::fs::copy(dir.join("broker.pem"), swanctl.join("x509/broker.pem")).expect("cert");
    std::fs::copy(dir.join("broker.key"), swanctl.join("private/broker.key")).expect("key");
    std::fs::write(
        swanctl.join("swanctl.conf"),
        format!(
            r#"connections {{ load {{ version = 2
  local_addrs = {RESPONDER}
  pools = v6
  proposals = aes128gcm16-prfsha256-x25519
  local {{ auth = pubkey
    certs = broker.pem
    id = broker.example.net }}
  remote {{ auth = pubkey
    id = %any }}
  children {{ net {{ local_ts = ::/0
    esp_proposals = aes128gcm16 }} }} }} }}
pools {{ v6 {{ addrs = 2001:db8:100::/112 }} }}
"#
        ),
    )
    .expect("swanctl.conf");
    StrongSwan::start_with_swanctl_dir(ns, &swanctl, CHARON_TUNING)
}

/// What one responder did under the generator.
struct Run {
    outcome: Outcome,
    cpu: Duration,
    rss_growth_kib: u64,
    /// UDP datagrams the responder's kernel dropped for a full socket
    /// buffer, and the initiators'.
    rcvbuf_drops: (u64, u64),
    /// Packets the CGNAT's connection tracking dropped (a new flow whose
    /// port mapping lost a race with another's: `insert_failed`).
    nat_drops: Option<u64>,
}

/// The packets connection tracking dropped in a namespace, summed over
/// the CPUs (/proc/net/stat/nf_conntrack, hexadecimal).
fn conntrack_drops(ns: &Netns) -> u64 {
    let stat = ns.run(&["cat", "/proc/net/stat/nf_conntrack"]);
    let mut lines = stat.lines();
    let column = lines
        .next()
        .and_then(|h| h.split_whitespace().position(|c| c == "drop"));
    let Some(column) = column else { return 0 };
    lines
        .filter_map(|l| l.split_whitespace().nth(column))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// A namespace's UDP receive-buffer drops (RcvbufErrors, /proc/net/snmp).
fn rcvbuf_errors(ns: &Netns) -> u64 {
    let snmp = ns.run(&["cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == "RcvbufErrors").then(|| v.parse().ok()).flatten())
        .unwrap_or(0)
}

fn run_against(
    lab: &Lab,
    dir: &Path,
    responder_pid: u32,
    n: usize,
    rate: f64,
) -> Result<Run, String> {
    let initiators = &lab.initiators;
    let (cpu0, rss0) = (cpu_time(responder_pid), rss_kib(responder_pid));
    let drops0 = (rcvbuf_errors(&lab.responder), rcvbuf_errors(initiators));
    let nat0 = lab.nat.as_ref().map(conntrack_drops);
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = initiators.try_run(&[
        me.to_str().ok_or("path")?,
        "generate",
        dir.to_str().ok_or("path")?,
        &n.to_string(),
        &rate.to_string(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let outcome = text.lines().find_map(Outcome::from_line).ok_or_else(|| {
        format!(
            "the generator: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(Run {
        outcome,
        cpu: cpu_time(responder_pid) - cpu0,
        rss_growth_kib: rss_kib(responder_pid).saturating_sub(rss0),
        rcvbuf_drops: (
            rcvbuf_errors(&lab.responder) - drops0.0,
            rcvbuf_errors(initiators) - drops0.1,
        ),
        nat_drops: lab
            .nat
            .as_ref()
            .map(conntrack_drops)
            .zip(nat0)
            .map(|(a, b)| a - b),
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("generate") {
        let dir = args.next().expect("dir");
        let n: usize = args.next().and_then(|a| a.parse().ok()).expect("N");
        let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let outcome = runtime.block_on(generate(Path::new(&dir), n, rate));
        println!("{}", outcome.to_line());
        return;
    }
    let rest: Vec<String> = first.into_iter().chain(args).collect();
    let cgnat = rest.iter().any(|a| a == "--cgnat");
    let mut numbers = rest.iter().filter_map(|a| a.parse::<f64>().ok());
    let n = numbers.next().map_or(200, |n| n as usize);
    let rate = numbers.next().unwrap_or(0.0);
    let dir = TempDir::new("sgload");
    make_pki(dir.path());

    let sixgate = {
        let lab = namespaces(cgnat);
        let run_dir = responder_dir(dir.path(), "sixgate");
        let broker = start_sixgate(&lab.responder, &run_dir);
        run_against(&lab, &run_dir, broker.pid(), n, rate)
    };
    let strongswan = {
        let lab = namespaces(cgnat);
        let run_dir = responder_dir(dir.path(), "strongswan");
        let charon = start_strongswan(&lab.responder, &run_dir);
        run_against(&lab, &run_dir, charon.pid(), n, rate)
    };

    let how = if rate > 0.0 {
        format!("{rate} per second")
    } else {
        "all at once".to_string()
    };
    let from = if cgnat {
        "behind one CGNAT address"
    } else {
        "one address each"
    };
    println!("{n} initiators (one identity and certificate each, {from}), {how}");
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9} {:>13} {:>12} {:>17}  failures",
        "responder",
        "up",
        "setups/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/setup",
        "KiB/tunnel",
        "UDP drops"
    );
    let mut per_setup = Vec::new();
    for (name, run) in [
        ("sixgate-broker (userspace ESP)", &sixgate),
        ("strongSwan charon (kernel-libipsec)", &strongswan),
    ] {
        match run {
            Ok(r) => {
                let o = &r.outcome;
                let up = o.established.max(1) as f64;
                let cpu_ms = r.cpu.as_secs_f64() * 1000.0 / up;
                per_setup.push(cpu_ms);
                let failures: Vec<String> =
                    o.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let mut drops = format!("{}/{}", r.rcvbuf_drops.0, r.rcvbuf_drops.1);
                if let Some(nat) = r.nat_drops {
                    drops.push_str(&format!(" NAT {nat}"));
                }
                println!(
                    "{name:<34} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>13.2} {:>12.1} {drops:>17}  {}",
                    o.established,
                    o.established as f64 / o.elapsed.as_secs_f64(),
                    o.p50.as_secs_f64() * 1000.0,
                    o.p99.as_secs_f64() * 1000.0,
                    cpu_ms,
                    r.rss_growth_kib as f64 / up,
                    if failures.is_empty() {
                        "none".into()
                    } else {
                        failures.join(", ")
                    }
                );
            }
            Err(e) => println!("{name:<34} failed: {e}"),
        }
    }
    println!("(CPU and memory: the responder's own process; the initiators run beside it;");
    println!(" UDP drops: datagrams lost to full socket buffers, responder/initiators, and");
    println!(" with --cgnat those the NAT's connection tracking dropped)");
    if let [s, w] = per_setup[..] {
        println!(
            "setups per CPU-second, sixgate / strongSwan = {:.2}  (target >= 5)",
            w / s
        );
    }
}
