//! The main job end to end, as root in network namespaces: sixgate client
//! and broker daemons, an IPv4-only client network and an IPv6-only host
//! behind the broker. Needs the workspace binaries built (`cargo build
//! --workspace`), iproute2, ping, iperf3 and tcpdump.

use std::process::Stdio;
use std::time::Duration;

use sixgate_tests::{wait_for, Pair, TunnelLab};

const UP: Duration = Duration::from_secs(30);

#[test]
fn ping_and_tcp_both_ways_over_esp_in_udp_only() {
    let lab = TunnelLab::new(1);
    let pair = lab.start_pair("", "", UP);
    assert_eq!(pair.address, "2001:db8:100::100");
    let (bconf, cconf, client) = (&pair.broker_config, &pair.client_config, &pair.client);

    // The address is never "deprecated" and is the source the kernel picks.
    let addr = lab.clients[0].run(&["ip", "-6", "addr", "show", "dev", "sgc0"]);
    let line = addr
        .lines()
        .skip_while(|l| !l.contains("2001:db8:100::100"))
        .nth(1)
        .unwrap_or_default();
    assert!(line.contains("preferred_lft forever"), "{addr}");
    assert!(!addr.contains("deprecated"), "{addr}");
    let route = lab.clients[0].run(&["ip", "-6", "route", "get", "2001:db8:ffff::2"]);
    assert!(
        route.contains("dev sgc0") && route.contains("src 2001:db8:100::100"),
        "{route}"
    );
    let status = lab.client_status(0, cconf);
    assert!(status.contains("dns:        2001:db8:ffff::53"), "{status}");

    // Everything on the IPv4 link while pinging: ESP in UDP/4500 only.
    let mut dump = lab.broker.command("tcpdump");
    dump.args([
        "-i",
        "br0",
        "-n",
        "-l",
        "-c",
        "20",
        "(host 192.0.2.2 or ip6) and not arp and not udp port 500",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let dump = dump.spawn().expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lab.ping(0, 10),
        "ping through the tunnel:\n{}",
        client.log_text()
    );
    let out = dump.wait_with_output().expect("tcpdump output");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(lines.len() >= 20, "{lines:?}");
    for l in &lines {
        // ESP in UDP, or IKE (liveness checks) beside it on the same port.
        let esp = l.contains("UDP-encap: ESP");
        let ike = l.contains("NONESP-encap: isakmp");
        assert!(
            l.contains("192.0.2.2.4500") && (esp || ike),
            "not ESP in UDP/4500: {l}"
        );
    }
    let esp = lines
        .iter()
        .filter(|l| l.contains("UDP-encap: ESP"))
        .count();
    assert!(esp >= 15, "the pings travelled as ESP: {lines:#?}");

    // TCP both ways.
    lab.iperf(0, 2, false).expect("iperf3 client to inet");
    lab.iperf(0, 2, true).expect("iperf3 inet to client");
    let status = lab.broker_cli("status", bconf);
    assert!(
        status.contains("client@example.net") && status.contains("2001:db8:100::100"),
        "{status}"
    );
}

#[test]
fn broker_restart_leases_reservations_and_a_full_pool() {
    let lab = TunnelLab::new(3);
    // Two addresses: ::100 for whoever comes first, ::101 reserved.
    let bconf = lab.broker_config(
        "2001:db8:100::100/127",
        &[("client2@example.net", "2001:db8:100::101")],
        "",
    );
    let mut broker = lab.start_broker(&bconf);
    let c1 = lab.client_config("c1", "client", "ecdsa/client.pem", "ecdsa/client.key", "");
    let _client1 = lab.start_client(0, &c1);
    assert_eq!(
        lab.wait_up(0, &c1, UP).as_deref(),
        Some("2001:db8:100::100")
    );

    // A crash and a restart: the client notices (liveness checks) and comes
    // back by itself, with the same address; the lease survived.
    broker.kill();
    let broker_log = broker.log_text();
    let _broker2 = lab.start_broker(&bconf);
    let back = wait_for(Duration::from_secs(60), || {
        let s = lab.client_status(0, &c1);
        (s.contains("state:      up") && s.contains("reconnects: 1")).then_some(s)
    });
    let back = back
        .unwrap_or_else(|| panic!("no reconnect:\n{}\n{broker_log}", lab.client_status(0, &c1)));
    assert!(back.contains("address:    2001:db8:100::100"), "{back}");
    assert!(lab.ping(0, 3));
    let leases = lab.broker_cli("leases", &bconf);
    assert!(
        leases.contains("client@example.net") && leases.contains("2001:db8:100::100"),
        "{leases}"
    );

    // client2 has a reservation.
    let c2 = lab.client_config(
        "c2",
        "client2",
        "ecdsa/client2.pem",
        "ecdsa/client2.key",
        "",
    );
    let _client2 = lab.start_client(1, &c2);
    assert_eq!(
        lab.wait_up(1, &c2, UP).as_deref(),
        Some("2001:db8:100::101")
    );
    assert!(lab.ping(1, 3));

    // client3 finds the pool full and is refused; the others stay up.
    let c3 = lab.client_config(
        "c3",
        "client3",
        "ecdsa/client3.pem",
        "ecdsa/client3.key",
        "",
    );
    let _client3 = lab.start_client(2, &c3);
    let refused = wait_for(UP, || {
        let s = lab.client_status(2, &c3);
        s.contains("INTERNAL_ADDRESS_FAILURE").then_some(s)
    });
    assert!(refused.is_some(), "{}", lab.client_status(2, &c3));
    assert!(
        lab.ping(0, 3) && lab.ping(1, 3),
        "the others are undisturbed"
    );
    let leases = lab.broker_cli("leases", &bconf);
    assert!(!leases.contains("client3"), "{leases}");
}

#[test]
fn a_client_of_another_ca_is_refused_and_gets_no_lease() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let broker = lab.start_broker(&bconf);
    let conf = lab.client_config(
        "rogue",
        "client",
        "bad/ecdsa/rogue-client.pem",
        "bad/ecdsa/rogue-client.key",
        "",
    );
    let _client = lab.start_client(0, &conf);
    let refused = wait_for(UP, || {
        let s = lab.client_status(0, &conf);
        s.contains("AUTHENTICATION_FAILED").then_some(s)
    });
    assert!(
        refused.is_some(),
        "{}\n{}",
        lab.client_status(0, &conf),
        broker.log_text()
    );
    let leases = lab.broker_cli("leases", &bconf);
    assert_eq!(leases.lines().count(), 1, "only the header: {leases}");
}

#[test]
fn child_sa_rekeys_under_traffic_lose_no_tcp_connection() {
    let lab = TunnelLab::new(1);
    let pair = lab.start_pair("child_lifetime = 3", "child_lifetime = 4", UP);
    let broker = &pair.broker;
    let mbps = lab.iperf(0, 10, false).expect("iperf3 across rekeys");
    let installs = broker.log_text().matches("installed").count();
    assert!(
        installs >= 3,
        "at least two rekeys during the transfer:\n{}",
        broker.log_text()
    );
    // `status` counts the whole transfer, not just the current SA's share.
    let (bytes_in, _) = lab.broker_status_bytes(&pair.broker_config);
    let transferred = mbps * 1e6 / 8.0 * 10.0;
    assert!(
        bytes_in as f64 > 0.8 * transferred,
        "status shows {bytes_in} bytes in, iperf3 moved about {transferred}"
    );
}

#[test]
fn down_and_sigterm_remove_address_and_routes() {
    let lab = TunnelLab::new(1);
    let Pair {
        broker: _broker,
        mut client,
        client_config: cconf,
        ..
    } = lab.start_pair("", "", UP);
    let out = lab.clients[0].try_run(&[
        sixgate_tests::workspace_bin("sixgate-client")
            .to_str()
            .unwrap(),
        "down",
        "--config",
        cconf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = client.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{:?}\n{}",
        status,
        client.log_text()
    );
    let links = lab.clients[0].run(&["ip", "link"]);
    assert!(!links.contains("sgc0"), "{links}");
    let routes = lab.clients[0].run(&["ip", "-6", "route"]);
    assert!(!routes.contains("default"), "{routes}");

    // SIGTERM does the same.
    let mut client = lab.start_client(0, &cconf);
    lab.wait_up(0, &cconf, UP).expect("up again");
    assert!(client
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(!lab.clients[0].run(&["ip", "link"]).contains("sgc0"));
    assert!(!lab.clients[0]
        .run(&["ip", "-6", "addr"])
        .contains("2001:db8:100::"));
}

/// Kills a detached client by pid if a test fails before `down`.
struct Detached(Option<u32>);

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn up_daemon_detaches_and_down_stops_it() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let _broker = lab.start_broker(&bconf);
    let cconf = lab.client_config(
        "client",
        "client",
        "ecdsa/client.pem",
        "ecdsa/client.key",
        "",
    );
    let client_bin = sixgate_tests::workspace_bin("sixgate-client");
    let out = lab.clients[0].try_run(&[
        client_bin.to_str().unwrap(),
        "up",
        "--config",
        cconf.to_str().unwrap(),
        "--daemon",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = text
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse::<u32>().ok());
    let guard = Detached(pid);
    assert!(
        out.status.success() && guard.0.is_some(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lab.wait_up(0, &cconf, UP).as_deref(),
        Some("2001:db8:100::100")
    );
    assert!(lab.ping(0, 3));
    let out = lab.clients[0].try_run(&[
        client_bin.to_str().unwrap(),
        "down",
        "--config",
        cconf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = wait_for(Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{}", guard.0.unwrap())).exists()).then_some(())
    });
    assert!(gone.is_some(), "the daemon exited");
    assert!(!lab.clients[0].run(&["ip", "link"]).contains("sgc0"));
}

#[test]
fn a_bad_configuration_is_refused_at_start() {
    let lab = TunnelLab::new(0);
    let bconf = lab.broker_config("2001:db8:100::100/20", &[], "");
    let out = lab.broker.try_run(&[
        sixgate_tests::workspace_bin("sixgate-broker")
            .to_str()
            .unwrap(),
        "run",
        "--config",
        bconf.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broker.toml")
            && err.contains("pool.prefix")
            && err.contains("outside 64..=128"),
        "{err}"
    );
}
