//! Test labs in network namespaces: uniquely named namespaces joined by
//! veth pairs, and strongSwan instances inside them, all removed on drop
//! (also when a test fails and unwinds).
#![allow(missing_docs)]

pub mod loopback;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses at the same time.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts that `dir` is 0700 and everything in it 0700 (directories) or
/// 0600 (files and sockets), listing what is not.
pub fn assert_private_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fn walk(p: &Path, bad: &mut Vec<String>) {
        let meta = std::fs::symlink_metadata(p).expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want && !meta.file_type().is_symlink() {
            bad.push(format!("{} is {mode:o}", p.display()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(p).expect("read_dir") {
                walk(&e.expect("entry").path(), bad);
            }
        }
    }
    let mut bad = Vec::new();
    walk(dir, &mut bad);
    assert!(bad.is_empty(), "not private: {bad:#?}");
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command in the namespace; panics if it fails.
    pub fn run(&self, argv: &[&str]) -> String {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..]);
        String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
    }

    /// Runs a command in the namespace and returns its output, failed or not.
    pub fn try_run(&self, argv: &[&str]) -> Output {
        let mut c = self.command(argv[0]);
        c.args(&argv[1..]);
        c.output().expect("spawn")
    }

    /// A counter of the packets that match `rule` (an nft match
    /// expression) at `hook` (prerouting: what arrives; output: what the
    /// namespace itself sends), in a table of its own.
    pub fn packet_counter(&self, hook: &str, rule: &str) -> impl Fn() -> u64 + '_ {
        let chain = unique("c").replace('-', "_");
        self.run(&["nft", "add", "table", "inet", "sgcount"]);
        self.run(&[
            "nft",
            &format!("add chain inet sgcount {chain} {{ type filter hook {hook} priority -300; }}"),
        ]);
        self.run(&[
            "nft",
            &format!("add rule inet sgcount {chain} {rule} counter"),
        ]);
        move || {
            let out = self.run(&["nft", "list", "chain", "inet", "sgcount", &chain]);
            out.lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let i = f.iter().position(|w| *w == "packets")?;
                    f.get(i + 1)?.parse().ok()
                })
                .unwrap_or_else(|| panic!("no counter in {out}"))
        }
    }
}

/// The Internet checksum (RFC 1071) of `data`, starting from `sum`.
fn internet_checksum(mut sum: u32, data: &[u8]) -> u16 {
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A valid ICMPv6 echo request from `src` to `dst` (an IPv6 packet, hex),
/// for `ike-peer send-esp 41`.
pub fn icmpv6_echo_hex(src: &str, dst: &str) -> String {
    let (src, dst): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        (src.parse().expect("src"), dst.parse().expect("dst"));
    let mut icmp = vec![128u8, 0, 0, 0, 0, 1, 0, 1];
    let mut pseudo = Vec::new();
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend((icmp.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    pseudo.extend(&icmp);
    icmp[2..4].copy_from_slice(&internet_checksum(0, &pseudo).to_be_bytes());
    let mut p = vec![0x60u8, 0, 0, 0, 0, icmp.len() as u8, 58, 64];
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(icmp);
    hex::encode(p)
}

/// A valid ICMPv4 echo request from `src` to `dst` (an IPv4 packet, hex),
/// for `ike-peer send-esp 4`.
pub fn icmpv4_echo_hex(src: &str, dst: &str) -> String {
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().expect("src"), dst.parse().expect("dst"));
    let mut icmp = vec![8u8, 0, 0, 0, 0, 1, 0, 1];
    let sum = internet_checksum(0, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0x45u8, 0, 0, 20 + icmp.len() as u8, 0, 1, 0, 0, 64, 1, 0, 0];
    p.extend(src.octets());
    p.extend(dst.octets());
    let sum = internet_checksum(0, &p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend(icmp);
    hex::encode(p)
}

#[cfg(test)]
mod packet_tests {
    #[test]
    fn the_crafted_packets_carry_valid_checksums() {
        // A valid header or message sums to zero.
        let v4 = hex::decode(super::icmpv4_echo_hex("192.0.2.100", "192.0.2.1")).unwrap();
        assert_eq!(super::internet_checksum(0, &v4[..20]), 0);
        assert_eq!(super::internet_checksum(0, &v4[20..]), 0);
        let v6 = hex::decode(super::icmpv6_echo_hex("2001:db8::1", "2001:db8::2")).unwrap();
        let mut pseudo = v6[8..40].to_vec();
        pseudo.extend([0, 0, 0, 8, 0, 0, 0, 58]);
        pseudo.extend(&v6[40..]);
        assert_eq!(super::internet_checksum(0, &pseudo), 0);
    }
}

/// An authenticated peer that seals whatever it is told into ESP: an
/// `ike-peer` initiator in client namespace `i` (at `ip`) with the
/// certificate of `who`, ESP in UDP. Returns it once its Child SA is up,
/// with the address it leased.
pub fn spoofing_peer(lab: &TunnelLab, i: usize, ip: &str, who: &str) -> (LinePeer, String) {
    let peer = LinePeer::spawn({
        let mut c = lab.clients[i].command(workspace_bin("ike-peer").to_str().expect("path"));
        c.args([
            "--role",
            "initiator",
            "--local",
            ip,
            "--remote",
            "192.0.2.1",
            "--who",
            who,
            "--force-encap",
        ]);
        c
    });
    let limit = Duration::from_secs(90);
    let address = peer
        .wait("ADDRESS ", limit)
        .unwrap_or_else(|| panic!("ike-peer not up: {:?}", peer.lines()));
    let leased = address
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("address")
        .to_string();
    peer.wait("CHILD_UP", limit).expect("child");
    (peer, leased)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair carrying the given addresses
/// (with prefix length, e.g. "192.0.2.1/24").
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let (ia, ib) = (unique("sga"), unique("sgb"));
    run(Command::new("ip").args([
        "link", "add", &ia, "netns", &a.name, "type", "veth", "peer", "name", &ib, "netns", &b.name,
    ]));
    for (ns, dev, addr) in [(a, &ia, a_addr), (b, &ib, b_addr)] {
        ns.run(&["ip", "addr", "add", addr, "dev", dev]);
        ns.run(&["ip", "link", "set", dev, "up"]);
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The example PKI of the repository.
pub fn certs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs-example")
}

/// A strongSwan road-warrior connection for the labs, as client
/// (192.0.2.2, asking for a virtual IPv6 address) or as broker (192.0.2.1,
/// handing out 2001:db8:100::100/120).
#[derive(Debug, Clone, Copy)]
pub struct SwanConnection<'a> {
    /// IKE proposals (`default`, or e.g. `aes256-sha256-modp2048`).
    pub ike: &'a str,
    /// ESP proposals.
    pub esp: &'a str,
    /// `yes`, or `force` to fragment every IKE_AUTH.
    pub fragmentation: &'a str,
    /// ESP in UDP even without NAT (what kernel-libipsec needs).
    pub encap: bool,
    /// The client's virtual IP requests (`::`, or `0.0.0.0, ::` as the
    /// stock clients ask).
    pub vips: &'a str,
    /// More connection options (e.g. `send_certreq = no`).
    pub extra: &'a str,
    /// How the local side authenticates (`pubkey`, or a scheme such as
    /// `ecdsa-sha512`).
    pub local_auth: &'a str,
    /// The client's `local_addrs` (`%any` for one that roams).
    pub local_addrs: &'a str,
}

impl Default for SwanConnection<'_> {
    fn default() -> Self {
        SwanConnection {
            ike: "default",
            esp: "default",
            fragmentation: "yes",
            encap: true,
            vips: "::",
            extra: "",
            local_auth: "pubkey",
            local_addrs: "192.0.2.2",
        }
    }
}

impl SwanConnection<'_> {
    /// swanctl.conf of the client side.
    pub fn client(&self) -> String {
        self.conf(
            &format!(
                "local_addrs = {}\n    remote_addrs = 192.0.2.1\n    vips = {}",
                self.local_addrs, self.vips
            ),
            ("client.pem", "client@example.net", "broker.example.net"),
            "remote_ts = ::/0",
            "",
        )
    }

    /// swanctl.conf of the broker side.
    pub fn broker(&self) -> String {
        self.conf(
            "local_addrs = 192.0.2.1\n    pools = v6",
            ("broker.pem", "broker.example.net", "client@example.net"),
            "local_ts = ::/0",
            "pools {\n  v6 {\n    addrs = 2001:db8:100::100/120\n    dns = 2001:db8:ffff::53\n  }\n}\n",
        )
    }

    fn conf(&self, addrs: &str, ids: (&str, &str, &str), ts: &str, pools: &str) -> String {
        let (cert, local_id, remote_id) = ids;
        format!(
            r#"connections {{
  sixgate {{
    version = 2
    {addrs}
    encap = {encap}
    fragmentation = {frag}
    proposals = {ike}
    {extra}
    local {{
      auth = {local_auth}
      certs = {cert}
      id = {local_id}
    }}
    remote {{
      auth = pubkey
      id = {remote_id}
    }}
    children {{
      net {{
        {ts}
        esp_proposals = {esp}
      }}
    }}
  }}
}}
{pools}"#,
            encap = if self.encap { "yes" } else { "no" },
            frag = self.fragmentation,
            ike = self.ike,
            esp = self.esp,
            extra = self.extra,
            local_auth = self.local_auth,
        )
    }
}

/// A strongSwan charon in a namespace, with a private /run, its own
/// configuration and vici socket, killed on drop.
pub struct StrongSwan {
    pub dir: TempDir,
    child: Child,
    ns: String,
}

/// How charon carries the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwanMode {
    /// kernel-libipsec, no routes installed: IKE tests.
    Ike,
    /// kernel-libipsec with its routes: data-plane tests.
    Routes,
    /// The kernel's XFRM (a kernel with ESP: the test VM).
    Kernel,
}

impl StrongSwan {
    /// Starts charon in `ns` with kernel-libipsec; `swanctl_conf` is the
    /// connection configuration; certificates of `kind` ("ecdsa" or "rsa")
    /// for `who` ("broker" or "client") are installed. With `mode`
    /// [`SwanMode::Routes`] charon routes the tunnel's traffic itself
    /// (table 220), for data-plane tests; [`SwanMode::Kernel`] is its
    /// normal mode, the kernel's XFRM doing the ESP (the test VM only).
    pub fn start(
        ns: &Netns,
        kind: &str,
        who: &str,
        extra_charon: &str,
        swanctl_conf: &str,
        mode: SwanMode,
    ) -> StrongSwan {
        let (install_routes, libipsec) = match mode {
            SwanMode::Ike => (false, true),
            SwanMode::Routes => (true, true),
            SwanMode::Kernel => (true, false),
        };
        Self::launch(
            ns,
            kind,
            who,
            extra_charon,
            swanctl_conf,
            install_routes,
            libipsec,
        )
    }

    fn launch(
        ns: &Netns,
        kind: &str,
        who: &str,
        extra_charon: &str,
        swanctl_conf: &str,
        install_routes: bool,
        libipsec: bool,
    ) -> StrongSwan {
        let dir = TempDir::new("sgswan");
        let d = dir.path();
        for sub in ["x509", "x509ca", "private"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let certs = certs_dir().join(kind);
        // Both example CAs: a client of one kind may meet a broker of the other.
        for k in ["ecdsa", "rsa"] {
            let ca = certs_dir().join(k).join("ca.pem");
            std::fs::copy(ca, d.join(format!("x509ca/{k}-ca.pem"))).expect("ca");
        }
        std::fs::copy(
            certs.join(format!("{who}.pem")),
            d.join(format!("x509/{who}.pem")),
        )
        .expect("cert");
        std::fs::copy(
            certs.join(format!("{who}.key")),
            d.join(format!("private/{who}.key")),
        )
        .expect("key");
        std::fs::write(d.join("swanctl.conf"), swanctl_conf).expect("swanctl.conf");
        Self::run_charon(ns, dir, extra_charon, install_routes, libipsec)
    }

    /// Starts charon in `ns` (kernel-libipsec with its routes) on a
    /// swanctl directory as a user would copy it to /etc/swanctl:
    /// `swanctl.conf` with `x509/`, `x509ca/` and `private/` beside it.
    /// `extra_charon` goes last into the `charon` section, so it may
    /// override anything before it (the log levels too).
    pub fn start_with_swanctl_dir(ns: &Netns, swanctl: &Path, extra_charon: &str) -> StrongSwan {
        let dir = TempDir::new("sgswan");
        for sub in ["x509", "x509ca", "private"] {
            let to = dir.path().join(sub);
            std::fs::create_dir_all(&to).expect("mkdir");
            for entry in std::fs::read_dir(swanctl.join(sub)).expect("swanctl dir") {
                let entry = entry.expect("entry");
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        }
        std::fs::copy(
            swanctl.join("swanctl.conf"),
            dir.path().join("swanctl.conf"),
        )
        .expect("swanctl.conf");
        Self::run_charon(ns, dir, extra_charon, true, true)
    }

    fn run_charon(
        ns: &Netns,
        dir: TempDir,
        extra_charon: &str,
        install_routes: bool,
        libipsec: bool,
    ) -> StrongSwan {
        let d = dir.path();
        let conf = format!(
            r#"charon {{
    load = random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey kdf {libipsec}kernel-netlink socket-default vici
    install_routes = {routes}
    install_virtual_ip = yes
    port = 500
    port_nat_t = 4500
    plugins {{
        vici {{
            socket = unix://{d}/charon.vici
        }}
        kernel-libipsec {{
            allow_peer_ts = yes
        }}
    }}
    filelog {{
        log {{
            path = {d}/charon.log
            time_format = %T
            default = 1
            ike = 4
            cfg = 2
            enc = 2
            flush_line = yes
        }}
    }}
    {extra_charon}
}}
"#,
            d = d.display(),
            routes = if install_routes { "yes" } else { "no" },
            libipsec = if libipsec { "kernel-libipsec " } else { "" },
        );
        std::fs::write(d.join("strongswan.conf"), conf).expect("strongswan.conf");
        let script = format!(
            "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF={}/strongswan.conf /usr/lib/ipsec/charon",
            d.display()
        );
        let child = ns
            .command("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start charon");
        let s = StrongSwan {
            dir,
            child,
            ns: ns.name.clone(),
        };
        let vici = s.dir.path().join("charon.vici");
        wait_for(Duration::from_secs(30), || vici.exists().then_some(()))
            .expect("charon's vici socket");
        let loaded = s.swanctl(&[
            "--load-all",
            "--file",
            &format!("{}/swanctl.conf", s.dir.path().display()),
        ]);
        assert!(
            loaded.contains("loaded connection") || loaded.contains("successfully loaded"),
            "{loaded}"
        );
        s
    }

    /// charon's process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A road-warrior charon (ECDSA client certificate) in `ns`.
    pub fn start_client(ns: &Netns, swanctl_conf: &str, mode: SwanMode) -> StrongSwan {
        Self::start(ns, "ecdsa", "client", "", swanctl_conf, mode)
    }

    /// Initiates the Child SA "net" (and so its IKE SA), waiting up to
    /// `timeout` seconds; panics with `context` and charon's output if it
    /// does not complete.
    pub fn initiate(&self, timeout: u32, context: &str) {
        let timeout = timeout.to_string();
        let out = self.swanctl(&["--initiate", "--child", "net", "--timeout", &timeout]);
        assert!(
            out.contains("initiate completed successfully"),
            "{out}\n{context}"
        );
    }

    /// Runs swanctl against this instance; returns stdout and stderr.
    pub fn swanctl(&self, args: &[&str]) -> String {
        let uri = format!("unix://{}/charon.vici", self.dir.path().display());
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "swanctl"])
            .args(args)
            .args(["--uri", &uri])
            .current_dir(self.dir.path())
            .output()
            .expect("swanctl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// charon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("charon.log")).unwrap_or_default()
    }

    /// The keys charon logged at `ike = 4`, by name (lowercase: skeyseed,
    /// sk_d, sk_ai, ...), last occurrence of each.
    pub fn logged_keys(&self) -> Vec<(String, Vec<u8>)> {
        parse_logged_keys(&self.log())
    }
}

impl Drop for StrongSwan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses charon's `ike = 4` key dumps: a line ending in
/// "Sk_ai secret => 32 bytes @ 0x..." followed by hex dump lines
/// "... 16[IKE]    0: B2 FC EE ...  text".
pub fn parse_logged_keys(log: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(pos) = line.find(" => ") else {
            continue;
        };
        let head = &line[..pos];
        let name = if head.ends_with("SKEYSEED") {
            "skeyseed".to_string()
        } else if let Some(i) = head.rfind("Sk_") {
            head[i..].trim_end_matches(" secret").to_ascii_lowercase()
        } else {
            continue;
        };
        let Some(len) = line[pos + 4..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let mut bytes = Vec::new();
        while bytes.len() < len {
            // "12:00:00 16[IKE]   16: 62 58 64 ...  bXdZ..."
            let Some(dump) = lines.peek() else { break };
            let body = dump.split_once("] ").map_or(*dump, |(_, r)| r).trim_start();
            let Some((offset, rest)) = body.split_once(": ") else {
                break;
            };
            if offset.is_empty() || !offset.chars().all(|c| c.is_ascii_digit()) {
                break;
            }
            let hexpart: String = rest
                .split("  ")
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            match hex::decode(&hexpart) {
                Ok(b) => bytes.extend(b),
                Err(_) => break,
            }
            lines.next();
        }
        bytes.truncate(len);
        out.retain(|(n, _)| *n != name);
        out.push((name, bytes));
    }
    out
}

/// A process whose stdout lines are collected in the background and
/// whose stdin takes commands; killed on drop.
pub struct LinePeer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LinePeer {
    pub fn spawn(mut cmd: Command) -> LinePeer {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("lines").push(line);
            }
        });
        let stdin = child.stdin.take();
        LinePeer {
            child,
            stdin,
            lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits for the `n`th (from 1) line starting with `prefix`.
    pub fn wait_nth(&self, prefix: &str, n: usize, limit: Duration) -> Option<String> {
        wait_for(limit, || {
            self.lines()
                .into_iter()
                .filter(|l| l.starts_with(prefix))
                .nth(n - 1)
        })
    }

    pub fn wait(&self, prefix: &str, limit: Duration) -> Option<String> {
        self.wait_nth(prefix, 1, limit)
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
        }
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace binary (sixgate-broker, sixgate-client) of the same build
/// profile as the running executable: beside it (another binary) or one
/// directory up (a test in `deps/`). `cargo build --workspace` (as .ci/run
/// does) must have built it.
/// Runs `command` to its end: whether it succeeded, and its stdout
/// followed by its stderr (what a user at a terminal reads).
pub fn outcome(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("run the program");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let candidates = [
        dir.join(name),
        dir.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing beside {}: run `cargo build --workspace` first",
                dir.display()
            )
        })
}

/// A daemon in a namespace, its output in a log file; killed on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(ns: &Netns, program: &Path, args: &[&str], log: PathBuf) -> Daemon {
        let mut command = ns.command(program.to_str().expect("utf-8 path"));
        command.args(args);
        Daemon::spawn_command(command, log)
    }

    /// Runs `command`, its output to `log`.
    pub fn spawn_command(mut command: Command, log: PathBuf) -> Daemon {
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(&log).expect("log file");
        // Its own process group, so that a kill takes its children along.
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn daemon");
        Daemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit (SIGKILL after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// SIGKILL: a crash (its own process only).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    /// Kills the daemon and everything it started.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// systemd-resolved in a namespace, with a D-Bus system bus of its own,
/// in a mount namespace of its own (/run a tmpfs, /etc/passwd and
/// /etc/group with resolved's user): Debian's, installed or unpacked by
/// `.ci/run` into /opt/sixgate-ci/systemd-resolved. [`Resolved::command`]
/// runs a program beside it, with `resolvectl` on its PATH.
pub struct Resolved {
    daemon: Daemon,
    root: PathBuf,
    _dir: TempDir,
}

impl Resolved {
    pub fn start(ns: &Netns) -> Resolved {
        let root = ["/", "/opt/sixgate-ci/systemd-resolved"]
            .into_iter()
            .map(PathBuf::from)
            .find(|r| r.join("lib/systemd/systemd-resolved").exists())
            .expect("systemd-resolved: .ci/run unpacks it into /opt/sixgate-ci/systemd-resolved");
        let dir = TempDir::new("sgresolved");
        let with_user = |file: &str, line: &str| {
            let mut text = std::fs::read_to_string(Path::new("/etc").join(file)).expect(file);
            if !text.lines().any(|l| l.starts_with("systemd-resolve:")) {
                text.push_str(line);
            }
            std::fs::write(dir.path().join(file), text).expect(file);
        };
        with_user(
            "passwd",
            "systemd-resolve:x:64990:64990:resolved:/:/usr/sbin/nologin\n",
        );
        with_user("group", "systemd-resolve:x:64990:\n");
        std::fs::write(
            dir.path().join("bus.conf"),
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        )
        .expect("bus.conf");
        let d = dir.path().display();
        let script = format!(
            "set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/systemd
mount --bind {d}/passwd /etc/passwd
mount --bind {d}/group /etc/group
dbus-daemon --config-file={d}/bus.conf --nofork --nopidfile &
while [ ! -S /run/dbus/system_bus_socket ]; do sleep 0.05; done
exec {root}/lib/systemd/systemd-resolved",
            root = root.display()
        );
        let mut command = ns.command("unshare");
        command.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        let daemon = Daemon::spawn_command(command, dir.path().join("resolved.log"));
        let resolved = Resolved {
            daemon,
            root,
            _dir: dir,
        };
        let socket = "/run/systemd/resolve/io.systemd.Resolve";
        wait_for(Duration::from_secs(30), || {
            resolved
                .command("test")
                .args(["-S", socket])
                .status()
                .ok()
                .filter(|s| s.success())
        })
        .unwrap_or_else(|| panic!("resolved did not start:\n{}", resolved.log()));
        resolved
    }

    /// The process whose namespaces the others enter: resolved itself,
    /// once the shell before it has exec'd.
    fn pid(&self) -> String {
        self.daemon.pid().to_string()
    }

    /// `program` in resolved's network and mount namespaces.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid(), "-m", "-n", "--", program]);
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}/usr/bin:{path}", self.root.display()));
        c
    }

    /// `resolvectl ARGS`, which must succeed; its output.
    pub fn resolvectl(&self, args: &[&str]) -> String {
        let mut c = self.command("resolvectl");
        c.args(args);
        String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }
}

/// The lab of DESIGN.md: an IPv4-only client network (192.0.2.0/24) with
/// up to three client namespaces, the broker, and an IPv6-only "inet" host
/// (2001:db8:ffff::2) behind the broker. A bridge in the broker namespace
/// joins the client links.
pub struct TunnelLab {
    pub clients: Vec<Netns>,
    pub broker: Netns,
    pub inet: Netns,
    pub dir: TempDir,
    /// The `[dataplane]` lines of the configurations it writes.
    pub dataplane: String,
}

/// A broker and a client that [`TunnelLab::start_pair`] brought up.
pub struct Pair {
    pub broker: Daemon,
    pub client: Daemon,
    pub broker_config: PathBuf,
    pub client_config: PathBuf,
    /// The client's virtual address.
    pub address: String,
}

impl TunnelLab {
    pub fn new(clients: usize) -> TunnelLab {
        let broker = Netns::new("sgb");
        let inet = Netns::new("sgi");
        broker.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        // The client network is IPv4 only: not even link-local IPv6.
        broker.run(&["sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=1"]);
        broker.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "br0"]);
        broker.run(&["ip", "link", "set", "br0", "up"]);
        let mut cs = Vec::new();
        for i in 0..clients {
            let c = Netns::new("sgc");
            let (ca, cb) = (unique("sgca"), unique("sgcb"));
            run(Command::new("ip").args([
                "link",
                "add",
                &ca,
                "netns",
                &c.name,
                "type",
                "veth",
                "peer",
                "name",
                &cb,
                "netns",
                &broker.name,
            ]));
            c.run(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ca}.disable_ipv6=1"),
            ]);
            broker.run(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{cb}.disable_ipv6=1"),
            ]);
            c.run(&[
                "ip",
                "addr",
                "add",
                &format!("192.0.2.{}/24", 2 + i),
                "dev",
                &ca,
            ]);
            c.run(&["ip", "link", "set", &ca, "up"]);
            broker.run(&["ip", "link", "set", &cb, "master", "br0"]);
            broker.run(&["ip", "link", "set", &cb, "up"]);
            cs.push(c);
        }
        let (ia, ib) = (unique("sgia"), unique("sgib"));
        run(Command::new("ip").args([
            "link",
            "add",
            &ia,
            "netns",
            &inet.name,
            "type",
            "veth",
            "peer",
            "name",
            &ib,
            "netns",
            &broker.name,
        ]));
        // No duplicate address detection on the inet link, for the
        // link-local addresses either: neighbour discovery works at once,
        // and a test's first packet is not lost to a tentative address.
        inet.run(&["sysctl", "-qw", &format!("net.ipv6.conf.{ia}.accept_dad=0")]);
        broker.run(&["sysctl", "-qw", &format!("net.ipv6.conf.{ib}.accept_dad=0")]);
        inet.run(&[
            "ip",
            "addr",
            "add",
            "2001:db8:ffff::2/64",
            "dev",
            &ia,
            "nodad",
        ]);
        inet.run(&["ip", "link", "set", &ia, "up"]);
        inet.run(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:100::/64",
            "via",
            "2001:db8:ffff::1",
        ]);
        broker.run(&[
            "ip",
            "addr",
            "add",
            "2001:db8:ffff::1/64",
            "dev",
            &ib,
            "nodad",
        ]);
        broker.run(&["ip", "link", "set", &ib, "up"]);
        TunnelLab {
            clients: cs,
            broker,
            inet,
            dir: TempDir::new("sglab"),
            dataplane: "backend = \"userspace\"".into(),
        }
    }

    /// Writes a broker configuration (ECDSA example PKI) with the given
    /// pool and extra `[ike]` lines, and returns its path.
    pub fn broker_config(&self, pool: &str, statics: &[(&str, &str)], ike_extra: &str) -> PathBuf {
        let statics: String = statics
            .iter()
            .map(|(id, a)| format!("\"{id}\" = \"{a}\"\n"))
            .collect();
        let text = format!(
            r#"{ike}dpd_interval = 2
{ike_extra}
[pool]
prefix = "{pool}"
dns = ["2001:db8:ffff::53"]
[pool.static]
{statics}
[dataplane]
{dataplane}
[storage]
path = "{dir}/broker-state"
"#,
            ike = broker_ike_section(),
            dir = self.dir.path().display(),
            dataplane = self.dataplane,
        );
        let path = self.dir.path().join("broker.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Writes a client configuration for identity `who` (client, client2,
    /// client3) with certificate files `cert`/`key` relative to
    /// certs-example/, and returns its path.
    pub fn client_config(
        &self,
        name: &str,
        who: &str,
        cert: &str,
        key: &str,
        extra: &str,
    ) -> PathBuf {
        write_client_config(
            self.dir.path(),
            name,
            &format!("identity = \"{who}@example.net\"\ncertificate = \"{c}/{cert}\"\nprivate_key = \"{c}/{key}\"\n{extra}",
                c = certs_dir().display()),
            &self.dataplane,
        )
    }

    /// The configuration of `who` (client, client2, client3) with its
    /// ECDSA certificate from certs-example/ecdsa, as `name`.toml.
    pub fn ecdsa_client_config(&self, name: &str, who: &str, extra: &str) -> PathBuf {
        let (cert, key) = (format!("ecdsa/{who}.pem"), format!("ecdsa/{who}.key"));
        self.client_config(name, who, &cert, &key, extra)
    }

    /// Waits until the client's last error mentions `what` (a refusal).
    pub fn wait_refused(
        &self,
        config: &Path,
        what: &str,
        limit: Duration,
    ) -> Option<serde_json::Value> {
        wait_for(limit, || {
            let s = self.client_status(config);
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(what))
                .then_some(s)
        })
    }

    /// The usual start: a broker with pool 2001:db8:100::100/120 and
    /// `broker_ike` in `[ike]`, and client 0 (client@example.net, ECDSA)
    /// with `client_extra`, up within `limit`. Panics with both logs if
    /// the client does not come up.
    pub fn start_pair(&self, broker_ike: &str, client_extra: &str, limit: Duration) -> Pair {
        let broker_config = self.broker_config("2001:db8:100::100/120", &[], broker_ike);
        let broker = self.start_broker(&broker_config);
        let client_config = self.ecdsa_client_config("client", "client", client_extra);
        let client = self.start_client(0, &client_config);
        let address = self.wait_up(0, &client_config, limit).unwrap_or_else(|| {
            panic!(
                "client not up:\n{}\nbroker:\n{}",
                client.log_text(),
                broker.log_text()
            )
        });
        Pair {
            broker,
            client,
            broker_config,
            client_config,
            address,
        }
    }

    /// A strongSwan broker (the example ECDSA PKI, its pool
    /// 2001:db8:100::100/120, forwarding on) and client 0 (sixgate,
    /// client@example.net) up within `limit`: the charon, the client, its
    /// configuration and its address. Panics with both logs if the client
    /// does not come up.
    pub fn sixgate_client_of_a_strongswan_broker(
        &self,
        limit: Duration,
    ) -> (StrongSwan, Daemon, PathBuf, String) {
        self.broker
            .run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let conf = SwanConnection::default().broker();
        let swan = StrongSwan::start(&self.broker, "ecdsa", "broker", "", &conf, SwanMode::Routes);
        let config = self.ecdsa_client_config("client", "client", "");
        let client = self.start_client(0, &config);
        let address = self.wait_up(0, &config, limit).unwrap_or_else(|| {
            let log = swan.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!("not up: {}\n{}", client.log_text(), tail.join("\n"))
        });
        (swan, client, config, address)
    }

    pub fn start_broker(&self, config: &Path) -> Daemon {
        let log = self.dir.path().join(format!("broker-{}.log", unique("")));
        let d = Daemon::spawn(
            &self.broker,
            &workspace_bin("sixgate-broker"),
            &["run", "--config", config.to_str().expect("path")],
            log,
        );
        let sock = self.dir.path().join("broker-state/broker.sock");
        wait_for(Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("broker did not start:\n{}", d.log_text()));
        d
    }

    pub fn start_client(&self, i: usize, config: &Path) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("client{i}-{}.log", unique("")));
        Daemon::spawn(
            &self.clients[i],
            &workspace_bin("sixgate-client"),
            &["up", "--config", config.to_str().expect("path")],
            log,
        )
    }

    /// `sixgate-client status` in client namespace `i`, as printed.
    pub fn client_status_text(&self, i: usize, config: &Path) -> String {
        let out = self.clients[i].try_run(&[
            workspace_bin("sixgate-client").to_str().expect("path"),
            "status",
            "--config",
            config.to_str().expect("path"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The client's status from its control socket (`null` while the
    /// daemon does not answer): state, address, dns, traffic, reconnects,
    /// last_error. The lab's client configurations keep the socket beside
    /// the file, as NAME.sock.
    pub fn client_status(&self, config: &Path) -> serde_json::Value {
        let socket = config.with_extension("sock");
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => control_request(&socket, &serde_json::json!("Status"))["Status"].clone(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Waits until the client reports the tunnel up; returns its address.
    pub fn wait_up(&self, _i: usize, config: &Path, limit: Duration) -> Option<String> {
        wait_client_up(config, limit)
    }

    /// The broker's connections from its control socket.
    pub fn broker_status(&self) -> Vec<serde_json::Value> {
        let socket = self.dir.path().join("broker-state/broker.sock");
        control_request(&socket, &serde_json::json!("Status"))["Status"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The broker's leases from its control socket.
    pub fn broker_leases(&self) -> Vec<serde_json::Value> {
        let socket = self.dir.path().join("broker-state/broker.sock");
        control_request(&socket, &serde_json::json!("Leases"))["Leases"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `sixgate-broker ARGS... --config CONFIG` in the broker's
    /// namespace: what it printed, stdout then stderr.
    pub fn broker_cli(&self, args: &[&str], config: &Path) -> String {
        let bin = workspace_bin("sixgate-broker");
        let mut argv = vec![bin.to_str().expect("path")];
        argv.extend_from_slice(args);
        argv.extend(["--config", config.to_str().expect("path")]);
        let out = self.broker.try_run(&argv);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Bytes in and out of client@example.net's connection, as the
    /// broker's status reports them.
    pub fn broker_status_bytes(&self, _config: &Path) -> (u64, u64) {
        let rows = self.broker_status();
        let row = rows
            .iter()
            .find(|r| r["identity"] == "client@example.net")
            .unwrap_or_else(|| panic!("no client in status: {rows:?}"));
        let n = |k: &str| row["traffic"][k].as_u64().expect("a byte count");
        (n("bytes_in"), n("bytes_out"))
    }

    /// An iperf3 server on the inet host for one test, listening.
    fn iperf_server(&self) -> Result<Child, String> {
        let mut server = self.inet.command("iperf3");
        server
            .args(["-s", "-1", "-B", "2001:db8:ffff::2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut server = server.spawn().map_err(|e| e.to_string())?;
        // Emulated (the VM tests), the server can take seconds to listen.
        let listening = wait_for(Duration::from_secs(30), || {
            let ss = self.inet.try_run(&["ss", "-Hltn", "sport = :5201"]);
            (!ss.stdout.is_empty()).then_some(())
        });
        if listening.is_none() {
            let _ = server.kill();
            let _ = server.wait();
            return Err("the iperf3 server did not listen".into());
        }
        Ok(server)
    }

    /// One iperf3 TCP stream between client `i` and the inet host for
    /// `seconds` (inet to client with `reverse`); the received Mbit/s.
    pub fn iperf(&self, i: usize, seconds: u32, reverse: bool) -> Result<f64, String> {
        self.iperf_streams(i, seconds, reverse, 1)
    }

    /// [`TunnelLab::iperf`] with `streams` parallel TCP streams; their sum.
    pub fn iperf_streams(
        &self,
        i: usize,
        seconds: u32,
        reverse: bool,
        streams: u32,
    ) -> Result<f64, String> {
        let mut server = self.iperf_server()?;
        let (secs, parallel) = (seconds.to_string(), streams.to_string());
        let mut args = vec![
            "iperf3",
            "-6",
            "-J",
            "-c",
            "2001:db8:ffff::2",
            "-t",
            &secs,
            "-P",
            &parallel,
        ];
        if reverse {
            args.push("-R");
        }
        let out = self.clients[i].try_run(&args);
        let _ = server.kill();
        let _ = server.wait();
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 output: {e}"))?;
        json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .filter(|b| *b > 0.0)
            .map(|b| b / 1e6)
            .ok_or_else(|| format!("iperf3: {}", json["error"]))
    }

    /// Starts one iperf3 TCP stream from client `i` to the inet host for
    /// `seconds`, reporting every half second, and returns at once (for
    /// tests that change the path under it).
    pub fn iperf_background(&self, i: usize, seconds: u32) -> Result<BackgroundIperf, String> {
        let server = self.iperf_server()?;
        let client = self.clients[i]
            .command("iperf3")
            .args(["-6", "-J", "-i", "0.5", "-c", "2001:db8:ffff::2", "-t"])
            .arg(seconds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(BackgroundIperf {
            server,
            client: Some(client),
        })
    }

    /// Gives client `i` the address `new` (with prefix length) in place
    /// of its current `old`, as a laptop that joins another network does:
    /// the new address is added, then the old one removed.
    pub fn move_client_address(&self, i: usize, old: &str, new: &str) {
        let ns = &self.clients[i];
        let dev = ns.run(&["ip", "-o", "-4", "addr", "show", "to", old]);
        let dev = dev
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no link holds {old}"))
            .to_string();
        // Without this the kernel removes every address of the subnet
        // with the primary one.
        ns.run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{dev}.promote_secondaries=1"),
        ]);
        ns.run(&["ip", "addr", "add", new, "dev", &dev]);
        ns.run(&["ip", "addr", "del", old, "dev", &dev]);
    }

    /// Gives every link in the client and broker namespaces its IPv6
    /// link-local address (the lab's client network is IPv4 only), for
    /// peers that put addresses and routes on the uplink: policy-based
    /// XFRM, strongSwan in kernel mode.
    pub fn enable_link_local_ipv6(&self) {
        for ns in self.clients.iter().chain([&self.broker]) {
            ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"]);
        }
    }

    /// Pings the inet host from client `i`; true if all replies came.
    pub fn ping(&self, i: usize, count: u32) -> bool {
        self.clients[i]
            .try_run(&[
                "ping",
                "-6",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                "2001:db8:ffff::2",
            ])
            .status
            .success()
    }
}

/// A home router in front of a client: `inside` has 10.0.0.2 behind it,
/// and it masquerades out of its link on the lab's client network.
pub struct HomeRouter {
    router: Netns,
    outside: String,
}

impl HomeRouter {
    /// Puts a router with public address `public` (on the broker's client
    /// network) in front of a new client namespace, which becomes the
    /// lab's client 0.
    pub fn new(lab: &mut TunnelLab, public: &str) -> HomeRouter {
        let router = Netns::new("sgr");
        let inside = Netns::new("sgc");
        let outside = unique("sgro");
        let bridge_port = unique("sgrb");
        let status = std::process::Command::new("ip")
            .args([
                "link",
                "add",
                &outside,
                "netns",
                &router.name,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_port,
                "netns",
                &lab.broker.name,
            ])
            .status()
            .expect("ip");
        assert!(status.success());
        lab.broker
            .run(&["ip", "link", "set", &bridge_port, "master", "br0"]);
        lab.broker.run(&["ip", "link", "set", &bridge_port, "up"]);
        router.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{outside}.promote_secondaries=1"),
        ]);
        router.run(&["ip", "addr", "add", public, "dev", &outside]);
        router.run(&["ip", "link", "set", &outside, "up"]);
        link(&router, "10.0.0.1/24", &inside, "10.0.0.2/24");
        inside.run(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        router.run(&[
            "nft",
            &format!(
                "add table ip home; add chain ip home post {{ type nat hook postrouting \
                 priority 100; }}; add rule ip home post oifname \"{outside}\" masquerade"
            ),
        ]);
        lab.clients.push(inside);
        HomeRouter { router, outside }
    }

    /// The line reconnects with another public address: the old one and
    /// the NAT mappings made with it are gone.
    pub fn renumber(&self, old: &str, new: &str) {
        self.router
            .run(&["ip", "addr", "add", new, "dev", &self.outside]);
        self.router
            .run(&["ip", "addr", "del", old, "dev", &self.outside]);
    }

    /// Drops everything the router would forward, or forwards it again.
    pub fn cut(&self, cut: bool) {
        let state = if cut { "down" } else { "up" };
        self.router
            .run(&["ip", "link", "set", &self.outside, state]);
    }
}

/// An iperf3 stream running in the background.
pub struct BackgroundIperf {
    server: Child,
    /// Until its output is read.
    client: Option<Child>,
}

impl BackgroundIperf {
    /// Waits for the stream to end (up to `limit`: a stream that stalled
    /// can keep iperf3 waiting for ever); the octets sent in each
    /// interval, or iperf3's error (a stream that broke).
    pub fn intervals(mut self, limit: Duration) -> Result<Vec<u64>, String> {
        let mut client = self.client.take().ok_or("already read")?;
        if wait_for(limit, || client.try_wait().ok().flatten()).is_none() {
            let _ = client.kill();
            let _ = client.wait();
            return Err(format!(
                "iperf3 still running after {limit:?}: the stream stalled"
            ));
        }
        let out = client.wait_with_output().map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 output: {e}"))?;
        if !json["error"].is_null() {
            return Err(format!("iperf3: {}", json["error"]));
        }
        json["intervals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["sum"]["bytes"].as_u64())
                    .collect()
            })
            .ok_or_else(|| "iperf3 reported no intervals".to_string())
    }
}

impl Drop for BackgroundIperf {
    fn drop(&mut self) {
        for c in self.client.iter_mut().chain([&mut self.server]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `DIR/NAME.toml`, a client configuration for the labs' broker
/// (192.0.2.1, the example ECDSA CA, quick liveness checks) with
/// `credentials` (identity, certificate and key lines) and `dataplane`
/// (the `[dataplane]` lines); its control socket is `DIR/NAME.sock`.
pub fn write_client_config(dir: &Path, name: &str, credentials: &str, dataplane: &str) -> PathBuf {
    let text = format!(
        r#"broker = "192.0.2.1"
broker_identity = "broker.example.net"
{credentials}
ca = ["{c}/ecdsa/ca.pem"]
dpd_interval = 1
retransmit_timeout_ms = 300
retransmit_tries = 3
control_socket = "{dir}/{name}.sock"
[dataplane]
{dataplane}
"#,
        c = certs_dir().display(),
        dir = dir.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write");
    path
}

/// The state and address of the client whose configuration is `config`
/// (as [`write_client_config`] writes it), once it reports `up`.
pub fn wait_client_up(config: &Path, limit: Duration) -> Option<String> {
    let socket = config.with_extension("sock");
    wait_for(limit, || {
        std::os::unix::net::UnixStream::connect(&socket).ok()?;
        let s = control_request(&socket, &serde_json::json!("Status"))["Status"].clone();
        if s["state"] != "up" {
            return None;
        }
        s["address"].as_str().map(str::to_string)
    })
}

/// Sends one JSON request line to a daemon's control socket and returns
/// the JSON answer.
pub fn control_request(socket: &Path, request: &serde_json::Value) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("control socket");
    let mut line = serde_json::to_vec(request).expect("json");
    line.push(b'\n');
    stream.write_all(&line).expect("write");
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .expect("read");
    serde_json::from_str(&answer).expect("json answer")
}

/// Adds and removes `n` DMZ sites through a running broker's control
/// socket, checking every `check_every` rounds that the broker's network
/// namespace holds no route, rule or peer of a removed site. Returns the
/// mean time of one `site add`.
pub fn sites_add_remove_loop(
    broker: &Netns,
    socket: &Path,
    interface: &str,
    n: usize,
    check_every: usize,
) -> Duration {
    let peers = || {
        String::from_utf8_lossy(&broker.try_run(&["wg", "show", interface, "peers"]).stdout)
            .into_owned()
    };
    let baseline = peers();
    let mut adding = Duration::ZERO;
    for i in 0..n {
        let name = format!("loop{i}");
        let start = Instant::now();
        let added = control_request(
            socket,
            &serde_json::json!({"SiteAdd": {"name": name, "public_key": null, "prefix_length": null}}),
        );
        adding += start.elapsed();
        let prefix = added["Site"]["prefix"]
            .as_str()
            .unwrap_or_else(|| panic!("add {i}: {added}"))
            .to_string();
        let removed = control_request(socket, &serde_json::json!({"SiteRemove": name}));
        assert!(removed.get("Site").is_some(), "remove {i}: {removed}");
        if (i + 1) % check_every == 0 || i + 1 == n {
            let routes = broker.run(&["ip", "-6", "route", "show", "table", "all"]);
            assert!(
                !routes.contains(&format!("{prefix}/")),
                "route of a removed site left: {routes}"
            );
            let rules = broker.run(&["ip", "-6", "rule"]);
            assert!(!rules.contains(&prefix), "rule left: {rules}");
            let now = peers();
            assert_eq!(now, baseline, "peers left behind");
        }
    }
    adding / n.max(1) as u32
}

/// A broker configuration with `[sites]` on WireGuard device `interface`
/// (and a routing table for them), its state under `dir`. The interface
/// name must be unique on the machine: wireguard-go's UAPI socket lives in
/// /var/run/wireguard, which all namespaces share.
pub fn sites_broker_config(
    dir: &Path,
    interface: &str,
    uplink: &str,
    table: Option<u32>,
) -> PathBuf {
    let table = table.map(|t| format!("table = {t}\n")).unwrap_or_default();
    // The kernel WireGuard run (in a VM) sets this.
    let backend = std::env::var("SIXGATE_SITES_BACKEND").unwrap_or_else(|_| "userspace".into());
    let text = format!(
        r#"{ike}[pool]
prefix = "2001:db8:100::100/120"
[storage]
path = "{dir}/state"
[sites]
prefix = "2001:db8:1000::/48"
prefix_length = 64
transfer4 = "192.168.3.0/24"
interface = "{interface}"
listen_port = 51820
endpoint = "192.0.2.1:51820"
uplink = "{uplink}"
backend = "{backend}"
peer_timeout = 3
hold_down = 0
{table}"#,
        ike = broker_ike_section(),
        dir = dir.display()
    );
    let p = dir.join("broker.toml");
    std::fs::write(&p, text).expect("write");
    p
}

/// The `[ike]` section of the labs' brokers: 192.0.2.1, the example ECDSA
/// PKI's broker identity and files.
fn broker_ike_section() -> String {
    let c = certs_dir().join("ecdsa");
    let c = c.display();
    format!(
        r#"[ike]
listen = ["192.0.2.1"]
identity = "broker.example.net"
certificate = "{c}/broker.pem"
private_key = "{c}/broker.key"
ca = ["{c}/ca.pem"]
"#
    )
}

/// How long a VM may run before it is taken for hung: what the
/// slowest VM test (about six minutes) needs under emulation, 2.5 times.
pub const VM_LIMIT: Duration = Duration::from_secs(900);

/// Runs `script` (sh) inside Debian's kernel booted under virtme-ng with
/// software emulation (this machine's filesystem inside, read-only), for
/// what this machine's kernel lacks (ESP, WireGuard). Returns whether it
/// succeeded and everything it printed. Panics if there is no kernel or no
/// `vng`: such tests fail, not skip, when the VM cannot start. A VM that
/// hangs is killed after [`VM_LIMIT`] so that CI fails instead of waiting.
pub fn run_in_vm(script: &str) -> (bool, String) {
    let kernel = std::fs::read_dir("/boot")
        .expect("/boot")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("vmlinuz-") && n.ends_with("-amd64") && !n.contains("-rt-")
        })
        .max()
        .expect("a Debian kernel in /boot (linux-image-amd64)");
    let out = Command::new("timeout")
        .args([
            "--kill-after=30",
            &VM_LIMIT.as_secs().to_string(),
            "vng",
            "-r",
            kernel.to_str().expect("path"),
            "--disable-kvm",
            "--memory",
            "2G",
            "--cpus",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("vng (virtme-ng) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An IKE_SA_INIT flood from Debian's `ike-scan`, run in client namespace
/// `i` of a lab: IKEv2 requests to the broker from random IPv4 source
/// addresses, as fast as the machine goes. The broker's answers to those
/// addresses leave by a default route into a namespace that drops them,
/// as they would towards the internet.
pub struct Flood {
    scanner: Child,
    _sink: Netns,
}

impl Flood {
    pub fn start(lab: &TunnelLab, i: usize, requests: usize) -> Flood {
        let sink = Netns::new("sgsink");
        let (out, sunk) = (unique("sgo"), unique("sgk"));
        let made = Command::new("ip")
            .args([
                "link",
                "add",
                &out,
                "netns",
                &lab.broker.name,
                "type",
                "veth",
            ])
            .args(["peer", "name", &sunk, "netns", &sink.name])
            .status()
            .expect("ip");
        assert!(made.success(), "veth into the sink");
        sink.run(&["ip", "link", "set", &sunk, "up"]);
        lab.broker
            .run(&["ip", "link", "set", &out, "arp", "off", "up"]);
        lab.broker
            .run(&["ip", "route", "add", "default", "dev", &out]);
        let hosts = lab.dir.path().join("flood-hosts");
        std::fs::write(&hosts, "192.0.2.1\n".repeat(requests)).expect("hosts file");
        let mut scan = lab.clients[i].command("ike-scan");
        scan.args([
            "--ikev2",
            "--sourceip=random",
            "--retry=1",
            "-B",
            "1000M",
            "-f",
        ])
        .arg(&hosts)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        Flood {
            scanner: scan.spawn().expect("ike-scan"),
            _sink: sink,
        }
    }

    /// Whether ike-scan is still sending.
    pub fn running(&mut self) -> bool {
        self.scanner.try_wait().expect("ike-scan").is_none()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.scanner.kill();
        let _ = self.scanner.wait();
    }
}

/// CPU time (user and system) a process has used so far, from
/// /proc/PID/stat in clock ticks of 100 Hz (Linux's USER_HZ).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// A process's resident memory, KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// A process's real user and its effective and bounding capability sets,
/// from /proc/PID/status.
pub fn credentials(pid: u32) -> (u32, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .trim()
            .to_string()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let caps = |name| u64::from_str_radix(&field(name), 16).unwrap();
    (uid, caps("CapEff:"), caps("CapBnd:"))
}

/// CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, what the daemons keep.
pub const NET_ADMIN_AND_BIND: u64 = 1 << 12 | 1 << 10;

/// What `ping -q` said at the end.
#[derive(Debug, Clone, Copy)]
pub struct PingSummary {
    pub sent: u32,
    pub received: u32,
    /// The average round-trip time, if any reply came.
    pub rtt_ms: Option<f64>,
}

impl TunnelLab {
    /// Pings the inet host from client `i` through the tunnel, `count`
    /// times every 20 ms, and reads ping's summary.
    pub fn ping_summary(&self, i: usize, count: u32) -> PingSummary {
        let count_arg = count.to_string();
        let out = self.clients[i].try_run(&[
            "ping",
            "-6",
            "-c",
            &count_arg,
            "-i",
            "0.02",
            "-W",
            "1",
            "-q",
            "2001:db8:ffff::2",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        let received = text
            .split(", ")
            .find_map(|f| f.strip_suffix(" received")?.parse().ok())
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        // "rtt min/avg/max/mdev = 0.051/0.078/0.180/0.020 ms"
        let rtt_ms = text
            .split(" = ")
            .nth(1)
            .and_then(|v| v.split('/').nth(1)?.parse().ok());
        PingSummary {
            sent: count,
            received,
            rtt_ms,
        }
    }
}
