//! Throughput through the tunnel, in the lab of the end-to-end tests, for
//! sixgate's userspace data plane and, side by side in the same run, for
//! strongSwan with kernel-libipsec and for wireguard-go: one iperf3 TCP
//! stream from the client to the IPv6 host behind the broker. Prints a
//! table with the ratios.
//!
//! Run as root from a release build:
//! `cargo build --release --workspace && target/release/tunnel-bench [SECONDS]`

use std::process::Stdio;
use std::time::Duration;

use sixgate_tests::{wait_for, Daemon, Netns, StrongSwan, SwanMode, TunnelLab};

fn ping_ok(lab: &TunnelLab) -> bool {
    wait_for(Duration::from_secs(20), || {
        lab.clients[0]
            .try_run(&["ping", "-6", "-c", "1", "-W", "1", "2001:db8:ffff::2"])
            .status
            .success()
            .then_some(())
    })
    .is_some()
}

fn sixgate(seconds: u32) -> Result<f64, String> {
    let lab = TunnelLab::new(1);
    let _pair = lab.start_pair("", "", Duration::from_secs(30));
    if !ping_ok(&lab) {
        return Err("no ping through sixgate".into());
    }
    lab.iperf(0, seconds, false)
}

const SWAN_CLIENT: &str = r#"connections { t { version = 2
  local_addrs = 192.0.2.2
  remote_addrs = 192.0.2.1
  vips = ::
  encap = yes
  proposals = aes128gcm16-prfsha256-x25519
  local { auth = pubkey
    certs = client.pem
    id = client@example.net }
  remote { auth = pubkey
    id = broker.example.net }
  children { net { remote_ts = ::/0
    esp_proposals = aes128gcm16 } } } }
"#;

const SWAN_BROKER: &str = r#"connections { t { version = 2
  local_addrs = 192.0.2.1
  pools = v6
  encap = yes
  proposals = aes128gcm16-prfsha256-x25519
  local { auth = pubkey
    certs = broker.pem
    id = broker.example.net }
  remote { auth = pubkey
    id = client@example.net }
  children { net { local_ts = ::/0
    esp_proposals = aes128gcm16 } } } }
pools { v6 { addrs = 2001:db8:100::100/120 } }
"#;

fn strongswan(seconds: u32) -> Result<f64, String> {
    let lab = TunnelLab::new(1);
    lab.broker
        .run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let _broker = StrongSwan::start(
        &lab.broker,
        "ecdsa",
        "broker",
        "",
        SWAN_BROKER,
        SwanMode::Routes,
    );
    let client = StrongSwan::start_client(&lab.clients[0], SWAN_CLIENT, SwanMode::Routes);
    let out = client.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    if !out.contains("completed successfully") {
        return Err(format!("strongSwan did not come up: {out}"));
    }
    if !ping_ok(&lab) {
        return Err("no ping through strongSwan".into());
    }
    lab.iperf(0, seconds, false)
}

fn wg_keys(ns: &Netns) -> (String, String) {
    let private = ns.run(&["wg", "genkey"]).trim().to_string();
    let mut pubkey = ns.command("wg");
    pubkey
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = pubkey.spawn().expect("wg pubkey");
    {
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(private.as_bytes());
    }
    let public = String::from_utf8_lossy(&child.wait_with_output().expect("wg").stdout)
        .trim()
        .to_string();
    (private, public)
}

fn wireguard_go(seconds: u32) -> Result<f64, String> {
    let lab = TunnelLab::new(1);
    let (client, broker) = (&lab.clients[0], &lab.broker);
    broker.run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let mut daemons: Vec<Daemon> = Vec::new();
    // The UAPI sockets (/var/run/wireguard/NAME.sock) are shared between
    // namespaces: each device needs a name of its own.
    let (cdev, bdev) = (sixgate_tests::unique("wgc"), sixgate_tests::unique("wgb"));
    let (ck, cp) = wg_keys(client);
    let (bk, bp) = wg_keys(broker);
    for (ns, dev) in [(client, &cdev), (broker, &bdev)] {
        let log = lab.dir.path().join(format!("{dev}.log"));
        daemons.push(Daemon::spawn(
            ns,
            std::path::Path::new("/usr/bin/wireguard-go"),
            &["-f", dev],
            log,
        ));
    }
    for (ns, dev) in [(client, &cdev), (broker, &bdev)] {
        wait_for(Duration::from_secs(10), || {
            ns.try_run(&["ip", "link", "show", dev])
                .status
                .success()
                .then_some(())
        })
        .ok_or("wireguard-go did not create its device")?;
    }
    let key_file = |k: &str, n: &str| {
        let p = lab.dir.path().join(n);
        std::fs::write(&p, k).map(|_| p)
    };
    let ckf = key_file(&ck, "c.key").map_err(|e| e.to_string())?;
    let bkf = key_file(&bk, "b.key").map_err(|e| e.to_string())?;
    client.run(&[
        "wg",
        "set",
        &cdev,
        "private-key",
        ckf.to_str().unwrap_or_default(),
        "peer",
        &bp,
        "endpoint",
        "192.0.2.1:51820",
        "allowed-ips",
        "::/0",
    ]);
    broker.run(&[
        "wg",
        "set",
        &bdev,
        "private-key",
        bkf.to_str().unwrap_or_default(),
        "listen-port",
        "51820",
        "peer",
        &cp,
        "allowed-ips",
        "2001:db8:100::100/128",
    ]);
    for (ns, dev) in [(client, &cdev), (broker, &bdev)] {
        ns.run(&["ip", "link", "set", dev, "mtu", "1420", "up"]);
    }
    client.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:100::100/128",
        "dev",
        &cdev,
        "nodad",
    ]);
    client.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "dev",
        &cdev,
        "src",
        "2001:db8:100::100",
    ]);
    broker.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:100::100/128",
        "dev",
        &bdev,
    ]);
    if !ping_ok(&lab) {
        return Err("no ping through wireguard-go".into());
    }
    let result = lab.iperf(0, seconds, false);
    // SIGTERM lets wireguard-go remove its device and UAPI socket.
    for mut d in daemons {
        d.terminate(Duration::from_secs(3));
    }
    for dev in [&cdev, &bdev] {
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{dev}.sock"));
    }
    result
}

fn main() {
    let seconds: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let results = [
        ("sixgate (userspace ESP, AES-GCM-128)", sixgate(seconds)),
        (
            "strongSwan kernel-libipsec (AES-GCM-128)",
            strongswan(seconds),
        ),
        ("wireguard-go", wireguard_go(seconds)),
    ];
    println!("one TCP stream, {seconds} s, client -> IPv6 host behind the broker");
    println!("{:<44} {:>12}", "data plane", "Mbit/s");
    for (name, r) in &results {
        match r {
            Ok(m) => println!("{name:<44} {m:>12.1}"),
            Err(e) => println!("{name:<44} {:>12}  ({e})", "failed"),
        }
    }
    if let (Ok(s), Ok(w), Ok(g)) = (&results[0].1, &results[1].1, &results[2].1) {
        println!(
            "sixgate / strongSwan kernel-libipsec = {:.2}  (target >= 1.5)",
            s / w
        );
        println!(
            "sixgate / wireguard-go               = {:.2}  (target >= 1.0)",
            s / g
        );
    }
}
