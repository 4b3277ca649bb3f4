//! Test labs in network namespaces: uniquely named namespaces joined by
//! veth pairs, and strongSwan instances inside them, all removed on drop
//! (also when a test fails and unwinds).
#![allow(missing_docs)]

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

/// A strongSwan charon in a namespace, with a private /run, its own
/// configuration and vici socket, killed on drop.
pub struct StrongSwan {
    pub dir: TempDir,
    child: Child,
    ns: String,
}

impl StrongSwan {
    /// Starts charon in `ns` with kernel-libipsec; `swanctl_conf` is the
    /// connection configuration; certificates of `kind` ("ecdsa" or "rsa")
    /// for `who` ("broker" or "client") are installed.
    pub fn start(
        ns: &Netns,
        kind: &str,
        who: &str,
        extra_charon: &str,
        swanctl_conf: &str,
    ) -> StrongSwan {
        let dir = TempDir::new("sgswan");
        let d = dir.path();
        for sub in ["x509", "x509ca", "private"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let certs = certs_dir().join(kind);
        std::fs::copy(certs.join("ca.pem"), d.join("x509ca/ca.pem")).expect("ca");
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
        let conf = format!(
            r#"charon {{
    load = random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey kdf kernel-libipsec kernel-netlink socket-default vici
    install_routes = no
    install_virtual_ip = yes
    port = 500
    port_nat_t = 4500
    {extra_charon}
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
}}
"#,
            d = d.display()
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
