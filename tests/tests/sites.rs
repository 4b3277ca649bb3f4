//! DMZ sites over WireGuard (wireguard-go), as root in namespaces, with the
//! DMZ router set up only from the files `site config` writes:
//!
//! ```text
//! inet (2001:db8:ffff::2, 203.0.113.2) -- broker (up0) --- wan (192.0.2.0/24) --- home router
//!                                                                                   | 198.51.100.0/24
//!                                                        home host (.50) ----------+---- DMZ router (.10) -- lan0 -- DMZ host
//! ```

use std::process::Stdio;
use std::time::Duration;

use sixgate_tests::{
    run_in_vm, wait_for, workspace_bin, Daemon, Netns, TempDir, NET_ADMIN_AND_BIND,
};

/// One at a time: the VM test emulates a whole machine on the same two
/// cores, and its timeouts should not depend on what runs beside it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    let out = std::process::Command::new("ip")
        .args([
            "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name,
            "netns", &b.name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.run(&["ip", "link", "set", a_name, "up"]);
    b.run(&["ip", "link", "set", b_name, "up"]);
}

/// /etc/netns/NAME/, which `ip netns exec NAME` mounts over /etc; removed
/// with the guard.
struct EtcNetns(std::path::PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct SitesLab {
    inet: Netns,
    broker: Netns,
    home: Netns,
    dmzr: Netns,
    homehost: Netns,
    dmzhost: Netns,
    dir: TempDir,
    /// The broker's WireGuard device (unique: UAPI sockets are shared).
    wg: String,
}

impl SitesLab {
    fn new() -> SitesLab {
        let lab = SitesLab {
            inet: Netns::new("sgsi"),
            broker: Netns::new("sgsb"),
            home: Netns::new("sgsh"),
            dmzr: Netns::new("sgsr"),
            homehost: Netns::new("sgsx"),
            dmzhost: Netns::new("sgsd"),
            dir: TempDir::new("sgsites"),
            wg: sixgate_tests::unique("sgw"),
        };
        veth(&lab.inet, "eth0", &lab.broker, "up0");
        lab.inet.run(&[
            "ip",
            "addr",
            "add",
            "2001:db8:ffff::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        lab.inet
            .run(&["ip", "addr", "add", "203.0.113.2/24", "dev", "eth0"]);
        lab.inet.run(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:1000::/48",
            "via",
            "2001:db8:ffff::1",
        ]);
        lab.broker.run(&[
            "ip",
            "addr",
            "add",
            "2001:db8:ffff::1/64",
            "dev",
            "up0",
            "nodad",
        ]);
        lab.broker
            .run(&["ip", "addr", "add", "203.0.113.1/24", "dev", "up0"]);
        // The home router: NAT from the home LAN to its WAN, like any.
        veth(&lab.broker, "wan0", &lab.home, "wan0");
        lab.broker
            .run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "wan0"]);
        lab.home
            .run(&["ip", "addr", "add", "192.0.2.2/24", "dev", "wan0"]);
        lab.home
            .run(&["ip", "link", "add", "br0", "type", "bridge"]);
        lab.home
            .run(&["ip", "addr", "add", "198.51.100.1/24", "dev", "br0"]);
        lab.home.run(&["ip", "link", "set", "br0", "up"]);
        lab.home.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab.home.run(&["nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority srcnat; }; add rule ip nat post oifname wan0 masquerade"]);
        for (ns, port) in [(&lab.dmzr, "hp1"), (&lab.homehost, "hp2")] {
            veth(ns, "up0", &lab.home, port);
            lab.home.run(&["ip", "link", "set", port, "master", "br0"]);
        }
        lab.dmzr
            .run(&["ip", "addr", "add", "198.51.100.10/24", "dev", "up0"]);
        lab.dmzr
            .run(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
        lab.homehost
            .run(&["ip", "addr", "add", "198.51.100.50/24", "dev", "up0"]);
        lab.homehost
            .run(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
        // The DMZ LAN: the host takes its IPv6 address by SLAAC.
        veth(&lab.dmzr, "lan0", &lab.dmzhost, "eth0");
        lab
    }

    /// With a routing table of the sites' own, so policy rules are part
    /// of what must come back after a crash; run as nobody: wireguard-go too, and everything after the start.
    fn broker_config(&self) -> std::path::PathBuf {
        let p = sixgate_tests::sites_broker_config(self.dir.path(), &self.wg, "up0", Some(100));
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}[process]\nuser = \"nobody\"\n")).unwrap();
        p
    }

    fn broker(&self, config: &std::path::Path) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("broker-{}.log", sixgate_tests::unique("")));
        let d = Daemon::spawn(
            &self.broker,
            &workspace_bin("sixgate-broker"),
            &["run", "--config", config.to_str().unwrap()],
            log,
        );
        let sock = self.dir.path().join("state/broker.sock");
        // Emulated (the kernel WireGuard run), a start can take long.
        wait_for(Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("broker did not start:\n{}", d.log_text()));
        d
    }

    fn cli(&self, args: &[&str]) -> String {
        let mut argv = vec![workspace_bin("sixgate-broker")
            .to_str()
            .unwrap()
            .to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self.broker.try_run(&refs);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    }
}

/// What the broker installed that must come back after a restart and be
/// gone after a stop: WireGuard peers, routes and rules of the site
/// prefixes, the nftables table.
fn installed(broker: &Netns, wg: &str) -> (String, String, String) {
    let wg =
        String::from_utf8_lossy(&broker.try_run(&["wg", "show", wg, "peers"]).stdout).into_owned();
    let sites = |text: String| -> String {
        text.lines()
            .filter(|l| l.contains("2001:db8:1000"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let routes = sites(broker.run(&["ip", "-6", "route", "show", "table", "all"]));
    let rules = sites(broker.run(&["ip", "-6", "rule"]));
    let nft = String::from_utf8_lossy(
        &broker
            .try_run(&["nft", "list", "table", "inet", "sixgate_sites"])
            .stdout,
    )
    .into_owned();
    (wg, format!("{routes}\n{rules}"), nft)
}

/// The wireguard-go processes serving `wg` in this namespace.
fn wireguard_go(broker: &Netns, wg: &str) -> usize {
    let out = broker.try_run(&["pgrep", "-f", &format!("wireguard-go -f {wg}")]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_dmz_site_from_the_generated_files_alone() {
    let _serial = serial();
    let lab = SitesLab::new();
    let config = lab.broker_config();
    let kernel = std::env::var("SIXGATE_SITES_BACKEND").as_deref() == Ok("kernel");
    if !kernel {
        // A wireguard-go with our device's name that nobody owns (what a
        // killed broker of an older version left): the start takes over.
        let out = lab.broker.try_run(&["wireguard-go", &lab.wg]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(wait_for(Duration::from_secs(5), || lab
            .broker
            .run(&["ip", "link"])
            .contains(&lab.wg)
            .then_some(()))
        .is_some());
    }
    let mut broker = lab.broker(&config);
    if !kernel {
        assert!(
            broker.log_text().contains("stopping the wireguard-go"),
            "{}",
            broker.log_text()
        );
        assert_eq!(
            wireguard_go(&lab.broker, &lab.wg),
            1,
            "{}",
            broker.log_text()
        );
        // Started by a broker that gave up root: as nobody, with only the
        // broker's two capabilities.
        let out = lab
            .broker
            .try_run(&["pgrep", "-f", &format!("wireguard-go -f {}", lab.wg)]);
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let nobody = 65534;
        assert_eq!(
            sixgate_tests::credentials(pid),
            (nobody, NET_ADMIN_AND_BIND, NET_ADMIN_AND_BIND)
        );
    }
    if std::env::var("SIXGATE_SITES_BACKEND").as_deref() == Ok("kernel") {
        let link = lab.broker.run(&["ip", "-d", "link", "show", &lab.wg]);
        assert!(
            link.contains("wireguard"),
            "a kernel WireGuard device: {link}"
        );
        println!("broker on a kernel WireGuard device");
    }
    let added = lab.cli(&["site", "add", "home", "--config", config.to_str().unwrap()]);
    assert!(
        added.contains("prefix:        2001:db8:1000:1::/64"),
        "{added}"
    );
    let files = lab.dir.path().join("site");
    // A symlink planted where the key file goes is replaced, not followed.
    std::fs::create_dir_all(&files).unwrap();
    let victim = lab.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, files.join("wg-sixgate.conf")).unwrap();
    lab.cli(&[
        "site",
        "config",
        "home",
        "--out",
        files.to_str().unwrap(),
        "--uplink",
        "up0",
        "--lan",
        "lan0",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    for name in [
        "wg-sixgate.conf",
        "dmz.nft",
        "dnsmasq.conf",
        "sixgate-dmz.service",
    ] {
        let meta = std::fs::symlink_metadata(files.join(name)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert!(meta.file_type().is_file(), "{name} is a plain file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    sixgate_tests::assert_private_tree(&lab.dir.path().join("state"));
    let wgconf = std::fs::read_to_string(files.join("wg-sixgate.conf")).unwrap();
    assert!(
        !wgconf.contains("Table = off")
            && wgconf.contains("PrivateKey = ")
            && !wgconf.contains("PrivateKey =\n"),
        "{wgconf}"
    );

    // The DMZ router, from the three files, on a PPPoE-style default
    // route (a link, no gateway: the home router answers ARP for all).
    lab.home
        .run(&["sysctl", "-qw", "net.ipv4.conf.br0.proxy_arp=1"]);
    lab.dmzr
        .run(&["ip", "route", "replace", "default", "dev", "up0"]);
    // The router's own resolver knows one name (its /etc/hosts, which
    // `ip netns exec` takes from /etc/netns/NAME/).
    let etc = EtcNetns(std::path::PathBuf::from("/etc/netns").join(&lab.dmzr.name));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("hosts"), "203.0.113.2 inet.example.test\n").unwrap();
    lab.dmzr
        .run(&["nft", "-f", files.join("dmz.nft").to_str().unwrap()]);
    let mut up = lab.dmzr.command("wg-quick");
    up.args(["up", files.join("wg-sixgate.conf").to_str().unwrap()])
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", "wireguard-go")
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
    let out = up.output().unwrap();
    assert!(
        out.status.success(),
        "wg-quick up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _dnsmasq = Daemon::spawn(
        &lab.dmzr,
        std::path::Path::new("/usr/sbin/dnsmasq"),
        &[
            "-C",
            files.join("dnsmasq.conf").to_str().unwrap(),
            "-k",
            "--pid-file",
            &format!("--dhcp-leasefile={}/leases", lab.dir.path().display()),
        ],
        lab.dir.path().join("dnsmasq.log"),
    );
    let down = || {
        let mut c = lab.dmzr.command("wg-quick");
        c.args(["down", files.join("wg-sixgate.conf").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
    };

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SLAAC on the DMZ host.
        let addr = wait_for(Duration::from_secs(30), || {
            let a = lab
                .dmzhost
                .run(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"]);
            a.split_whitespace()
                .find(|w| w.starts_with("2001:db8:1000:1:"))
                .map(|w| w.split('/').next().unwrap().to_string())
        })
        .expect("a SLAAC address from the delegated prefix");
        // Out and in.
        let ping6 = |ns: &Netns, to: &str| {
            ns.try_run(&["ping", "-6", "-c", "2", "-W", "2", to])
                .status
                .success()
        };
        assert!(
            wait_for(Duration::from_secs(20), || ping6(
                &lab.dmzhost,
                "2001:db8:ffff::2"
            )
            .then_some(()))
            .is_some(),
            "DMZ host to inet\n{}",
            broker.log_text()
        );
        assert!(ping6(&lab.inet, &addr), "inet to DMZ host");
        // A road warrior behind the same home NAT: it and the DMZ host
        // reach each other both ways (sites are public hosts).
        let rw_config = sixgate_tests::write_client_config(
            lab.dir.path(),
            "rw",
            &format!(
                "identity = \"client@example.net\"\ncertificate = \"{c}/client.pem\"\nprivate_key = \"{c}/client.key\"",
                c = sixgate_tests::certs_dir().join("ecdsa").display()
            ),
            "backend = \"userspace\"\ntun = \"sgrw0\"",
        );
        let _rw = Daemon::spawn(
            &lab.homehost,
            &workspace_bin("sixgate-client"),
            &["up", "--config", rw_config.to_str().unwrap()],
            lab.dir.path().join("rw.log"),
        );
        let rw_addr = sixgate_tests::wait_client_up(&rw_config, Duration::from_secs(30))
            .unwrap_or_else(|| {
                panic!(
                    "road warrior not up:\n{}",
                    std::fs::read_to_string(lab.dir.path().join("rw.log")).unwrap_or_default()
                )
            });
        assert!(ping6(&lab.dmzhost, &rw_addr), "DMZ host to road warrior");
        assert!(ping6(&lab.homehost, &addr), "road warrior to DMZ host");
        // IPv4 through the broker's NAT, but not to the home network.
        // IPv4 by DHCP from the generated dnsmasq.conf (busybox udhcpc,
        // with a hook script that applies the lease).
        let hook = lab.dir.path().join("udhcpc.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/${{mask:-24}}\" dev \"$interface\"\nip route replace default via \"$router\"\necho \"$dns\" > {}\n",
                lab.dir.path().join("dns").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        lab.dmzhost.run(&[
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            hook.to_str().unwrap(),
        ]);
        let v4 = lab
            .dmzhost
            .run(&["ip", "-4", "addr", "show", "dev", "eth0"]);
        assert!(
            v4.contains("inet 10.77.0."),
            "a DHCPv4 lease from the DMZ router: {v4}"
        );
        let ping4 = |to: &str| {
            lab.dmzhost
                .try_run(&["ping", "-c", "2", "-W", "1", to])
                .status
                .success()
        };
        assert!(ping4("203.0.113.2"), "IPv4 via NAT");
        // The DNS server DHCP announced (the router itself) resolves.
        let dns = std::fs::read_to_string(lab.dir.path().join("dns")).unwrap();
        assert_eq!(dns.trim(), "10.77.0.1", "option 6");
        let looked_up =
            lab.dmzhost
                .try_run(&["busybox", "nslookup", "inet.example.test", dns.trim()]);
        let answer = String::from_utf8_lossy(&looked_up.stdout);
        assert!(answer.contains("203.0.113.2"), "name resolution: {answer}");
        // Management from the home LAN reaches the router's SSH port.
        let mut sshd = lab.dmzr.command("iperf3");
        sshd.args(["-s", "-1", "-p", "22"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut sshd = sshd.spawn().unwrap();
        let managed = wait_for(Duration::from_secs(10), || {
            lab.homehost
                .try_run(&["iperf3", "-c", "198.51.100.10", "-p", "22", "-t", "1"])
                .status
                .success()
                .then_some(())
        });
        let _ = sshd.kill();
        let _ = sshd.wait();
        assert!(
            managed.is_some(),
            "TCP from the home LAN to the router's port 22"
        );
        assert!(
            !ping4("198.51.100.50"),
            "the home host must be out of reach"
        );
        assert!(!ping4("198.51.100.1"), "the home router too");
        // A large transfer from inet to the DMZ host (MSS clamped at 1420).
        let mut server = lab.dmzhost.command("iperf3");
        server
            .args(["-s", "-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut server = server.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let out = lab
            .inet
            .try_run(&["iperf3", "-6", "-c", &addr, "-n", "20M"]);
        let _ = server.kill();
        let _ = server.wait();
        assert!(
            out.status.success(),
            "large transfer: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let list = lab.cli(&["site", "list", "--config", config.to_str().unwrap()]);
        assert!(list.contains("home") && list.contains(" up"), "{list}");
        let json: serde_json::Value = serde_json::from_str(&lab.cli(&[
            "site",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(json[0]["site"]["name"], "home", "{json}");
        assert_eq!(json[0]["up"], true, "{json}");
        assert!(json[0]["last_handshake"].as_u64() > Some(0), "{json}");
        assert!(
            json[0]["site"].get("private_key").is_none(),
            "no keys in listings: {json}"
        );

        // A reload with a new endpoint and liveness timeout, taken while
        // the site stays up (its files then name them), and a new port,
        // which only a start can take, so it is named and kept.
        let text = std::fs::read_to_string(&config).unwrap();
        let changed = text
            .replace("192.0.2.1:51820", "sites.example.test:51820")
            .replace("peer_timeout = 3", "peer_timeout = 6")
            .replace("listen_port = 51820", "listen_port = 51821");
        std::fs::write(&config, changed).unwrap();
        let said = lab.cli(&["reload", "--config", config.to_str().unwrap()]);
        assert!(
            said.contains(", sites and")
                && said.contains("kept until the next start: sites.listen_port")
                && !said.contains("sites.prefix"),
            "{said}"
        );
        let refreshed = lab.dir.path().join("site-reloaded");
        lab.cli(&[
            "site",
            "config",
            "home",
            "--out",
            refreshed.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]);
        let wg_reloaded = std::fs::read_to_string(refreshed.join("wg-sixgate.conf")).unwrap();
        assert!(
            wg_reloaded.contains("Endpoint = sites.example.test:51820")
                && wg_reloaded.contains("PersistentKeepalive = 2"),
            "{wg_reloaded}"
        );
        let port = lab.broker.run(&["wg", "show", &lab.wg, "listen-port"]);
        assert_eq!(port.trim(), "51820");
        assert!(ping6(&lab.inet, &addr), "inet to DMZ host after the reload");
        std::fs::write(&config, text).unwrap();
        let said = lab.cli(&["reload", "--config", config.to_str().unwrap()]);
        assert!(!said.contains("next start"), "{said}");

        // The tunnel goes down: the prefix is answered with unreachable.
        down();
        let unreachable = wait_for(Duration::from_secs(20), || {
            let out = lab
                .inet
                .try_run(&["ping", "-6", "-c", "1", "-W", "1", &addr]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("nreachable").then_some(text)
        });
        assert!(unreachable.is_some(), "ICMPv6 unreachable from the broker");
    }));
    down();
    result.unwrap();

    // Restart: the same state comes back; stop: nothing is left.
    let before = installed(&lab.broker, &lab.wg);
    assert!(
        before.0.trim().len() == 44
            && before.1.contains("unreachable")
            && before.2.contains("masquerade"),
        "{before:?}\n{}\n{}\n{}",
        lab.cli(&["site", "list", "--config", config.to_str().unwrap()]),
        String::from_utf8_lossy(&lab.broker.try_run(&["wg", "show", &lab.wg]).stderr),
        broker.log_text()
    );
    assert!(
        broker
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        broker.log_text()
    );
    let after_stop = installed(&lab.broker, &lab.wg);
    assert!(
        after_stop.0.is_empty() && after_stop.1.trim().is_empty() && after_stop.2.is_empty(),
        "left behind: {after_stop:?}"
    );
    assert!(!lab.broker.run(&["ip", "link"]).contains(&lab.wg));
    assert_eq!(
        wireguard_go(&lab.broker, &lab.wg),
        0,
        "wireguard-go left running"
    );
    let mut broker = lab.broker(&config);
    let again = installed(&lab.broker, &lab.wg);
    assert_eq!((&again.0, &again.1), (&before.0, &before.1));
    assert_eq!(again.2, before.2);
    // A crash (SIGKILL, everything switched on) and a restart: the same
    // peers, routes, rules and table, one wireguard-go, and the broker's
    // own TUN device free again.
    broker.kill();
    let mut broker = lab.broker(&config);
    let after_crash = installed(&lab.broker, &lab.wg);
    assert_eq!(after_crash, before, "{}", broker.log_text());
    if !kernel {
        assert_eq!(wireguard_go(&lab.broker, &lab.wg), 1);
    }
    let shown = lab.cli(&["site", "show", "home", "--config", config.to_str().unwrap()]);
    assert!(shown.contains("2001:db8:1000:1::/64"), "{shown}");
    lab.cli(&[
        "site",
        "remove",
        "home",
        "--config",
        config.to_str().unwrap(),
    ]);
    let gone = installed(&lab.broker, &lab.wg);
    assert!(gone.0.trim().is_empty(), "peer left behind: {gone:?}");
    assert!(
        !gone.1.contains("2001:db8:1000:1::") && !gone.2.contains("2001:db8:1000:1::"),
        "{gone:?}"
    );
    assert!(broker.terminate(Duration::from_secs(10)).is_some());
}

#[test]
fn a_thousand_sites_come_and_go_without_leaks() {
    let _serial = serial();
    let broker = Netns::new("sgsl");
    let inet = Netns::new("sgsm");
    veth(&inet, "eth0", &broker, "up0");
    broker.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"]);
    let dir = TempDir::new("sgsloop");
    // With a routing table, so the policy rules are exercised too.
    let wg = sixgate_tests::unique("sgw");
    let config = sixgate_tests::sites_broker_config(dir.path(), &wg, "up0", Some(100));
    let log = dir.path().join("broker.log");
    let mut daemon = Daemon::spawn(
        &broker,
        &workspace_bin("sixgate-broker"),
        &["run", "--config", config.to_str().unwrap()],
        log,
    );
    let socket = dir.path().join("state/broker.sock");
    wait_for(Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket)
            .ok()
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("broker did not start:\n{}", daemon.log_text()));
    // One site stays, so the rules and routes of a live site are checked too.
    let kept = sixgate_tests::control_request(
        &socket,
        &serde_json::json!({"SiteAdd": {"name": "kept", "public_key": null, "prefix_length": 56}}),
    );
    let kept_prefix = kept["Site"]["prefix"].as_str().unwrap().to_string();
    let per_add = sixgate_tests::sites_add_remove_loop(&broker, &socket, &wg, 1000, 100);
    eprintln!(
        "site add: {:.1} ms on average over 1000",
        per_add.as_secs_f64() * 1e3
    );
    let rules = broker.run(&["ip", "-6", "rule"]);
    assert!(
        rules.contains(&kept_prefix) && rules.contains("lookup 100"),
        "{rules}"
    );
    let routes = broker.run(&["ip", "-6", "route", "show", "table", "100"]);
    assert!(
        routes.contains(&format!("unreachable {kept_prefix}/56")),
        "{routes}"
    );
    assert!(daemon
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(
        !broker.run(&["ip", "-6", "rule"]).contains(&kept_prefix),
        "rules removed on stop"
    );
    assert!(!broker
        .run(&["ip", "-6", "route", "show", "table", "all"])
        .contains(&kept_prefix));
}

/// The same site test with the broker on kernel WireGuard, in Debian's
/// kernel booted under virtme-ng (software emulation: this machine's kernel
/// has no WireGuard). Fails, not skips, when the VM cannot start.
#[test]
fn kernel_wireguard_passes_the_site_test_in_a_vm() {
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let (ok, text) = run_in_vm(&format!(
        "modprobe tun && modprobe wireguard && SIXGATE_SITES_BACKEND=kernel {} a_dmz_site_from_the_generated_files_alone --exact --nocapture --test-threads 1",
        exe.display()
    ));
    assert!(
        ok && text.contains("broker on a kernel WireGuard device")
            && text.contains("test result: ok. 1 passed"),
        "in the VM:\n{text}"
    );
}

/// `dmz.nft` loads into nftables for an endpoint of either family and for
/// a name (nft refuses `ip daddr` with an IPv6 address).
#[test]
fn dmz_rules_load_for_every_kind_of_endpoint() {
    use sixgate_broker::siteconfig::{RouterOptions, SiteFiles};
    use sixgate_broker::sites::Site;
    use sixgate_runtime::config::HostPort;
    let ns = Netns::new("sgsn");
    let dir = TempDir::new("sgsn");
    let site = Site {
        name: "home".into(),
        prefix: "2001:db8:1000:1::".parse().unwrap(),
        prefix_length: 64,
        transfer6: "2001:db8:1000::2".parse().unwrap(),
        transfer4: "192.168.3.2".parse().unwrap(),
        public_key: String::new(),
        private_key: None,
        preshared_key: String::new(),
        created: 0,
    };
    let admin = [None, Some("198.51.100.0/24"), Some("fd00::/64")];
    for (endpoint, admin_from) in ["192.0.2.1:51820", "[2001:db8::1]:51820", "localhost:51820"]
        .into_iter()
        .zip(admin)
    {
        let endpoint = HostPort::parse(endpoint, None).unwrap();
        let router = RouterOptions {
            uplink: "eth0".into(),
            lan: "eth1".into(),
            interface: "wg0".into(),
            dmz4: "10.77.0.0/24".parse().unwrap(),
            dns: Vec::new(),
            admin_from: admin_from.map(|a| a.parse().unwrap()),
        };
        let files = SiteFiles {
            site: &site,
            broker_public_key: "",
            endpoint: &endpoint,
            transfer4_length: 24,
            keepalive: 25,
            router: &router,
        };
        let path = dir.path().join("dmz.nft");
        std::fs::write(&path, files.nftables()).unwrap();
        let out = ns.try_run(&["nft", "-f", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{endpoint}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            files.nftables()
        );
    }
}
