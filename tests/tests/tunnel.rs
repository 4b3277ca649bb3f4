//! The main job end to end, as root in network namespaces: sixgate client
//! and broker daemons, an IPv4-only client network and an IPv6-only host
//! behind the broker. Needs the workspace binaries built (`cargo build
//! --workspace`), iproute2, ping, iperf3 and tcpdump.

use std::process::Stdio;
use std::time::Duration;

use sixgate_tests::{wait_for, Pair, TunnelLab, NET_ADMIN_AND_BIND};

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
    // The CLI prints what the control socket says.
    let status = lab.client_status_text(0, cconf);
    assert!(status.contains("dns:        2001:db8:ffff::53"), "{status}");
    assert_eq!(lab.client_status(cconf)["dns"][0], "2001:db8:ffff::53");

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
    let status = lab.broker_cli(&["status"], bconf);
    assert!(
        status.contains("client@example.net") && status.contains("2001:db8:100::100"),
        "{status}"
    );
    let rows = lab.broker_status();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["address"], "2001:db8:100::100");
    assert!(rows[0]["traffic"]["bytes_in"].as_u64() > Some(0));
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
    // A state directory an older version left world-readable.
    let state = lab.dir.path().join("broker-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("notes"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(state.join("notes"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut broker = lab.start_broker(&bconf);
    sixgate_tests::assert_private_tree(&state);
    let c1 = lab.ecdsa_client_config("c1", "client", "");
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
        let s = lab.client_status(&c1);
        (s["state"] == "up" && s["reconnects"] == 1).then_some(s)
    });
    let back =
        back.unwrap_or_else(|| panic!("no reconnect:\n{}\n{broker_log}", lab.client_status(&c1)));
    assert_eq!(back["address"], "2001:db8:100::100", "{back}");
    assert!(lab.ping(0, 3));
    let leases = lab.broker_leases();
    assert!(
        leases
            .iter()
            .any(|l| l["identity"] == "client@example.net" && l["address"] == "2001:db8:100::100"),
        "{leases:?}"
    );

    // client2 has a reservation.
    let c2 = lab.ecdsa_client_config("c2", "client2", "");
    let _client2 = lab.start_client(1, &c2);
    assert_eq!(
        lab.wait_up(1, &c2, UP).as_deref(),
        Some("2001:db8:100::101")
    );
    assert!(lab.ping(1, 3));

    // client3 finds the pool full and is refused; the others stay up.
    let c3 = lab.ecdsa_client_config("c3", "client3", "");
    let _client3 = lab.start_client(2, &c3);
    let refused = lab.wait_refused(&c3, "INTERNAL_ADDRESS_FAILURE", UP);
    assert!(refused.is_some(), "{}", lab.client_status(&c3));
    assert!(
        lab.ping(0, 3) && lab.ping(1, 3),
        "the others are undisturbed"
    );
    let leases = lab.broker_leases();
    assert!(
        leases
            .iter()
            .all(|l| l["identity"] != "client3@example.net"),
        "{leases:?}"
    );
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
    let client = lab.start_client(0, &conf);
    let refused = lab.wait_refused(&conf, "AUTHENTICATION_FAILED", UP);
    assert!(
        refused.is_some(),
        "{}\n{}",
        lab.client_status(&conf),
        broker.log_text()
    );
    // A refusal that retrying will not change: after three, the client
    // waits minutes, says so, and the broker sees no more attempts.
    let backed_off = wait_for(Duration::from_secs(30), || {
        let s = lab.client_status(&conf);
        (s["next_attempt_secs"].as_u64()? > 60).then_some(s)
    });
    assert!(backed_off.is_some(), "{}", lab.client_status(&conf));
    assert!(
        client.log_text().contains("refused 3 times in a row"),
        "{}",
        client.log_text()
    );
    let refusals = || broker.log_text().matches("refused 192.0.2.2").count();
    let before = refusals();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(refusals(), before, "{}", broker.log_text());
    let leases = lab.broker_leases();
    assert!(leases.is_empty(), "no lease: {leases:?}");
    // The CLI prints the same, as a table with only its header.
    assert_eq!(lab.broker_cli(&["leases"], &bconf).lines().count(), 1);
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

/// `sixgate-client down` for client 0, which must succeed.
fn client_down(lab: &TunnelLab, config: &std::path::Path) {
    let out = lab.clients[0].try_run(&[
        sixgate_tests::workspace_bin("sixgate-client")
            .to_str()
            .unwrap(),
        "down",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packets and octets a link has seen in one direction ("RX" or "TX"),
/// from `ip -s -j link`.
fn link_counts(ns: &sixgate_tests::Netns, link: &str, direction: &str) -> (u64, u64) {
    let out = ns.run(&["ip", "-s", "-j", "link", "show", link]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let side = &json[0]["stats64"][if direction == "RX" { "rx" } else { "tx" }];
    (
        side["packets"].as_u64().unwrap_or(0),
        side["bytes"].as_u64().unwrap_or(0),
    )
}

/// The offload paths against the plain path, byte for byte: 24 MiB of
/// pseudo-random octets each way through the tunnel arrive as they were
/// sent. Client to inet, the client's TCP hands its TUN device
/// super-packets (more octets per packet than the MTU) that are cut into
/// ESP segments and sent with UDP GSO; the broker receives them with UDP
/// GRO and writes joined super-packets to its TUN device. The other way
/// the same happens with the roles swapped.
#[test]
fn large_transfers_arrive_byte_for_byte_through_the_offloads() {
    let lab = TunnelLab::new(1);
    let _pair = lab.start_pair("", "", UP);
    let dir = lab.dir.path();
    let sent = dir.join("sent");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..24 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    std::fs::write(&sent, &data).unwrap();
    let transfer = sixgate_tests::workspace_bin("tcp-transfer");
    let transfer = transfer.to_str().unwrap();
    for to_client in [false, true] {
        let received = dir.join(format!("received-{to_client}"));
        // The inet host listens, and sends (to the client) or receives.
        let (server_does, client_does) = match to_client {
            true => (("send", &sent), ("receive", &received)),
            false => (("receive", &received), ("send", &sent)),
        };
        // What the sending side's TCP hands its TUN device, and what the
        // receiving side's data plane writes to its own.
        let (sender, receiver) = match to_client {
            true => ((&lab.broker, "sgb0"), (&lab.clients[0], "sgc0")),
            false => ((&lab.clients[0], "sgc0"), (&lab.broker, "sgb0")),
        };
        let counts = || {
            (
                link_counts(sender.0, sender.1, "TX"),
                link_counts(receiver.0, receiver.1, "RX"),
            )
        };
        let before = counts();
        let mut server = lab.inet.command(transfer);
        server
            .args(["listen", "[2001:db8:ffff::2]:5301", server_does.0])
            .arg(server_does.1);
        let mut server = server.spawn().unwrap();
        assert!(wait_for(UP, || {
            let ss = lab.inet.try_run(&["ss", "-Hltn", "sport = :5301"]);
            (!ss.stdout.is_empty()).then_some(())
        })
        .is_some());
        let out = lab.clients[0].try_run(&[
            transfer,
            "connect",
            "[2001:db8:ffff::2]:5301",
            client_does.0,
            client_does.1.to_str().unwrap(),
        ]);
        assert!(server.wait().unwrap().success());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read(&received).unwrap();
        assert!(
            got.len() == data.len() && got == data,
            "to the client {to_client}: {} of {} octets, first difference at {:?}",
            got.len(),
            data.len(),
            got.iter().zip(&data).position(|(a, b)| a != b)
        );
        let after = counts();
        let per_packet = |(p0, b0): (u64, u64), (p1, b1): (u64, u64)| (b1 - b0) / (p1 - p0).max(1);
        let mtu = 1400;
        assert!(
            per_packet(before.0, after.0) > mtu,
            "to the client {to_client}: the sender's TCP handed its TUN device super-packets: {:?} -> {:?}",
            before.0,
            after.0
        );
        assert!(
            per_packet(before.1, after.1) > mtu,
            "to the client {to_client}: the receiver wrote joined packets to its TUN device: {:?} -> {:?}",
            before.1,
            after.1
        );
    }
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
    client_down(&lab, &cconf);
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
    let cconf = lab.ecdsa_client_config("client", "client", "");
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
    client_down(&lab, &cconf);
    let gone = wait_for(Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{}", guard.0.unwrap())).exists()).then_some(())
    });
    assert!(gone.is_some(), "the daemon exited");
    assert!(!lab.clients[0].run(&["ip", "link"]).contains("sgc0"));
}

#[test]
fn a_bad_configuration_is_refused_at_start() {
    let lab = TunnelLab::new(0);
    let bconf = lab.broker_config("2001::/20", &[], "");
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

/// The broker's SPOOFED count for one identity, from the control socket.
fn spoofed_drops(lab: &TunnelLab, identity: &str) -> u64 {
    let sock = lab.dir.path().join("broker-state/broker.sock");
    let status = sixgate_tests::control_request(&sock, &serde_json::json!("Status"));
    status["Status"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["identity"] == identity))
        .and_then(|r| r["traffic"]["dropped_spoofed"].as_u64())
        .unwrap_or_else(|| panic!("no {identity} in {status}"))
}

/// An authenticated client may still lie about its traffic: a source
/// address other than its lease, or IPv4 inside ESP. The broker opens such
/// packets, then drops and counts them; nothing reaches the inet host or
/// even the broker's TUN device, while the client's own traffic flows.
#[test]
fn spoofed_sources_and_ipv4_inside_esp_reach_nothing() {
    let lab = TunnelLab::new(2);
    let pair = lab.start_pair("", "", UP);
    let spoofed_at_inet = lab
        .inet
        .packet_counter("prerouting", "ip6 saddr 2001:db8:dead::/48");
    let v4_from_tunnel = lab
        .broker
        .packet_counter("prerouting", "iifname \"sgb0\" meta nfproto ipv4");

    // The sixgate client, with an address of its own choosing on its TUN.
    lab.clients[0].run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:dead::1/128",
        "dev",
        "sgc0",
        "nodad",
    ]);
    let spoof = lab.clients[0].try_run(&[
        "ping",
        "-6",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "2001:db8:dead::1",
        "2001:db8:ffff::2",
    ]);
    assert!(!spoof.status.success(), "a spoofed ping got an answer");
    assert!(
        lab.ping(0, 3),
        "the client's own traffic still flows:\n{}",
        pair.client.log_text()
    );
    assert_eq!(
        spoofed_at_inet(),
        0,
        "spoofed packets reached the inet host"
    );
    let drops = wait_for(Duration::from_secs(5), || {
        let n = spoofed_drops(&lab, "client@example.net");
        (n >= 5).then_some(n)
    });
    assert!(
        drops.is_some(),
        "the broker counted {} spoofed packets",
        spoofed_drops(&lab, "client@example.net")
    );

    // A peer of its own (client2), sealing whatever it likes into ESP:
    // an ICMPv4 echo to 192.0.2.1 inside ESP (next header 4), an IPv6
    // echo with a version-4 first nibble, and a spoofed IPv6 one.
    let (mut peer, leased) = sixgate_tests::spoofing_peer(&lab, 1, "192.0.2.3", "client2");
    let leased = leased.as_str();
    let v6 = |src: &str| sixgate_tests::icmpv6_echo_hex(src, "2001:db8:ffff::2");
    peer.send(&format!(
        "send-esp 4 {}",
        sixgate_tests::icmpv4_echo_hex("192.0.2.100", "192.0.2.1")
    ));
    let mut wrong_version = v6(leased);
    wrong_version.replace_range(0..1, "4");
    peer.send(&format!("send-esp 41 {wrong_version}"));
    peer.send(&format!("send-esp 41 {}", v6("2001:db8:dead::2")));
    peer.wait_nth("SENT_ESP", 3, Duration::from_secs(5))
        .expect("sent");
    let drops = wait_for(Duration::from_secs(5), || {
        let n = spoofed_drops(&lab, "client2@example.net");
        (n == 3).then_some(n)
    });
    assert_eq!(drops, Some(3), "all three dropped and counted");
    assert_eq!(
        v4_from_tunnel(),
        0,
        "IPv4 came out of the broker's TUN device"
    );
    assert_eq!(spoofed_at_inet(), 0);
    // Its own address still works for it.
    peer.send(&format!("send-esp 41 {}", v6(leased)));
    let arrived = lab.inet.packet_counter(
        "prerouting",
        &format!("ip6 saddr {leased} icmpv6 type echo-request"),
    );
    peer.send(&format!("send-esp 41 {}", v6(leased)));
    assert!(
        wait_for(Duration::from_secs(5), || (arrived() >= 1).then_some(())).is_some(),
        "the peer's own packet did not arrive"
    );
}

/// Revocation as an operator uses it: a CRL from `[ike] crl` refuses the
/// certificate it lists; `client revoke` ends a connected client's tunnel
/// within 2 s and keeps it out; `client unrevoke` lets it back.
#[test]
fn revocation_by_crl_and_by_the_operators_list() {
    let lab = TunnelLab::new(2);
    let crl = sixgate_tests::certs_dir().join("policy/crl.der");
    let pair = lab.start_pair(&format!("crl = [{:?}]", crl), "", UP);

    // The CRL: the revoked certificate names client@example.net too, and
    // is valid in every other way.
    let revoked = lab.client_config(
        "revoked",
        "client",
        "policy/revoked-client.pem",
        "policy/revoked-client.key",
        "",
    );
    let _revoked = lab.start_client(1, &revoked);
    assert!(
        lab.wait_refused(&revoked, "AUTHENTICATION_FAILED", UP)
            .is_some(),
        "{}",
        pair.broker.log_text()
    );
    // The log a user reads: who, from where, why.
    let log = pair.broker.log_text();
    assert!(
        log.lines().any(|l| l.contains("192.0.2.3")
            && l.contains("client@example.net")
            && l.contains("revoked by its CA's CRL")),
        "{log}"
    );
    assert!(lab.ping(0, 2), "the good client is untouched");

    // The list, in another spelling of the identity.
    let out = lab.broker_cli(
        &["client", "revoke", "client@EXAMPLE.net"],
        &pair.broker_config,
    );
    assert!(out.contains("revoked"), "{out}");
    let gone = wait_for(Duration::from_secs(2), || {
        lab.broker_status().is_empty().then_some(())
    });
    assert!(gone.is_some(), "still connected: {:?}", lab.broker_status());
    assert!(!lab.ping(0, 1), "no traffic after the revocation");
    // It tries again, and is refused.
    assert!(
        lab.wait_refused(&pair.client_config, "AUTHENTICATION_FAILED", UP)
            .is_some(),
        "{}",
        pair.broker.log_text()
    );
    let leases = lab.broker_leases();
    assert!(
        leases
            .iter()
            .all(|l| l["identity"] != "client@example.net" || l["active"] == false),
        "its lease is released: {leases:?}"
    );
    let listed = lab.broker_cli(&["client", "revoked"], &pair.broker_config);
    assert!(listed.contains("identity   client@example.net"), "{listed}");

    let out = lab.broker_cli(
        &["client", "unrevoke", "client@example.net"],
        &pair.broker_config,
    );
    assert!(out.contains("no longer revoked"), "{out}");
    // The daemon backs off between attempts; a fresh start shows at once
    // that the identity is admitted again, with its old address.
    drop(pair.client);
    let _client = lab.start_client(0, &pair.client_config);
    let address = lab.wait_up(0, &pair.client_config, UP);
    assert_eq!(address.as_deref(), Some(pair.address.as_str()));
    assert!(lab.ping(0, 2));
}

/// Whether a TCP connection from client `i` to `addr`:`port` opens within
/// 3 s.
fn tcp_opens(lab: &TunnelLab, i: usize, addr: &str, port: u16) -> bool {
    lab.clients[i]
        .try_run(&[
            "timeout",
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}"),
        ])
        .status
        .success()
}

/// The broker's firewall for road warriors: ICMPv6 and the listed
/// `broker_services` on the broker itself, nothing else there; other
/// clients only with `client_to_client`.
#[test]
fn client_isolation_and_broker_services_as_configured() {
    let lab = TunnelLab::new(2);
    let base = lab.broker_config("2001:db8:100::100/120", &[], "");
    let text = std::fs::read_to_string(&base).unwrap();
    let with = |pool_lines: &str| {
        std::fs::write(
            &base,
            text.replace("[pool]\n", &format!("[pool]\n{pool_lines}\n")),
        )
        .unwrap();
        base.clone()
    };
    let mut servers = Vec::new();
    for port in ["5201", "5202"] {
        let mut s = lab.broker.command("iperf3");
        s.args(["-s", "-p", port])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(s.spawn().unwrap());
    }
    let broker = lab.start_broker(&with("broker_services = [\"tcp/5201\"]"));
    let configs = [
        lab.ecdsa_client_config("c0", "client", ""),
        lab.ecdsa_client_config("c1", "client2", ""),
    ];
    let _clients: Vec<_> = (0..2).map(|i| lab.start_client(i, &configs[i])).collect();
    let addrs: Vec<String> = (0..2)
        .map(|i| {
            lab.wait_up(i, &configs[i], UP)
                .unwrap_or_else(|| panic!("client {i} not up:\n{}", broker.log_text()))
        })
        .collect();

    let pinged = wait_for(Duration::from_secs(10), || lab.ping(0, 1).then_some(()));

    assert!(
        pinged.is_some(),
        "the internet, yes\n{}\n{:?}\n{}",
        lab.broker.run(&["nft", "list", "ruleset"]),
        lab.broker_status(),
        broker.log_text()
    );
    let ping = |i: usize, to: &str| {
        lab.clients[i]
            .try_run(&["ping", "-6", "-c", "1", "-W", "2", to])
            .status
            .success()
    };
    assert!(ping(0, "2001:db8:ffff::1"), "ICMPv6 to the broker");
    assert!(
        tcp_opens(&lab, 0, "2001:db8:ffff::1", 5201),
        "a listed service"
    );
    assert!(
        !tcp_opens(&lab, 0, "2001:db8:ffff::1", 5202),
        "an unlisted service on the broker"
    );
    assert!(!ping(0, &addrs[1]), "another client, not by default");
    assert!(!ping(1, &addrs[0]), "nor the other way");

    drop(broker);
    let broker = lab.start_broker(&with("client_to_client = true"));
    let back = wait_for(UP, || {
        (ping(0, &addrs[1]) && ping(1, &addrs[0])).then_some(())
    });
    assert!(
        back.is_some(),
        "clients reach each other when allowed\n{}",
        broker.log_text()
    );
    assert!(
        !tcp_opens(&lab, 0, "2001:db8:ffff::1", 5201),
        "no services unless listed"
    );
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

#[test]
fn the_daemons_give_up_root_and_keep_working() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let text = std::fs::read_to_string(&bconf).unwrap();
    std::fs::write(&bconf, format!("{text}[process]\nuser = \"nobody\"\n")).unwrap();
    // The broker's own CA is in its state directory, but its key stays
    // root's: the daemon never signs.
    let made = lab.broker_cli(&["ca", "init"], &bconf);
    assert!(made.contains("made a CA"), "{made}");
    let mut broker = lab.start_broker(&bconf);
    let ca = lab.dir.path().join("broker-state/ca");
    for path in [ca.clone(), ca.join("ca.key")] {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().uid(),
            0,
            "{}",
            path.display()
        );
    }
    let c = lab.ecdsa_client_config("c", "client", "");
    let client = lab.start_client(0, &c);
    let address = lab.wait_up(0, &c, UP);
    assert_eq!(
        address.as_deref(),
        Some("2001:db8:100::100"),
        "{}\n{}",
        client.log_text(),
        broker.log_text()
    );
    assert!(lab.ping(0, 3));
    let nobody = 65534;
    assert_eq!(
        sixgate_tests::credentials(broker.pid()),
        (nobody, NET_ADMIN_AND_BIND, NET_ADMIN_AND_BIND),
        "the broker: nobody, with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only"
    );
    assert_eq!(
        sixgate_tests::credentials(client.pid()),
        (0, NET_ADMIN_AND_BIND, NET_ADMIN_AND_BIND),
        "the client: root, with the same two capabilities"
    );
    let state = lab.dir.path().join("broker-state");
    sixgate_tests::assert_private_tree(&state);

    // A crash and a restart as nobody: the lease nobody wrote is read back.
    broker.kill();
    let broker = lab.start_broker(&bconf);
    let back = wait_for(Duration::from_secs(60), || {
        let s = lab.client_status(&c);
        (s["state"] == "up" && s["reconnects"] == 1).then_some(s)
    });
    let back = back.unwrap_or_else(|| panic!("no reconnect:\n{}", broker.log_text()));
    assert_eq!(back["address"], "2001:db8:100::100", "{back}");
    assert!(lab.ping(0, 3));
    // nftables answers nobody with CAP_NET_ADMIN: the counters are there.
    let stats = lab.broker_cli(&["stats"], &bconf);
    let firewall = stats.lines().find(|l| l.starts_with("firewall drops"));
    assert!(
        firewall.is_some_and(|l| l.trim_end().ends_with(char::is_numeric)),
        "{stats}"
    );
}

/// /etc/netns/NAME/, which `ip netns exec NAME` mounts over /etc; removed
/// with the guard.
struct NetnsEtc(std::path::PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_broker_by_host_name_and_port() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let broker = lab.start_broker(&bconf);
    let etc = NetnsEtc(std::path::PathBuf::from("/etc/netns").join(&lab.clients[0].name));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("hosts"), "192.0.2.1 vpn.example.test\n").unwrap();
    let c = lab.ecdsa_client_config("named", "client", "");
    let text = std::fs::read_to_string(&c).unwrap();
    let named = text.replace(
        "broker = \"192.0.2.1\"",
        "broker = \"vpn.example.test:500\"",
    );
    assert_ne!(named, text);
    std::fs::write(&c, named).unwrap();
    let client = lab.start_client(0, &c);
    let up = lab.wait_up(0, &c, UP);
    assert!(up.is_some(), "{}\n{}", client.log_text(), broker.log_text());
    assert!(lab.ping(0, 3));
    assert!(
        client
            .log_text()
            .contains("vpn.example.test:500 (192.0.2.1:500)"),
        "{}",
        client.log_text()
    );

    // The CLIs as a user pipes them: into a reader that is gone, quietly;
    // with --json, what the control socket says.
    for (bin, config) in [("sixgate-client", &c), ("sixgate-broker", &bconf)] {
        let bin = sixgate_tests::workspace_bin(bin);
        let line = format!(
            "{} status --config {} | true",
            bin.display(),
            config.display()
        );
        let out = lab.clients[0].try_run(&["sh", "-c", &line]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{line}: {stderr}");
    }
    let client_bin = sixgate_tests::workspace_bin("sixgate-client");
    let out = lab.clients[0].try_run(&[
        client_bin.to_str().unwrap(),
        "status",
        "--json",
        "--config",
        c.to_str().unwrap(),
    ]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "up", "{status}");
    let rows: serde_json::Value =
        serde_json::from_str(&lab.broker_cli(&["status", "--json"], &bconf)).unwrap();
    assert_eq!(rows[0]["identity"], "client@example.net", "{rows}");
}

/// Two devices with one certificate under `unique = MODE`: the first is
/// up when the second starts; after the outcome settles, both are watched
/// for two minutes. Returns each one's final status.
fn second_device(mode: &str) -> (serde_json::Value, serde_json::Value) {
    let lab = TunnelLab::new(2);
    let limits = format!("[limits]\nunique = \"{mode}\"");
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], &limits);
    let broker = lab.start_broker(&bconf);
    let first = lab.ecdsa_client_config("first", "client", "");
    let _first = lab.start_client(0, &first);
    assert!(
        lab.wait_up(0, &first, UP).is_some(),
        "{}",
        broker.log_text()
    );
    let second = lab.ecdsa_client_config("second", "client", "");
    let _second = lab.start_client(1, &second);
    // The outcome: who is up once the second has had its say.
    let settled = wait_for(UP, || {
        let (a, b) = (lab.client_status(&first), lab.client_status(&second));
        let settled = match mode {
            "replace" => b["state"] == "up" && a["state"] != "up",
            "keep" => a["state"] == "up" && b["last_error"].is_string(),
            _ => a["state"] == "up" && b["state"] == "up",
        };
        settled.then_some(())
    });
    assert!(
        settled.is_some(),
        "{mode}: {} / {}\n{}",
        lab.client_status(&first),
        lab.client_status(&second),
        broker.log_text()
    );
    // No flapping: whoever is up stays up, on the same IKE SA.
    let up_one = if mode == "replace" { &second } else { &first };
    let watch_until = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < watch_until {
        let s = lab.client_status(up_one);
        assert_eq!(
            (&s["state"], &s["reconnects"]),
            (&"up".into(), &0.into()),
            "{mode}: {s}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    if mode != "never" {
        assert_eq!(lab.broker_status().len(), 1, "{mode}: one IKE SA");
    }
    (lab.client_status(&first), lab.client_status(&second))
}

#[test]
fn one_identity_on_two_devices_under_each_unique_mode_without_flapping() {
    let modes = ["replace", "keep", "never"];
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = modes
            .iter()
            .map(|m| s.spawn(move || second_device(m)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a mode failed"))
            .collect()
    });
    // replace: the first was told it was replaced and waits minutes
    // before it tries again; the second has the address.
    let (first, second) = &outcomes[0];
    assert!(
        first["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("replaced")),
        "{first}"
    );
    assert!(first["next_attempt_secs"].as_u64() > Some(60), "{first}");
    assert_eq!(first["reconnects"], 1);
    assert_eq!(second["address"], "2001:db8:100::100");
    // keep: the second is refused, and after a few refusals it backs off
    // to minutes instead of trying every few seconds.
    let (first, second) = &outcomes[1];
    assert_eq!(first["state"], "up");
    assert!(second["state"] != "up", "{second}");
    assert!(second["reconnects"].as_u64() <= Some(3), "{second}");
    assert!(second["next_attempt_secs"].as_u64() > Some(60), "{second}");
    // never: both stay, with the identity's one address.
    let (first, second) = &outcomes[2];
    assert_eq!(
        (&first["state"], &second["state"]),
        (&"up".into(), &"up".into())
    );
    assert_eq!(first["reconnects"], 0);
    assert_eq!(second["reconnects"], 0);
}

#[test]
fn after_a_broker_crash_and_restart_clients_with_default_timers_are_back_within_30_s() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let mut broker = lab.start_broker(&bconf);
    // The client's defaults: DPD after 10 s of quiet, dead after 30 s.
    let c = lab.ecdsa_client_config("defaults", "client", "");
    let text = std::fs::read_to_string(&c).unwrap();
    let defaults: String = text
        .lines()
        .filter(|l| !l.starts_with("dpd_interval") && !l.starts_with("retransmit_"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(defaults, text);
    std::fs::write(&c, defaults).unwrap();
    let client = lab.start_client(0, &c);
    assert!(lab.wait_up(0, &c, UP).is_some(), "{}", client.log_text());
    broker.kill();
    let _broker = lab.start_broker(&bconf);
    // The restarted broker answers the next liveness check with
    // INVALID_IKE_SPI, and the client reconnects at once.
    let back = wait_for(Duration::from_secs(30), || {
        let s = lab.client_status(&c);
        (s["state"] == "up" && s["reconnects"] == 1).then_some(s)
    });
    assert!(
        back.is_some(),
        "{}\n{}",
        lab.client_status(&c),
        client.log_text()
    );
    assert!(lab.ping(0, 3));
}

/// `set_dns = true` on a laptop without systemd-resolved: the broker's DNS server is in place
/// while up, `down` puts the original back byte for byte, and after a
/// kill -9 the next start puts it back before anything else. The client's
/// /etc/resolv.conf is the namespace's own (`ip netns exec` mounts
/// /etc/netns/NAME/resolv.conf over it), so it is rewritten in place.
#[test]
fn resolv_conf_comes_back_byte_for_byte_on_down_and_after_a_crash() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let mut broker = lab.start_broker(&bconf);
    let etc = NetnsEtc(std::path::PathBuf::from("/etc/netns").join(&lab.clients[0].name));
    std::fs::create_dir_all(&etc.0).unwrap();
    let resolv = etc.0.join("resolv.conf");
    let original = b"# from the home router\nnameserver 192.0.2.53\nsearch lan\noptions edns0 \n";
    std::fs::write(&resolv, original).unwrap();
    let c = lab.ecdsa_client_config("dns", "client", "set_dns = true");
    let ours = || {
        std::fs::read_to_string(&resolv)
            .unwrap()
            .contains("nameserver 2001:db8:ffff::53")
    };

    let mut client = lab.start_client(0, &c);
    assert!(lab.wait_up(0, &c, UP).is_some(), "{}", client.log_text());
    assert!(
        wait_for(UP, || ours().then_some(())).is_some(),
        "{}",
        client.log_text()
    );
    client_down(&lab, &c);
    assert!(client.terminate(UP).is_some());
    assert_eq!(std::fs::read(&resolv).unwrap(), original, "after down");

    // kill -9 while up: ours stays behind, until the next start.
    let mut client = lab.start_client(0, &c);
    assert!(lab.wait_up(0, &c, UP).is_some(), "{}", client.log_text());
    assert!(wait_for(UP, || ours().then_some(())).is_some());
    client.kill();
    assert!(ours(), "a killed client cannot clean up");
    broker.kill();
    let client = lab.start_client(0, &c);
    let restored = wait_for(UP, || {
        (std::fs::read(&resolv).unwrap() == original).then_some(())
    });
    assert!(
        restored.is_some(),
        "not restored at start:\n{}",
        client.log_text()
    );
    assert!(client
        .log_text()
        .contains("restored /etc/resolv.conf as it was before a crash"));
}

/// `set_dns = true` on a laptop with systemd-resolved: the broker's DNS
/// server becomes the tunnel device's, with `~.` as its routing domain, so
/// a name is resolved through the tunnel and not by the DNS server the
/// home network gave (no packet goes to it); /etc/resolv.conf (resolved's)
/// is left alone; `down` takes the settings away, and so does a kill -9
/// (the device goes with the process).
#[test]
fn set_dns_with_systemd_resolved_routes_every_name_into_the_tunnel() {
    use sixgate_tests::{workspace_bin, Daemon, Resolved};
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let _broker = lab.start_broker(&bconf);
    // The broker's DNS server, on the inet host: it alone knows the name.
    let inet_link = lab.inet.run(&["ip", "-o", "link", "show"]);
    let inet_link = inet_link
        .lines()
        .find_map(|l| l.split(": ").nth(1).filter(|n| n.starts_with("sgia")))
        .and_then(|n| n.split('@').next())
        .expect("inet link")
        .to_owned();
    lab.inet.run(&[
        "ip",
        "addr",
        "add",
        "2001:db8:ffff::53/64",
        "dev",
        &inet_link,
        "nodad",
    ]);
    let _dns = Daemon::spawn(
        &lab.inet,
        std::path::Path::new("/usr/sbin/dnsmasq"),
        &[
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=2001:db8:ffff::53",
            "--address=/www.example.test/2001:db8:ffff::80",
            "--log-queries",
        ],
        lab.dir.path().join("dnsmasq.log"),
    );

    let ns = &lab.clients[0];
    let resolved = Resolved::start(ns);
    // The home network's DNS server, for the client's uplink.
    let uplink = ns.run(&["ip", "-o", "-4", "addr", "show"]);
    let uplink = uplink
        .lines()
        .find(|l| l.contains("192.0.2."))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("uplink")
        .to_owned();
    resolved.resolvectl(&["dns", &uplink, "192.0.2.53"]);
    let to_home_dns = ns.packet_counter("output", "ip daddr 192.0.2.53 udp dport 53");
    let etc_resolv = || {
        let out = resolved
            .command("cat")
            .arg("/etc/resolv.conf")
            .output()
            .unwrap();
        out.stdout
    };
    let resolv_before = etc_resolv();

    let c = lab.ecdsa_client_config("dns", "client", "set_dns = true");
    let mut up = resolved.command(workspace_bin("sixgate-client").to_str().unwrap());
    up.args(["up", "--config", c.to_str().unwrap()]);
    let mut client = Daemon::spawn_command(up, lab.dir.path().join("client-resolved.log"));
    assert!(lab.wait_up(0, &c, UP).is_some(), "{}", client.log_text());
    let on_tunnel = || {
        resolved
            .resolvectl(&["dns", "sgc0"])
            .contains("2001:db8:ffff::53")
    };
    assert!(
        wait_for(UP, || on_tunnel().then_some(())).is_some(),
        "{}\n{}",
        client.log_text(),
        resolved.log()
    );
    assert!(client
        .log_text()
        .contains("DNS servers go to systemd-resolved, on sgc0"));
    assert!(resolved.resolvectl(&["domain", "sgc0"]).contains("~."));
    let answer = resolved.resolvectl(&["query", "--cache=no", "www.example.test"]);
    assert!(answer.contains("2001:db8:ffff::80"), "{answer}");
    assert_eq!(
        to_home_dns(),
        0,
        "a query went to the home network's server"
    );
    assert_eq!(etc_resolv(), resolv_before, "resolv.conf is resolved's");

    client_down(&lab, &c);
    assert!(client.terminate(UP).is_some());
    assert!(
        !resolved.resolvectl(&["dns"]).contains("2001:db8:ffff::53"),
        "after down"
    );

    let mut up = resolved.command(workspace_bin("sixgate-client").to_str().unwrap());
    up.args(["up", "--config", c.to_str().unwrap()]);
    let mut client = Daemon::spawn_command(up, lab.dir.path().join("client-resolved2.log"));
    assert!(lab.wait_up(0, &c, UP).is_some(), "{}", client.log_text());
    assert!(wait_for(UP, || on_tunnel().then_some(())).is_some());
    client.kill();
    let gone = wait_for(UP, || {
        (!resolved.resolvectl(&["dns"]).contains("2001:db8:ffff::53")).then_some(())
    });
    assert!(gone.is_some(), "after kill -9");
    assert_eq!(etc_resolv(), resolv_before);
}

/// A VPS whose provider puts a /64 on the link instead of routing it: the
/// pool is inside the inet link's on-link /64, and the inet host has no
/// route for it but that link. With `proxy_ndp` the broker answers
/// neighbour solicitations for each connected client's address there, so
/// the client is reachable from inet, and after it disconnects (and the
/// broker stops) no longer.
#[test]
fn proxy_ndp_serves_a_pool_inside_an_on_link_prefix() {
    let lab = TunnelLab::new(1);
    let addrs = lab.broker.run(&[
        "ip",
        "-o",
        "-6",
        "addr",
        "show",
        "to",
        "2001:db8:ffff::1/128",
    ]);
    let link = addrs
        .split_whitespace()
        .nth(1)
        .expect("the inet link")
        .to_string();
    let bconf = lab.broker_config("2001:db8:ffff::1:0/112", &[], "");
    let text = std::fs::read_to_string(&bconf).unwrap();
    let text = text.replace(
        "[pool.static]",
        &format!("proxy_ndp = \"{link}\"\n[pool.static]"),
    );
    std::fs::write(&bconf, text).unwrap();
    let mut broker = lab.start_broker(&bconf);
    let c = lab.ecdsa_client_config("ndp", "client", "");
    let client = lab.start_client(0, &c);
    let address = lab
        .wait_up(0, &c, UP)
        .unwrap_or_else(|| panic!("{}", broker.log_text()));
    assert_eq!(address, "2001:db8:ffff::1:0");
    let proxies = || lab.broker.run(&["ip", "-6", "neigh", "show", "proxy"]);
    assert!(
        proxies().contains(&format!("{address} dev {link}")),
        "{}",
        proxies()
    );
    let route = lab.inet.run(&["ip", "-6", "route", "get", &address]);
    assert!(
        !route.contains("via"),
        "inet reaches the pool on-link only: {route}"
    );
    let ping = |count: &str| {
        lab.inet
            .try_run(&["ping", "-6", "-c", count, "-i", "0.2", "-W", "1", &address])
            .status
            .success()
    };
    assert!(
        wait_for(UP, || ping("2").then_some(())).is_some(),
        "{}\n{}",
        client.log_text(),
        broker.log_text()
    );
    let client_bin = sixgate_tests::workspace_bin("sixgate-client");
    let down = lab.clients[0].try_run(&[
        client_bin.to_str().unwrap(),
        "down",
        "--config",
        c.to_str().unwrap(),
    ]);
    assert!(down.status.success());
    let gone = wait_for(UP, || (!proxies().contains(&address)).then_some(()));
    assert!(gone.is_some(), "{}", proxies());
    assert!(!ping("3"), "reachable after the client left");
    assert!(broker.terminate(UP).is_some());
    assert!(!proxies().contains("proxy"), "{}", proxies());
}
