//! The running client: one IKE SA to the broker at a time, re-established
//! with exponential backoff whenever it goes down, and the address, route
//! and DNS settings that follow it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sixgate_dataplane::plane::{self, DataPlane};
use sixgate_dataplane::udp::{self, Command, DriverHandle, IkeSockets};
use sixgate_dataplane::userspace::SaCounters;
use sixgate_dataplane::xfrm::Owner;
use sixgate_dataplane::{control, pki, secrets};
use sixgate_proto::endpoint::{self, ts, ConnectRequest, DownReason, Event, SaId};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, DEFAULT_DEVICE};

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Status,
    Down,
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Status(Status),
    Stopping,
    Error(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Status {
    state: String,
    broker: String,
    address: Option<Ipv6Addr>,
    dns: Vec<IpAddr>,
    bytes_in: u64,
    bytes_out: u64,
    /// Packets from the broker that decrypted but were not IPv6 or came
    /// from outside the negotiated selectors.
    dropped_spoofed: u64,
    connected_secs: Option<u64>,
    reconnects: u64,
    last_error: Option<String>,
}

/// The tunnel as it stands.
struct Tunnel {
    sa: Option<SaId>,
    up_since: Option<SystemTime>,
    address: Option<Ipv6Addr>,
    dns: Vec<IpAddr>,
    children: Vec<u32>,
    reconnects: u64,
    last_error: Option<String>,
    /// Why the broker refused the last attempt, if it did.
    refusal: Option<String>,
    /// The traffic of this connection's Child SAs that are gone (rekeyed).
    retired: SaCounters,
}

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

/// Restarts this program detached (`up` without `--daemon`), and returns
/// once its control socket answers.
pub fn detach(path: &Path, config: &Config) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = config.control_socket.with_extension("log");
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let log_file =
        secrets::open_private_log(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = std::process::Command::new(exe)
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

pub async fn run(config: Config) -> Result<(), String> {
    secrets::restrict_umask();
    let chain = pki::load_chain(&config.certificate)?;
    let identity = pki::own_identity(&config.identity, &chain)?;
    let broker_identity = pki::parse_identity(&config.broker_identity)?;
    let key = pki::load_key(&config.private_key)?;
    pki::check_key_matches(&chain, &key)
        .map_err(|e| format!("{}: {e}", config.private_key.display()))?;
    let anchors = pki::load_anchors(&config.ca)?;
    let local = match config.local {
        Some(a) => a,
        None => local_address(config.broker)?,
    };
    let sockets = IkeSockets::bind(&[local], 500, 4500)
        .await
        .map_err(|e| format!("binding IKE ports on {local}: {e}"))?;
    let nat_t = sockets
        .socket(SocketAddr::new(local, 4500))
        .ok_or("no NAT-T socket")?;
    let child_lifetime = Duration::from_secs(config.child_lifetime);
    let plane = config
        .dataplane
        .plane_config(Owner::Client, DEFAULT_DEVICE, local, child_lifetime);
    let (dp, mut kernel_events) = DataPlane::start(&plane, nat_t)?;

    let mut ike = endpoint::Config::new(identity, chain, Arc::new(key), anchors);
    ike.force_udp_encapsulation =
        dp.forces_udp_encapsulation() || config.dataplane.force_udp_encapsulation;
    ike.dpd_interval = Duration::from_secs(config.dpd_interval);
    ike.retransmit_timeout = Duration::from_millis(config.retransmit_timeout_ms);
    ike.retransmit_tries = config.retransmit_tries;
    ike.child_lifetime = child_lifetime;
    ike.rekey_jitter = ike.child_lifetime / 10;
    let mut driver = udp::spawn(Arc::new(ike), sockets, dp.esp_handler(), |_| {});
    let listener = control::bind(&config.control_socket)
        .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let request = ConnectRequest {
        remote: SocketAddr::new(config.broker, 500),
        local: SocketAddr::new(local, 500),
        remote_identity: Some(broker_identity),
        request_address: true,
        initial_contact: true,
        local_ts: vec![ts::ipv6_any()],
        remote_ts: vec![ts::ipv6_any()],
    };
    let mut tunnel = Tunnel {
        sa: None,
        up_since: None,
        address: None,
        dns: Vec::new(),
        children: Vec::new(),
        reconnects: 0,
        last_error: None,
        refusal: None,
        retired: SaCounters::default(),
    };
    let mut backoff = Duration::from_secs(1);
    let mut retry_at: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    let mut stopping = false;
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = retry => {
                retry_at = None;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = driver.commands.send(Command::Connect(request.clone(), tx));
                tunnel.sa = rx.await.ok();
                eprintln!("sixgate-client: connecting to {}", config.broker);
            }
            event = driver.events.recv() => {
                let Some(event) = event else { break };
                if let Some(reason) = handle_event(event, &dp, &config, &mut tunnel) {
                    if stopping {
                        break;
                    }
                    // A refusal says more than the delete that follows it.
                    tunnel.last_error = Some(tunnel.refusal.take().unwrap_or_else(|| format!("{reason:?}")));
                    // After a working tunnel, try again at once; after a
                    // failed attempt, back off: 1, 2, 4, ... 30 s.
                    if tunnel.up_since.take().is_some() {
                        backoff = Duration::from_secs(1);
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    tunnel.reconnects += 1;
                    eprintln!("sixgate-client: tunnel down ({reason:?}); reconnecting in {}s", wait.as_secs());
                    retry_at = Some(tokio::time::Instant::now() + wait);
                }
            }
            Some(event) = plane::next_kernel_event(&mut kernel_events) => {
                if let Some(command) = dp.on_kernel_event(event) {
                    let _ = driver.commands.send(command);
                }
            }
            conn = listener.accept() => {
                let Ok((mut stream, _)) = conn else { continue };
                let response = match control::read_request::<Request>(&mut stream).await {
                    Ok(Request::Status) => Response::Status(current_status(&config, &tunnel, &dp)),
                    Ok(Request::Down) => {
                        stopping = true;
                        Response::Stopping
                    }
                    Err(e) => Response::Error(e.to_string()),
                };
                let _ = control::write_response(&mut stream, &response).await;
                if stopping && !stop(&mut driver, &tunnel).await {
                    break;
                }
            }
            _ = term.recv() => { stopping = true; if !stop(&mut driver, &tunnel).await { break } }
            _ = int.recv() => { stopping = true; if !stop(&mut driver, &tunnel).await { break } }
        }
        if stopping && tunnel.sa.is_none() {
            break;
        }
    }
    // Whatever is left: address, route, SAs, the TUN device, the socket.
    teardown(&dp, &mut tunnel);
    let _ = driver.commands.send(Command::Shutdown);
    let _ = std::fs::remove_file(&config.control_socket);
    dp.stop();
    Ok(())
}

/// Starts an orderly stop; returns whether to wait for the IKE SA's end.
async fn stop(driver: &mut DriverHandle, tunnel: &Tunnel) -> bool {
    match tunnel.sa {
        Some(sa) => {
            let _ = driver.commands.send(Command::DeleteIkeSa(sa));
            // Do not wait for an unresponsive broker for long.
            let commands = driver.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = commands.send(Command::Shutdown);
            });
            true
        }
        None => false,
    }
}

/// Acts on an event; returns the reason if the tunnel went down.
fn handle_event(
    event: Event,
    dp: &DataPlane,
    config: &Config,
    tunnel: &mut Tunnel,
) -> Option<DownReason> {
    match event {
        // Counts are per connection.
        Event::IkeSaUp { .. } => tunnel.retired = SaCounters::default(),
        Event::AddressAssigned { address, dns, .. } => {
            let addr = address.0;
            if let Err(e) = dp.set_virtual_address(addr) {
                eprintln!("sixgate-client: address {addr} and default route: {e}");
            }
            if config.resolv_conf && !dns.is_empty() {
                let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
                if let Err(e) = std::fs::write("/etc/resolv.conf", text) {
                    eprintln!("sixgate-client: /etc/resolv.conf: {e}");
                }
            }
            eprintln!("sixgate-client: up with {addr}, DNS {dns:?}");
            tunnel.up_since = Some(SystemTime::now());
            tunnel.last_error = None;
            tunnel.address = Some(addr);
            tunnel.dns = dns;
        }
        Event::ChildSaUp(child) | Event::ChildSaRekeyed { new: child, .. } => {
            if let Err(e) = dp.install(&child) {
                eprintln!("sixgate-client: installing SA: {e}");
            }
            tunnel.children.push(child.inbound_spi);
        }
        Event::ChildSaDown { inbound_spi, .. } => {
            tunnel.retired.absorb(dp.retire(inbound_spi));
            tunnel.children.retain(|s| *s != inbound_spi);
        }
        Event::ChildSaRefused { notify, .. } => {
            tunnel.refusal = Some(format!("broker refused the tunnel: {notify:?}"));
        }
        Event::IkeSaDown { sa, reason } => {
            if tunnel.sa == Some(sa) {
                teardown(dp, tunnel);
                tunnel.sa = None;
                return Some(reason);
            }
        }
        Event::IkeSaRekeyed { .. } => {}
    }
    None
}

fn teardown(dp: &DataPlane, tunnel: &mut Tunnel) {
    for spi in tunnel.children.drain(..) {
        dp.remove(spi);
    }
    if let Some(addr) = tunnel.address.take() {
        dp.clear_virtual_address(addr);
    }
    tunnel.dns.clear();
}

fn current_status(config: &Config, tunnel: &Tunnel, dp: &DataPlane) -> Status {
    let mut s = Status {
        state: match (tunnel.sa, tunnel.address) {
            (Some(_), Some(_)) => "up".into(),
            (Some(_), None) => "connecting".into(),
            (None, _) => "waiting to reconnect".into(),
        },
        broker: config.broker.to_string(),
        address: tunnel.address,
        dns: tunnel.dns.clone(),
        connected_secs: tunnel
            .up_since
            .and_then(|t| t.elapsed().ok())
            .map(|d| d.as_secs()),
        reconnects: tunnel.reconnects,
        last_error: tunnel.last_error.clone(),
        ..Status::default()
    };
    let total = dp.totals(tunnel.retired, tunnel.children.iter().copied());
    s.bytes_in = total.inbound.bytes;
    s.bytes_out = total.outbound.bytes;
    s.dropped_spoofed = total.inbound.spoofed;
    s
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

pub async fn print_status(config: &Config) -> Result<(), String> {
    match control::ask(&config.control_socket, &Request::Status)
        .await
        .map_err(|e| e.to_string())?
    {
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
            println!("bytes in:   {}", s.bytes_in);
            println!("bytes out:  {}", s.bytes_out);
            println!("spoofed:    {}", s.dropped_spoofed);
            if let Some(t) = s.connected_secs {
                println!("connected:  {t}s");
            }
            println!("reconnects: {}", s.reconnects);
            if let Some(e) = s.last_error {
                println!("last error: {e}");
            }
            Ok(())
        }
        Response::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
