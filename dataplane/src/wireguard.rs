//! WireGuard devices, configured and read without running `wg` or `ip`:
//! the kernel's through generic netlink (netlink-packet-wireguard), and
//! wireguard-go through its cross-platform UAPI socket
//! (`/var/run/wireguard/NAME.sock`). sixgate configures WireGuard; it does
//! not implement it.
//!
//! wireguard-go runs as our child with its standard streams on /dev/null
//! and every other descriptor closed (it must not keep our TUN device or
//! sockets alive), is told to stop when we die (PR_SET_PDEATHSIG), and is
//! stopped and reaped by us. A wireguard-go that a killed broker left
//! behind is found through its socket (SO_PEERCRED names its process) and
//! stopped before a new one starts.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::netlink::NetlinkSocket;
use crate::rtnl::Rtnl;

/// A 32-octet WireGuard key.
pub type Key = [u8; 32];

fn hex(k: &Key) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex form the UAPI uses for a key (the key of [`PeerStats`] maps).
pub fn key_hex(k: &Key) -> String {
    hex(k)
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
    /// AllowedIPs, as (address, prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// Which WireGuard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's, where it has WireGuard; else wireguard-go.
    Auto,
    /// The kernel's.
    Kernel,
    /// wireguard-go.
    Userspace,
}

/// The UAPI socket of device `name`.
fn socket_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{SOCKET_DIR}/{name}.sock"))
}

/// Where wireguard-go puts its UAPI sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// A userspace WireGuard device: a wireguard-go process and its socket.
pub struct UserspaceDevice {
    name: String,
    process: Child,
}

/// Stops a process: SIGTERM, a few seconds to go, then SIGKILL; `reap`
/// (our child) collects it.
fn stop_process(pid: u32, reap: &mut dyn FnMut() -> bool) {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if reap() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    while !reap() && Instant::now() < deadline + Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl UserspaceDevice {
    /// Starts wireguard-go for `name` and waits for its socket and link.
    pub fn start(name: &str, rtnl: &mut Rtnl) -> io::Result<UserspaceDevice> {
        let mut cmd = Command::new("wireguard-go");
        cmd.args(["-f", name])
            // It refuses to run beside a kernel that could do WireGuard
            // unless told that this is wanted.
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only makes two
        // async-signal-safe system calls (close_range, or close in a loop
        // where the kernel lacks it, and prctl), touching no memory of the
        // parent and taking no locks.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                    for fd in 3..4096 {
                        libc::close(fd);
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let process = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting wireguard-go: {e}")))?;
        let mut device = UserspaceDevice {
            name: name.to_string(),
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(socket_path(name)).is_err() || !rtnl.link_exists(name)? {
            if let Ok(Some(status)) = device.process.try_wait() {
                return Err(io::Error::other(format!(
                    "wireguard-go for {name} exited: {status}"
                )));
            }
            if Instant::now() > deadline {
                device.stop();
                return Err(io::Error::other(format!(
                    "wireguard-go for {name} did not open its socket"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(device)
    }

    fn call(&self, request: &str) -> io::Result<Vec<(String, String)>> {
        let mut stream = UnixStream::connect(socket_path(&self.name))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
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

    fn configure(&self, private_key: &Key, listen_port: u16, peers: &[Peer]) -> io::Result<()> {
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

    fn set_peer(&self, peer: &Peer) -> io::Result<()> {
        self.call(&format!("set=1\n{}\n", peer_lines(peer)))
            .map(|_| ())
    }

    fn remove_peer(&self, public_key: &Key) -> io::Result<()> {
        self.call(&format!(
            "set=1\npublic_key={}\nremove=true\n\n",
            hex(public_key)
        ))
        .map(|_| ())
    }

    fn peer_stats(&self) -> io::Result<HashMap<String, PeerStats>> {
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

    /// Stops wireguard-go (which removes its interface and socket) and
    /// reaps it.
    pub fn stop(&mut self) {
        let process = &mut self.process;
        let pid = process.id();
        stop_process(pid, &mut || matches!(process.try_wait(), Ok(Some(_))));
        let _ = std::fs::remove_file(socket_path(&self.name));
    }
}

fn peer_lines(p: &Peer) -> String {
    let mut s = format!(
        "public_key={}\npreshared_key={}\nreplace_allowed_ips=true\n",
        hex(&p.public_key),
        hex(&p.preshared_key)
    );
    for (ip, len) in &p.allowed_ips {
        s.push_str(&format!("allowed_ip={ip}/{len}\n"));
    }
    s
}

/// A kernel WireGuard device, configured by generic netlink.
pub struct KernelDevice {
    name: String,
    socket: NetlinkSocket,
    family: u16,
}

/// Peers per WG_CMD_SET_DEVICE message: each peer is a few hundred octets
/// and a netlink message must fit the kernel's receive buffer (`wg` splits
/// the same way).
const PEERS_PER_MESSAGE: usize = 32;

impl KernelDevice {
    /// Creates the interface (fails where the kernel has no WireGuard).
    pub fn start(name: &str, rtnl: &mut Rtnl) -> io::Result<KernelDevice> {
        let mut socket = NetlinkSocket::open(NETLINK_GENERIC)?;
        let family = wireguard_family(&mut socket)?;
        rtnl.create_wireguard_link(name)?;
        Ok(KernelDevice {
            name: name.to_string(),
            socket,
            family,
        })
    }

    fn message(&self, attributes: Vec<WireguardAttribute>) -> GenlMessage<WireguardMessage> {
        let mut m = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes,
        });
        m.set_resolved_family_id(self.family);
        m
    }

    fn set(&mut self, attributes: Vec<WireguardAttribute>) -> io::Result<()> {
        let m = self.message(attributes);
        self.socket.request(m, 0)
    }

    fn configure(&mut self, private_key: &Key, listen_port: u16, peers: &[Peer]) -> io::Result<()> {
        let name = WireguardAttribute::IfName(self.name.clone());
        let mut chunks = peers.chunks(PEERS_PER_MESSAGE);
        let first: Vec<WireguardPeer> = chunks
            .next()
            .unwrap_or_default()
            .iter()
            .map(peer_nla)
            .collect();
        self.set(vec![
            name.clone(),
            WireguardAttribute::PrivateKey(*private_key),
            WireguardAttribute::ListenPort(listen_port),
            WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
            WireguardAttribute::Peers(first),
        ])?;
        for chunk in chunks {
            self.set(vec![
                name.clone(),
                WireguardAttribute::Peers(chunk.iter().map(peer_nla).collect()),
            ])?;
        }
        Ok(())
    }

    fn set_peer(&mut self, peer: &Peer) -> io::Result<()> {
        let name = WireguardAttribute::IfName(self.name.clone());
        self.set(vec![name, WireguardAttribute::Peers(vec![peer_nla(peer)])])
    }

    fn remove_peer(&mut self, public_key: &Key) -> io::Result<()> {
        let name = WireguardAttribute::IfName(self.name.clone());
        let peer = WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(*public_key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
        ]);
        self.set(vec![name, WireguardAttribute::Peers(vec![peer])])
    }

    fn peer_stats(&mut self) -> io::Result<HashMap<String, PeerStats>> {
        let mut m = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfName(self.name.clone())],
        });
        m.set_resolved_family_id(self.family);
        let mut out = HashMap::new();
        // A device with many peers comes in several messages of one dump.
        for answer in self.socket.dump(m)? {
            for attr in answer.payload.attributes {
                let WireguardAttribute::Peers(peers) = attr else {
                    continue;
                };
                for WireguardPeer(attrs) in peers {
                    let mut key = None;
                    let mut s = PeerStats::default();
                    for a in attrs {
                        match a {
                            WireguardPeerAttribute::PublicKey(k) => key = Some(k),
                            WireguardPeerAttribute::LastHandshake(t) => {
                                s.last_handshake = t.seconds.max(0) as u64
                            }
                            WireguardPeerAttribute::RxBytes(n) => s.rx_bytes = n,
                            WireguardPeerAttribute::TxBytes(n) => s.tx_bytes = n,
                            _ => {}
                        }
                    }
                    if let Some(k) = key {
                        out.insert(hex(&k), s);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn peer_nla(p: &Peer) -> WireguardPeer {
    let allowed = p
        .allowed_ips
        .iter()
        .map(|(ip, len)| {
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(match ip {
                    IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
                    IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
                }),
                WireguardAllowedIpAttr::IpAddr(*ip),
                WireguardAllowedIpAttr::Cidr(*len),
            ])
        })
        .collect();
    WireguardPeer(vec![
        WireguardPeerAttribute::PublicKey(p.public_key),
        WireguardPeerAttribute::PresharedKey(p.preshared_key),
        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        WireguardPeerAttribute::AllowedIps(allowed),
    ])
}

/// The generic netlink family id of "wireguard" (the module must be
/// there: loading it is the kernel's business, on the first link).
fn wireguard_family(socket: &mut NetlinkSocket) -> io::Result<u16> {
    let query = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
    });
    let answer: GenlMessage<GenlCtrl> = socket.get(query)?;
    answer
        .payload
        .nlas
        .iter()
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no wireguard netlink family"))
}

/// A WireGuard device of either kind.
pub enum Device {
    /// In the kernel.
    Kernel(KernelDevice),
    /// wireguard-go.
    Userspace(UserspaceDevice),
}

impl Device {
    /// Starts `name` on `backend` (for `Auto`, the kernel where it has
    /// WireGuard, else wireguard-go), after removing what an earlier run
    /// that was killed left under that name.
    pub fn start(name: &str, backend: Backend, rtnl: &mut Rtnl) -> io::Result<Device> {
        remove_leftovers(name, rtnl)?;
        match backend {
            Backend::Kernel => KernelDevice::start(name, rtnl).map(Device::Kernel),
            Backend::Userspace => UserspaceDevice::start(name, rtnl).map(Device::Userspace),
            Backend::Auto => match KernelDevice::start(name, rtnl) {
                Ok(d) => Ok(Device::Kernel(d)),
                Err(_) => UserspaceDevice::start(name, rtnl).map(Device::Userspace),
            },
        }
    }

    /// Whether this is the kernel's WireGuard.
    pub fn is_kernel(&self) -> bool {
        matches!(self, Device::Kernel(_))
    }

    /// Sets the private key and port, and replaces all peers with `peers`.
    pub fn configure(
        &mut self,
        private_key: &Key,
        listen_port: u16,
        peers: &[Peer],
    ) -> io::Result<()> {
        match self {
            Device::Kernel(d) => d.configure(private_key, listen_port, peers),
            Device::Userspace(d) => d.configure(private_key, listen_port, peers),
        }
    }

    /// Adds or updates one peer.
    pub fn set_peer(&mut self, peer: &Peer) -> io::Result<()> {
        match self {
            Device::Kernel(d) => d.set_peer(peer),
            Device::Userspace(d) => d.set_peer(peer),
        }
    }

    /// Removes one peer.
    pub fn remove_peer(&mut self, public_key: &Key) -> io::Result<()> {
        match self {
            Device::Kernel(d) => d.remove_peer(public_key),
            Device::Userspace(d) => d.remove_peer(public_key),
        }
    }

    /// The peers' handshake times and counters, by public key (hex).
    pub fn peer_stats(&mut self) -> io::Result<HashMap<String, PeerStats>> {
        match self {
            Device::Kernel(d) => d.peer_stats(),
            Device::Userspace(d) => d.peer_stats(),
        }
    }

    /// Removes the device (the kernel's link, or wireguard-go with its).
    pub fn stop(self, rtnl: &mut Rtnl) {
        match self {
            Device::Kernel(d) => {
                let _ = rtnl.delete_link(&d.name);
            }
            Device::Userspace(mut d) => d.stop(),
        }
    }
}

/// Removes what a killed run left under `name`: a wireguard-go still
/// serving the socket (stopped through the process SO_PEERCRED names), a
/// stale socket, and the link itself.
pub fn remove_leftovers(name: &str, rtnl: &mut Rtnl) -> io::Result<()> {
    let path = socket_path(name);
    match UnixStream::connect(&path) {
        Ok(stream) => {
            if let Ok(cred) = rustix::net::sockopt::socket_peercred(&stream) {
                let pid = cred.pid.as_raw_nonzero().get() as u32;
                tracing::info!(
                    "stopping the wireguard-go (pid {pid}) an earlier run left for {name}"
                );
                drop(stream);
                let proc_dir = PathBuf::from(format!("/proc/{pid}"));
                stop_process(pid, &mut || !proc_dir.exists() || is_zombie(pid));
            }
        }
        // Another user's (a run as root, before `[process] user`): not
        // ours to signal, but removing its link below ends it.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => tracing::info!(
            "stopping the wireguard-go of another user an earlier run left for {name}, \
             by removing its link"
        ),
        Err(_) => {}
    }
    let _ = std::fs::remove_file(&path);
    // A wireguard-go whose socket went removes its link itself, maybe
    // while we look: a link already gone is what we wanted.
    match rtnl.delete_link(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
        }
        other => other?,
    }
    // A wireguard-go we could not signal ends once its link is gone; until
    // it has, it may still remove the socket path a new one opens.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !wireguard_go_serving(name).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The wireguard-go processes whose last argument is `name`, by pid.
fn wireguard_go_serving(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            args.first().is_some_and(|a| a.ends_with(b"wireguard-go"))
                && args.last().is_some_and(|a| *a == name.as_bytes())
                && !is_zombie(*pid)
        })
        .collect()
}

/// Whether `pid` is a zombie (exited, waiting for a parent that is gone
/// or not ours to reap).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
