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
