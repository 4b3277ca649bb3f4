//! WireGuard devices driven through the cross-platform UAPI socket
//! (`/var/run/wireguard/NAME.sock`), as wireguard-go serves it. sixgate
//! configures WireGuard; it does not implement it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A 32-octet WireGuard key.
pub type Key = [u8; 32];

fn hex(k: &Key) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// A peer as the device reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Seconds since the Unix epoch of the latest handshake (0: none).
    pub last_handshake: u64,
    /// Octets received from the peer.
    pub rx_bytes: u64,
    /// Octets sent to the peer.
    pub tx_bytes: u64,
}

/// One peer's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its public key.
    pub public_key: Key,
    /// The preshared key.
    pub preshared_key: Key,
    /// AllowedIPs, as "ADDRESS/LENGTH".
    pub allowed_ips: Vec<String>,
}

/// A userspace WireGuard device: a wireguard-go process and its socket.
pub struct UserspaceDevice {
    name: String,
    process: Child,
}

impl UserspaceDevice {
    fn socket_path(name: &str) -> PathBuf {
        PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
    }

    /// Starts wireguard-go for `name` and waits for its socket.
    pub fn start(name: &str) -> io::Result<UserspaceDevice> {
        // A socket left by a crashed run would answer for a device that is
        // not ours (or not there): it goes first.
        let _ = std::fs::remove_file(Self::socket_path(name));
        let process = Command::new("wireguard-go")
            .args(["-f", name])
            // It refuses to run beside a kernel that could do WireGuard
            // unless told that this is wanted.
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting wireguard-go: {e}")))?;
        let mut device = UserspaceDevice {
            name: name.to_string(),
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let link_exists = || {
            Command::new("ip")
                .args(["link", "show", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        while UnixStream::connect(Self::socket_path(name)).is_err() || !link_exists() {
            if let Ok(Some(status)) = device.process.try_wait() {
                return Err(io::Error::other(format!(
                    "wireguard-go for {name} exited: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "wireguard-go for {name} did not open its socket"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(device)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: &str) -> io::Result<Vec<(String, String)>> {
        let mut stream = UnixStream::connect(Self::socket_path(&self.name))?;
        stream.write_all(request.as_bytes())?;
        let mut pairs = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                pairs.push((k.to_string(), v.to_string()));
            }
        }
        match pairs.iter().find(|(k, _)| k == "errno") {
            Some((_, errno)) if errno != "0" => Err(io::Error::other(format!(
                "{}: UAPI errno {errno}",
                self.name
            ))),
            _ => Ok(pairs),
        }
    }

    /// Sets the private key and port, and replaces all peers with `peers`.
    pub fn configure(&self, private_key: &Key, listen_port: u16, peers: &[Peer]) -> io::Result<()> {
        let mut req = format!(
            "set=1\nprivate_key={}\nlisten_port={listen_port}\nreplace_peers=true\n",
            hex(private_key)
        );
        for p in peers {
            req.push_str(&peer_lines(p));
        }
        req.push('\n');
        self.call(&req).map(|_| ())
    }

    /// Adds or updates one peer.
    pub fn set_peer(&self, peer: &Peer) -> io::Result<()> {
        self.call(&format!("set=1\n{}\n", peer_lines(peer)))
            .map(|_| ())
    }

    /// Removes one peer.
    pub fn remove_peer(&self, public_key: &Key) -> io::Result<()> {
        self.call(&format!(
            "set=1\npublic_key={}\nremove=true\n\n",
            hex(public_key)
        ))
        .map(|_| ())
    }

    /// The peers' handshake times and counters, by public key (hex).
    pub fn peer_stats(&self) -> io::Result<HashMap<String, PeerStats>> {
        let mut out: HashMap<String, PeerStats> = HashMap::new();
        let mut current: Option<String> = None;
        for (k, v) in self.call("get=1\n\n")? {
            match k.as_str() {
                "public_key" => {
                    out.entry(v.clone()).or_default();
                    current = Some(v);
                }
                "last_handshake_time_sec" | "rx_bytes" | "tx_bytes" => {
                    if let Some(s) = current.as_ref().and_then(|c| out.get_mut(c)) {
                        let n = v.parse().unwrap_or(0);
                        match k.as_str() {
                            "last_handshake_time_sec" => s.last_handshake = n,
                            "rx_bytes" => s.rx_bytes = n,
                            _ => s.tx_bytes = n,
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Stops wireguard-go, which removes the interface and its socket.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_file(Self::socket_path(&self.name));
    }
}

fn peer_lines(p: &Peer) -> String {
    let mut s = format!(
        "public_key={}\npreshared_key={}\nreplace_allowed_ips=true\n",
        hex(&p.public_key),
        hex(&p.preshared_key)
    );
    for ip in &p.allowed_ips {
        s.push_str(&format!("allowed_ip={ip}\n"));
    }
    s
}

/// The hex form the UAPI uses for a key (for matching [`PeerStats`]).
pub fn key_hex(k: &Key) -> String {
    hex(k)
}

/// A kernel WireGuard device, configured through `wg` (which speaks the
/// kernel's generic netlink interface).
pub struct KernelDevice {
    name: String,
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn b64(k: &Key) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(k)
}

impl KernelDevice {
    /// Creates the interface (fails where the kernel has no WireGuard).
    pub fn start(name: &str) -> io::Result<KernelDevice> {
        run("ip", &["link", "add", name, "type", "wireguard"], None)?;
        Ok(KernelDevice {
            name: name.to_string(),
        })
    }

    fn peer_conf(p: &Peer) -> String {
        format!(
            "[Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = {}\n",
            b64(&p.public_key),
            b64(&p.preshared_key),
            p.allowed_ips.join(", ")
        )
    }

    /// Sets the private key and port, and replaces all peers.
    pub fn configure(&self, private_key: &Key, listen_port: u16, peers: &[Peer]) -> io::Result<()> {
        let mut conf = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {listen_port}\n",
            b64(private_key)
        );
        for p in peers {
            conf.push_str(&Self::peer_conf(p));
        }
        run("wg", &["setconf", &self.name, "/dev/stdin"], Some(&conf)).map(|_| ())
    }

    /// Adds or updates one peer.
    pub fn set_peer(&self, p: &Peer) -> io::Result<()> {
        run(
            "wg",
            &["addconf", &self.name, "/dev/stdin"],
            Some(&Self::peer_conf(p)),
        )
        .map(|_| ())
    }

    /// Removes one peer.
    pub fn remove_peer(&self, public_key: &Key) -> io::Result<()> {
        run(
            "wg",
            &["set", &self.name, "peer", &b64(public_key), "remove"],
            None,
        )
        .map(|_| ())
    }

    /// The peers' counters, by public key (hex, as the UAPI spells it).
    pub fn peer_stats(&self) -> io::Result<HashMap<String, PeerStats>> {
        use base64::Engine;
        let dump = run("wg", &["show", &self.name, "dump"], None)?;
        let mut out = HashMap::new();
        // The first line is the interface; then: public key, preshared key,
        // endpoint, allowed ips, latest handshake, rx, tx, keepalive.
        for line in dump.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            let Some(key) = f
                .first()
                .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
            else {
                continue;
            };
            let Ok(key) = <Key>::try_from(key.as_slice()) else {
                continue;
            };
            let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            out.insert(
                hex(&key),
                PeerStats {
                    last_handshake: n(4),
                    rx_bytes: n(5),
                    tx_bytes: n(6),
                },
            );
        }
        Ok(out)
    }

    /// Deletes the interface.
    pub fn stop(self) {
        let _ = run("ip", &["link", "del", &self.name], None);
    }
}

/// A WireGuard device of either kind.
pub enum Device {
    /// In the kernel.
    Kernel(KernelDevice),
    /// wireguard-go.
    Userspace(UserspaceDevice),
}

impl Device {
    /// Starts `name` with `backend` "kernel", "userspace" or "auto" (the
    /// kernel where it has WireGuard, else wireguard-go).
    pub fn start(name: &str, backend: &str) -> io::Result<Device> {
        match backend {
            "kernel" => KernelDevice::start(name).map(Device::Kernel),
            "userspace" => UserspaceDevice::start(name).map(Device::Userspace),
            _ => match KernelDevice::start(name) {
                Ok(d) => Ok(Device::Kernel(d)),
                Err(_) => UserspaceDevice::start(name).map(Device::Userspace),
            },
        }
    }

    /// Sets the private key and port, and replaces all peers.
    pub fn configure(&self, private_key: &Key, listen_port: u16, peers: &[Peer]) -> io::Result<()> {
        match self {
            Device::Kernel(d) => d.configure(private_key, listen_port, peers),
            Device::Userspace(d) => d.configure(private_key, listen_port, peers),
        }
    }

    /// Adds or updates one peer.
    pub fn set_peer(&self, peer: &Peer) -> io::Result<()> {
        match self {
            Device::Kernel(d) => d.set_peer(peer),
            Device::Userspace(d) => d.set_peer(peer),
        }
    }

    /// Removes one peer.
    pub fn remove_peer(&self, public_key: &Key) -> io::Result<()> {
        match self {
            Device::Kernel(d) => d.remove_peer(public_key),
            Device::Userspace(d) => d.remove_peer(public_key),
        }
    }

    /// The peers' counters, by public key (hex).
    pub fn peer_stats(&self) -> io::Result<HashMap<String, PeerStats>> {
        match self {
            Device::Kernel(d) => d.peer_stats(),
            Device::Userspace(d) => d.peer_stats(),
        }
    }

    /// Removes the device.
    pub fn stop(self) {
        match self {
            Device::Kernel(d) => d.stop(),
            Device::Userspace(d) => d.stop(),
        }
    }
}
