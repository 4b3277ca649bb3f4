//! The running client: one IKE SA to the broker at a time, re-established
//! with exponential backoff whenever it goes down. The runtime installs
//! the address, routes and DNS settings that follow it; this module is the
//! reconnect policy, the control socket's answers and the CLI's printing.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sixgate_dataplane::dns::{ResolvConf, Resolver};
use sixgate_dataplane::plane::DataPlane;
use sixgate_dataplane::rtnl;
use sixgate_dataplane::secrets;
use sixgate_dataplane::udp::IkeSockets;
use sixgate_dataplane::xfrm::Owner;
use sixgate_proto::endpoint::{ts, ConnectRequest, DownReason, Event, SaId};
use sixgate_runtime::control::{self, Incoming};
use sixgate_runtime::engine::{self, Command, Connection, Parts, Role, RuntimeHandle, Traffic};
use sixgate_runtime::pki::Credentials;
use sixgate_runtime::privileges::{self, Capability, RunAs};
use sixgate_runtime::{clock, notify, plane, process};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::config::{Config, DEFAULT_DEVICE};

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Status,
    Down,
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Status(Box<Status>),
    Stopping,
    Error(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Status {
    state: String,
    broker: String,
    address: Option<Ipv6Addr>,
    dns: Vec<IpAddr>,
    traffic: Traffic,
    connected_secs: Option<u64>,
    reconnects: u64,
    last_error: Option<String>,
    /// Seconds until the next attempt, while waiting for one.
    next_attempt_secs: Option<u64>,
    /// The IKE SA with its algorithms, SPIs and timers, while there is one.
    #[serde(default)]
    ike_sa: Option<Connection>,
}

/// The tunnel as the reconnect policy sees it.
#[derive(Default)]
struct Tunnel {
    sa: Option<SaId>,
    /// The broker's address of the current (or last) attempt.
    broker: Option<SocketAddr>,
    up_since: Option<SystemTime>,
    reconnects: u64,
    last_error: Option<String>,
    /// Why the broker refused the last attempt, if it did.
    refusal: Option<String>,
    /// Attempts in a row refused for a reason a retry will not change.
    permanent_refusals: u32,
}

/// Refusals in a row after which the client stops trying every few
/// seconds: a wrong certificate or proposal does not fix itself, and a
/// broker should not see the same refused attempt every 30 s forever.
const PERMANENT_REFUSALS: u32 = 3;
/// How long it then waits between attempts (an operator may still fix
/// the broker's side: a CA, a revocation, a proposal).
const PERMANENT_BACKOFF: Duration = Duration::from_secs(300);

/// Whether another attempt soon would be refused again for the same reason:
/// authentication or proposals refused by either side, or a revocation.
fn is_permanent(reason: &DownReason) -> bool {
    use sixgate_proto::wire::NotifyType;
    match reason {
        DownReason::RefusedByPeer(n) | DownReason::RefusedPeer(n, _) => matches!(
            *n,
            NotifyType::AUTHENTICATION_FAILED
                | NotifyType::NO_PROPOSAL_CHOSEN
                | NotifyType::TS_UNACCEPTABLE
        ),
        DownReason::Revoked => true,
        _ => false,
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How long address and route changes must settle before the client
/// looks at where its traffic to the broker leaves now.
const ADDRESS_SETTLE: Duration = Duration::from_millis(300);

/// The local address the kernel would use towards the broker.
fn local_address(broker: IpAddr) -> Result<IpAddr, String> {
    let probe = std::net::UdpSocket::bind(SocketAddr::new(
        if broker.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))
    .map_err(|e| e.to_string())?;
    // connect() on UDP sends nothing; it only picks the route.
    probe
        .connect(SocketAddr::new(broker, 500))
        .map_err(|e| format!("no route to the broker {broker}: {e}"))?;
    Ok(probe.local_addr().map_err(|e| e.to_string())?.ip())
}

/// The broker's address now (a name is looked up each time).
fn resolve_broker(config: &Config) -> Result<SocketAddr, String> {
    let broker = &config.broker.0;
    let addrs = broker
        .resolve()
        .map_err(|e| format!("resolving the broker {broker}: {e}"))?;
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("the broker {broker} has no address"))
}

/// Restarts this program detached (`up` without `--daemon`), and returns
/// once its control socket answers.
pub fn detach(path: &Path, config: &Config, log_level: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = config.control_socket.with_extension("log");
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let log_file =
        secrets::open_private_log(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = std::process::Command::new(exe)
        .arg("--log-level")
        .arg(log_level)
        .arg("up")
        .arg("--config")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the daemon exited ({status}); see {}",
                log.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(&config.control_socket).is_ok() {
            println!(
                "sixgate-client: running (pid {}), log in {}",
                child.id(),
                log.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the daemon did not start; see {}", log.display()))
}

/// What the client does as root, before any thread exists: read its
/// credentials, make its run directory its user's, and give up everything
/// but CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (and, to rewrite
/// /etc/resolv.conf as another user than root, CAP_DAC_OVERRIDE).
pub fn prepare(config: &Config) -> Result<Credentials, String> {
    secrets::restrict_umask();
    // The same findings as `check` (but the ports, which binding finds).
    let (findings, credentials) = crate::check::findings(config, false, clock::unix_now());
    findings.conclude(&config.path)?;
    let credentials = credentials.ok_or("the credentials did not load")?;
    let run_as = config
        .process
        .user
        .as_deref()
        .map(RunAs::lookup)
        .transpose()?;
    let mut keep = privileges::KEPT.to_vec();
    if let Some(user) = &run_as {
        if let Some(dir) = config.control_socket.parent() {
            secrets::private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            user.own_tree(dir, &[])?;
        }
        if config.set_dns {
            keep.push(Capability::CAP_DAC_OVERRIDE);
        }
    }
    privileges::drop_privileges(run_as.as_ref(), &keep)?;
    Ok(credentials)
}

pub async fn run(config: Config, credentials: Credentials) -> Result<(), String> {
    // Without a fixed `local`, the sockets take any address, so that the
    // tunnel survives a move to another network (MOBIKE): the address the
    // kernel would use towards the broker is looked up again whenever the
    // host's IPv4 addresses or routes change.
    let (bind, mut local) = match config.local {
        Some(a) => (a, a),
        None => (
            IpAddr::from([0u8; 4]),
            local_address(resolve_broker(&config)?.ip())?,
        ),
    };
    let sockets = IkeSockets::bind(&[bind], 500, 4500)
        .await
        .map_err(|e| format!("binding IKE ports on {bind}: {e}"))?;
    let nat_t = sockets
        .socket(SocketAddr::new(local, 4500))
        .ok_or("no NAT-T socket")?;
    let child_lifetime = Duration::from_secs(config.child_lifetime);
    let plane = config
        .dataplane
        .plane_config(Owner::Client, DEFAULT_DEVICE, local, child_lifetime);
    let (dp, kernel_events) = DataPlane::start(&plane, nat_t)?;
    let dp = Arc::new(dp);
    let dns = config.set_dns.then(|| {
        let file = ResolvConf::new(
            "/etc/resolv.conf",
            config.control_socket.with_extension("resolv.conf.saved"),
        );
        // A run that was killed left its servers in place (in resolv.conf:
        // resolved's settings went with the device).
        match file.restore() {
            Ok(true) => tracing::info!("restored /etc/resolv.conf as it was before a crash"),
            Ok(false) => {}
            Err(e) => tracing::warn!("restoring /etc/resolv.conf: {e}"),
        }
        let resolver = Resolver::of_system(&plane.device, file);
        tracing::info!("DNS servers go to {}", resolver.describe());
        resolver
    });

    let mut ike = credentials.endpoint_config();
    ike.force_udp_encapsulation =
        dp.forces_udp_encapsulation() || config.dataplane.force_udp_encapsulation;
    ike.dpd_interval = Duration::from_secs(config.dpd_interval);
    ike.mobike = config.mobike;
    ike.dead_after = Some(Duration::from_secs(config.dead_after));
    ike.retransmit_timeout = Duration::from_millis(config.retransmit_timeout_ms);
    ike.retransmit_tries = config.retransmit_tries;
    ike.child_lifetime = child_lifetime;
    ike.rekey_jitter = ike.child_lifetime / 10;
    let kernel_events = plane::kernel_events(&dp, kernel_events);
    let mut runtime = engine::spawn(Parts {
        ike: Arc::new(ike),
        role: Role::Initiator { dns },
        sockets,
        plane: dp.clone(),
        esp: dp.esp_handler(),
        kernel_events,
        peer_moves: dp.peer_moves(),
        leases: None,
        revocations: Default::default(),
    })
    .map_err(|e| format!("starting the runtime: {e}"))?;
    let listener = control::bind(&config.control_socket)
        .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;
    let mut requests = control::serve::<Request, Response>(listener, Response::Error);
    notify::notify(&format!(
        "READY=1\nSTATUS=connecting to {}",
        config.broker.0
    ));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    if config.local.is_none() {
        if let Err(e) = rtnl::watch_ipv4(changed_tx) {
            tracing::warn!("not following address changes (rtnetlink: {e})");
        }
    }
    let mut recheck_at: Option<tokio::time::Instant> = None;
    let mut tunnel = Tunnel::default();
    let mut backoff = Duration::from_secs(1);
    let mut retry_at: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    let mut stopping = false;
    loop {
        let retry = sleep_until_or_never(retry_at);
        let recheck = sleep_until_or_never(recheck_at);
        tokio::select! {
            Some(()) = changed.recv() => {
                // A change comes in bursts (address, then routes): look
                // once they settled.
                recheck_at = Some(tokio::time::Instant::now() + ADDRESS_SETTLE);
            }
            () = recheck => {
                recheck_at = None;
                let Some(broker) = tunnel.broker else { continue };
                match local_address(broker.ip()) {
                    Ok(now) if now != local => {
                        tracing::info!("our address towards the broker is now {now} (was {local})");
                        local = now;
                        if let Some(sa) = tunnel.sa {
                            let (tx, rx) = oneshot::channel();
                            let _ = runtime.commands.send(Command::Roam(sa, now, tx));
                            if !rx.await.unwrap_or(false) {
                                tracing::info!("the tunnel cannot move to {now} (no MOBIKE); connecting anew");
                                let _ = runtime.commands.send(Command::DeleteIkeSa(sa));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::info!("{e}"),
                }
            }
            () = retry => {
                retry_at = None;
                let target = resolve_broker(&config).and_then(|remote| match config.local {
                    Some(_) => Ok((remote, local)),
                    None => local_address(remote.ip()).map(|l| (remote, l)),
                });
                match target {
                    Ok((remote, from)) => {
                        local = from;
                        tunnel.broker = Some(remote);
                        tracing::info!("connecting to {} ({remote})", config.broker.0);
                        let request = ConnectRequest {
                            remote,
                            local: SocketAddr::new(local, 500),
                            remote_identity: Some(config.broker_identity.0.clone()),
                            request_address: true,
                            initial_contact: true,
                            local_ts: vec![ts::ipv6_any()],
                            remote_ts: vec![ts::ipv6_any()],
                        };
                        let (tx, rx) = oneshot::channel();
                        let _ = runtime.commands.send(Command::Connect(request, tx));
                        tunnel.sa = rx.await.ok();
                    }
                    Err(e) => {
                        tracing::warn!("{e}; trying again in {}s", backoff.as_secs());
                        tunnel.last_error = Some(e);
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            event = runtime.events.recv() => {
                let Some(event) = event else { break };
                if let Some(reason) = on_event(&event, &mut tunnel) {
                    if stopping {
                        break;
                    }
                    // A refusal says more than the delete that follows it.
                    tunnel.last_error = Some(tunnel.refusal.take().unwrap_or_else(|| reason.to_string()));
                    // After a working tunnel, try again at once; after a
                    // failed attempt, back off: 1, 2, 4, ... 30 s.
                    if tunnel.up_since.take().is_some() {
                        backoff = Duration::from_secs(1);
                    }
                    let mut wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    tunnel.reconnects += 1;
                    if is_permanent(&reason) {
                        tunnel.permanent_refusals += 1;
                    } else {
                        tunnel.permanent_refusals = 0;
                    }
                    if reason == DownReason::Replaced {
                        // Another device with our identity took over: a
                        // reconnect now would only throw it out in turn.
                        wait = PERMANENT_BACKOFF;
                        tracing::warn!(
                            "the broker replaced this tunnel with a newer connection of the same \
                             identity; not taking it back: trying again in {}s",
                            wait.as_secs()
                        );
                    } else if tunnel.permanent_refusals >= PERMANENT_REFUSALS {
                        wait = PERMANENT_BACKOFF;
                        tracing::warn!(
                            "refused {} times in a row ({reason}), which retrying will not \
                             change; trying again in {}s",
                            tunnel.permanent_refusals,
                            wait.as_secs()
                        );
                    } else {
                        tracing::info!("tunnel down ({reason}); reconnecting in {}s", wait.as_secs());
                    }
                    retry_at = Some(tokio::time::Instant::now() + wait);
                }
            }
            Some(Incoming { request, reply }) = requests.recv() => {
                let response = match request {
                    Request::Status => Response::Status(Box::new(current_status(&config, &tunnel, retry_at, &runtime).await)),
                    Request::Down => {
                        stopping = true;
                        Response::Stopping
                    }
                };
                let _ = reply.send(response);
                if stopping {
                    break;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Tell the broker, wait a little for its answer, then remove the
    // address, routes, SAs and DNS settings, the device and the socket.
    notify::notify("STOPPING=1");
    runtime.shutdown(Duration::from_secs(3)).await;
    let _ = std::fs::remove_file(&config.control_socket);
    dp.stop();
    Ok(())
}

/// Follows the tunnel's events; returns the reason if it went down.
fn on_event(event: &Event, tunnel: &mut Tunnel) -> Option<DownReason> {
    match event {
        Event::AddressAssigned { .. } => {
            tunnel.up_since = Some(SystemTime::now());
            tunnel.last_error = None;
            tunnel.permanent_refusals = 0;
        }
        Event::ChildSaRefused { notify, .. } => {
            tunnel.refusal = Some(format!(
                "the broker refused the tunnel: {}",
                notify.describe()
            ));
        }
        Event::IkeSaDown { sa, reason, .. } if tunnel.sa == Some(*sa) => {
            tunnel.sa = None;
            return Some(reason.clone());
        }
        _ => {}
    }
    None
}

/// The status `status` prints; `retry_at` is when the next attempt is due.
async fn current_status(
    config: &Config,
    tunnel: &Tunnel,
    retry_at: Option<tokio::time::Instant>,
    runtime: &RuntimeHandle,
) -> Status {
    let (tx, rx) = oneshot::channel();
    let _ = runtime.commands.send(Command::Connections(tx));
    let connection = rx
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|c| Some(SaId(c.sa)) == tunnel.sa);
    let address = connection.as_ref().and_then(|c| c.address);
    Status {
        state: match (tunnel.sa, address) {
            (Some(_), Some(_)) => "up".into(),
            (Some(_), None) => "connecting".into(),
            (None, _) => "waiting to reconnect".into(),
        },
        broker: config.broker.0.to_string(),
        address,
        dns: connection
            .as_ref()
            .map(|c| c.dns.clone())
            .unwrap_or_default(),
        traffic: connection.as_ref().map(|c| c.traffic).unwrap_or_default(),
        connected_secs: tunnel
            .up_since
            .and_then(|t| t.elapsed().ok())
            .map(|d| d.as_secs()),
        reconnects: tunnel.reconnects,
        last_error: tunnel.last_error.clone(),
        next_attempt_secs: retry_at.filter(|_| tunnel.sa.is_none()).map(|t| {
            t.saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
        }),
        ike_sa: connection,
    }
}

pub async fn down(config: &Config) -> Result<(), String> {
    match control::ask(&config.control_socket, &Request::Down)
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Stopping => {
            // Wait for the daemon to finish tearing down.
            for _ in 0..100 {
                if !config.control_socket.exists() {
                    println!("sixgate-client: down");
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err("the daemon did not stop in time".into())
        }
        Response::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

pub async fn print_status(config: &Config, json: bool) -> Result<(), String> {
    match control::ask(&config.control_socket, &Request::Status)
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Status(s) if json => process::print_json(&s),
        Response::Status(s) => {
            println!("state:      {}", s.state);
            println!("broker:     {}", s.broker);
            println!(
                "address:    {}",
                s.address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into())
            );
            let dns: Vec<String> = s.dns.iter().map(|d| d.to_string()).collect();
            println!(
                "dns:        {}",
                if dns.is_empty() {
                    "-".into()
                } else {
                    dns.join(" ")
                }
            );
            println!("bytes in:   {}", s.traffic.bytes_in);
            println!("bytes out:  {}", s.traffic.bytes_out);
            println!("spoofed:    {}", s.traffic.dropped_spoofed);
            if let Some(t) = s.connected_secs {
                println!("connected:  {t}s");
            }
            println!("reconnects: {}", s.reconnects);
            if let Some(e) = s.last_error {
                println!("last error: {e}");
            }
            if let Some(t) = s.next_attempt_secs {
                println!("next try:   in {t}s");
            }
            for line in s.ike_sa.iter().flat_map(Connection::sa_lines) {
                println!("{line}");
            }
            Ok(())
        }
        Response::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
