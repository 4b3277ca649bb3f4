//! Throughput and latency through the tunnel, in the lab of the
//! end-to-end tests, for sixgate's userspace data plane and, side by side
//! in the same run, for the same path routed plainly (no tunnel), for
//! strongSwan with kernel-libipsec and for wireguard-go: iperf3 TCP from
//! the client to the IPv6 host behind the broker, one stream and four,
//! and the ping round trip when idle. Prints one table with the ratios.
//!
//! Run as root from a release build:
//! `cargo build --release --workspace && target/release/tunnel-bench [SECONDS] [plain|sixgate|strongswan|wireguard-go ...]`

use std::process::Stdio;
use std::time::Duration;

use sixgate_tests::{wait_for, Daemon, Netns, StrongSwan, SwanMode, TunnelLab};

/// A data plane's run: its measurements for a number of seconds.
type Plane = fn(u32) -> Result<Measured, String>;

/// What one data plane did.
struct Measured {
    one_stream: f64,
    four_streams: f64,
    /// Mean ping round trip, microseconds.
    rtt_us: f64,
}

/// The measurements, once the path works.
fn measure(lab: &TunnelLab, seconds: u32) -> Result<Measured, String> {
    // Idle first: the round trip before any load.
    let rtt_us = ping_rtt_us(lab)?;
    Ok(Measured {
        one_stream: lab.iperf(0, seconds, false)?,
        four_streams: lab.iperf_streams(0, seconds, false, 4)?,
        rtt_us,
    })
}

/// The mean of 20 pings, 0.1 s apart, in microseconds.
fn ping_rtt_us(lab: &TunnelLab) -> Result<f64, String> {
    let out = lab.clients[0].try_run(&[
        "ping",
        "-6",
        "-q",
        "-c",
        "20",
        "-i",
        "0.1",
        "2001:db8:ffff::2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.040/0.052/0.071/0.008 ms
    text.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|avg| avg.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .ok_or_else(|| format!("ping: {text}"))
}

/// The same path without a tunnel: the client's link gets IPv6 and the
/// broker routes it.
fn plain(seconds: u32) -> Result<Measured, String> {
    let lab = TunnelLab::new(1);
    let client = &lab.clients[0];
    let link = client.run(&["ip", "-o", "-4", "addr", "show", "to", "192.0.2.2"]);
    let link = link
        .split_whitespace()
        .nth(1)
        .ok_or("no client link")?
        .to_string();
    client.run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{link}.disable_ipv6=0"),
    ]);
    let ports = lab
        .broker
        .run(&["ip", "-o", "link", "show", "master", "br0"]);
    for port in ports.lines().filter_map(|l| l.split(": ").nth(1)) {
        let port = port.split('@').next().unwrap_or(port);
        lab.broker.run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{port}.disable_ipv6=0"),
        ]);
    }
    lab.broker
        .run(&["sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=0"]);
    lab.broker
        .run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    lab.broker.run(&[
        "ip",
        "addr",
        "add",
        "2001:db8:100::1/64",
        "dev",
        "br0",
        "nodad",
    ]);
    client.run(&[
        "ip",
        "addr",
        "add",
        "2001:db8:100::100/64",
        "dev",
        &link,
        "nodad",
    ]);
    client.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:100::1",
    ]);
    if !ping_ok(&lab) {
        return Err("no plain route".into());
    }
    measure(&lab, seconds)
}

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

fn sixgate(seconds: u32) -> Result<Measured, String> {
    let lab = TunnelLab::new(1);
    let _pair = lab.start_pair("", "", Duration::from_secs(30));
    if !ping_ok(&lab) {
        return Err("no ping through sixgate".into());
    }
    measure(&lab, seconds)
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

fn strongswan(seconds: u32) -> Result<Measured, String> {
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
    measure(&lab, seconds)
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

fn wireguard_go(seconds: u32) -> Result<Measured, String> {
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
    let result = measure(&lab, seconds);
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
    let mut args = std::env::args().skip(1).peekable();
    let seconds: u32 = args
        .next_if(|a| a.parse::<u32>().is_ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // Names after the seconds pick some of the data planes.
    let only: Vec<String> = args.collect();
    let planes: [(&str, &str, Plane); 4] = [
        ("plain", "plain routing (no tunnel)", plain),
        ("sixgate", "sixgate (userspace ESP, AES-GCM-128)", sixgate),
        (
            "strongswan",
            "strongSwan kernel-libipsec (AES-GCM-128)",
            strongswan,
        ),
        ("wireguard-go", "wireguard-go", wireguard_go),
    ];
    let results: Vec<(&str, Result<Measured, String>)> = planes
        .iter()
        .map(|(key, name, run)| {
            let picked = only.is_empty() || only.iter().any(|o| o == key);
            (
                *name,
                if picked {
                    run(seconds)
                } else {
                    Err("not run".into())
                },
            )
        })
        .collect();
    println!("iperf3 TCP, {seconds} s each, client -> IPv6 host behind the broker; ping idle");
    println!(
        "{:<42} {:>10} {:>8} {:>11} {:>9} {:>9}",
        "data plane", "1 stream", "/plain", "4 streams", "RTT us", "added us"
    );
    let plain = results[0].1.as_ref().ok();
    for (name, r) in &results {
        match r {
            Ok(m) => {
                let (ratio, added) = match plain {
                    Some(p) => (
                        format!("{:.1}%", 100.0 * m.one_stream / p.one_stream),
                        format!("{:.0}", m.rtt_us - p.rtt_us),
                    ),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{name:<42} {:>10.1} {ratio:>8} {:>11.1} {:>9.0} {added:>9}",
                    m.one_stream, m.four_streams, m.rtt_us
                )
            }
            Err(e) if e == "not run" => {}
            Err(e) => println!("{name:<42} {:>10}  ({e})", "failed"),
        }
    }
    println!("(Mbit/s; RTT the mean of 20 pings)");
    if let (Some(p), Ok(s), Ok(w), Ok(g)) = (plain, &results[1].1, &results[2].1, &results[3].1) {
        let ratio = |a: f64, b: f64| a / b;
        println!(
            "sixgate / plain routing              = {:.3}  (target >= 0.25)",
            ratio(s.one_stream, p.one_stream)
        );
        println!(
            "sixgate / strongSwan kernel-libipsec = {:.2}  (target >= 3)",
            ratio(s.one_stream, w.one_stream)
        );
        println!(
            "sixgate / wireguard-go               = {:.2}  (target >= 2)",
            ratio(s.one_stream, g.one_stream)
        );
        println!(
            "sixgate added latency                = {:.0} us  (target <= 50)",
            s.rtt_us - p.rtt_us
        );
    }
}
