//! The kernel XFRM data plane end to end. This machine's kernel has no
//! ESP, so the tests marked `#[ignore]` run inside Debian's kernel under
//! virtme-ng, started by `xfrm_tests_pass_in_a_vm` (which fails, not skips,
//! when the VM cannot start); on the host itself only the start-up refusal
//! is checked. Root, namespaces, the workspace binaries, iperf3.

use std::collections::BTreeSet;
use std::time::Duration;

use sixgate_tests::{
    run_in_vm, wait_for, workspace_bin, HomeRouter, Netns, Pair, StrongSwan, SwanConnection,
    SwanMode, TunnelLab,
};

/// Emulated, the VM is slow: generous limits, and polling, not sleeping.
const UP: Duration = Duration::from_secs(90);

/// The tests the VM runs; `xfrm_tests_pass_in_a_vm` checks all passed.
const IN_VM: usize = 7;

fn xfrm_lab(dataplane: &str) -> TunnelLab {
    let mut lab = TunnelLab::new(1);
    lab.dataplane = format!("backend = \"xfrm\"\n{dataplane}");
    lab
}

/// The SPIs of the SAs in a namespace's SAD (not the kernel's larval
/// SPI-0 entries of pending acquires).
fn spis(ns: &Netns) -> BTreeSet<String> {
    ns.run(&["ip", "xfrm", "state"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "spi" && w[1] != "0x00000000")
        .map(|w| w[1].to_string())
        .collect()
}

/// The byte counters of every SA, from `ip -s xfrm state`.
fn sa_byte_counts(ns: &Netns) -> Vec<u64> {
    ns.run(&["ip", "-s", "xfrm", "state"])
        .split_whitespace()
        .filter_map(|w| w.strip_suffix("(bytes),")?.parse().ok())
        .collect()
}

fn policy_count(ns: &Netns) -> usize {
    ns.run(&["ip", "xfrm", "policy"])
        .lines()
        .filter(|l| l.starts_with("src "))
        .count()
}

fn ping_works(lab: &TunnelLab) -> bool {
    wait_for(UP, || lab.ping(0, 2).then_some(())).is_some()
}

fn tcp_both_ways(lab: &TunnelLab) {
    for reverse in [false, true] {
        lab.iperf(0, 2, reverse)
            .unwrap_or_else(|e| panic!("iperf3 reverse={reverse}: {e}"));
    }
}

#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_route_based_with_udp_encapsulation_counters_and_a_broker_crash() {
    let lab = xfrm_lab("force_udp_encapsulation = true");
    // (`client: _client` keeps the client daemon alive to the end.)
    let Pair {
        mut broker,
        client: _client,
        broker_config: bconf,
        address: addr,
        ..
    } = lab.start_pair("", "", UP);
    assert!(broker.log_text().contains("kernel XFRM on interface sgb0"));
    // The kernel does the ESP: states with UDP encapsulation on our
    // XFRM interface, the address on the client's XFRM interface.
    let states = lab.broker.run(&["ip", "xfrm", "state"]);
    assert!(
        states.contains("encap type espinudp sport 4500 dport 4500"),
        "{states}"
    );
    assert!(states.contains("if_id 0x5a6"), "{states}");
    let caddr = lab.clients[0].run(&["ip", "-6", "addr", "show", "dev", "sgc0"]);
    assert!(
        caddr.contains(&addr) && caddr.contains("preferred_lft forever"),
        "{caddr}"
    );
    assert!(ping_works(&lab), "{}", broker.log_text());
    tcp_both_ways(&lab);

    // `status` shows the kernel's counters: megabytes both ways.
    let (bytes_in, bytes_out) = lab.broker_status_bytes(&bconf);
    assert!(
        bytes_in > 1_000_000 && bytes_out > 1_000_000,
        "{bytes_in} {bytes_out}"
    );
    // They are the kernel's own: `ip -s xfrm state` shows the same
    // numbers for the two SAs (no ESP moves once iperf3 is done).
    let kernel = sa_byte_counts(&lab.broker);
    assert!(
        kernel.contains(&bytes_in) && kernel.contains(&bytes_out),
        "status {bytes_in}/{bytes_out}, kernel {kernel:?}"
    );

    // A crash leaves the kernel's state behind; the next start removes it
    // all, and the client comes back on fresh SAs.
    let before = spis(&lab.broker);
    assert_eq!(before.len(), 2, "{before:?}");
    broker.kill();
    assert_eq!(spis(&lab.broker), before, "the SAs outlive a SIGKILL");
    let broker = lab.start_broker(&bconf);
    assert!(
        broker.log_text().contains("kernel XFRM on interface sgb0"),
        "the restart takes its XFRM interface over:\n{}",
        broker.log_text()
    );
    let after_restart = spis(&lab.broker);
    assert!(
        after_restart.is_disjoint(&before),
        "stale SAs after restart: {after_restart:?}"
    );
    assert!(
        policy_count(&lab.broker) <= 3,
        "{}",
        lab.broker.run(&["ip", "xfrm", "policy"])
    );
    wait_for(UP, || {
        let now = spis(&lab.broker);
        (now.len() == 2 && lab.ping(0, 1)).then_some(())
    })
    .unwrap_or_else(|| panic!("no reconnect after the crash:\n{}", broker.log_text()));
    assert!(spis(&lab.broker).is_disjoint(&before));
    assert_eq!(
        policy_count(&lab.broker),
        3,
        "out, in and fwd for one client"
    );
    let routes = lab
        .broker
        .run(&["ip", "-6", "route", "show", "proto", "90"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");

    // A clean stop leaves nothing.
    let mut broker = broker;
    assert!(broker.terminate(Duration::from_secs(60)).is_some());
    assert!(spis(&lab.broker).is_empty());
    assert_eq!(policy_count(&lab.broker), 0);
    assert!(lab
        .broker
        .run(&["ip", "-6", "route", "show", "proto", "90"])
        .is_empty());
    assert!(!lab.broker.run(&["ip", "link"]).contains("sgb0"));
}

#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_policy_based_without_udp_encapsulation() {
    let lab = xfrm_lab("route_based = false");
    lab.enable_link_local_ipv6();
    let Pair {
        broker,
        client: _client,
        ..
    } = lab.start_pair("", "", UP);
    assert!(
        broker.log_text().contains("policy-based on br0"),
        "{}",
        broker.log_text()
    );
    let states = lab.broker.run(&["ip", "xfrm", "state"]);
    assert!(!states.contains("encap"), "plain ESP without NAT: {states}");
    assert!(!states.contains("if_id"), "{states}");
    assert!(ping_works(&lab), "{}", broker.log_text());
    tcp_both_ways(&lab);
}

#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_strongswan_in_kernel_mode_against_the_xfrm_broker() {
    let lab = xfrm_lab("");
    lab.enable_link_local_ipv6();
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let broker = lab.start_broker(&bconf);
    // Plain ESP (no NAT, so no UDP encapsulation), with 64-bit sequence
    // numbers, which strongSwan's `-esn` makes the only choice.
    let conf = SwanConnection {
        encap: false,
        esp: "aes128gcm16-esn",
        ..Default::default()
    }
    .client();
    let swan = StrongSwan::start_client(&lab.clients[0], &conf, SwanMode::Kernel);
    swan.initiate(60, &format!("{}\n{}", broker.log_text(), swan.log()));
    let sas = swan.swanctl(&["--list-sas"]);
    assert!(sas.contains("2001:db8:100::100"), "{sas}");
    // strongSwan's SAs are in the client's kernel, not in a libipsec;
    // the broker's are ESN SAs in both directions.
    assert_eq!(spis(&lab.clients[0]).len(), 2);
    let states = lab.broker.run(&["ip", "xfrm", "state"]);
    assert_eq!(states.matches("af-unspec esn").count(), 2, "{states}");
    assert!(
        ping_works(&lab),
        "{}\n{}",
        lab.clients[0].run(&["ip", "xfrm", "policy"]),
        broker.log_text()
    );
    tcp_both_ways(&lab);
}

#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_a_soft_expire_and_an_acquire_rekey_the_child_sa() {
    // The broker's SAs expire softly after 256 kB; the client's never.
    let lab = xfrm_lab("force_udp_encapsulation = true");
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let text = std::fs::read_to_string(&bconf)
        .unwrap()
        .replace("[storage]", "rekey_bytes = 262144\n[storage]");
    std::fs::write(&bconf, text).unwrap();
    let broker = lab.start_broker(&bconf);
    let cconf = lab.ecdsa_client_config("c0", "client", "");
    let _client = lab.start_client(0, &cconf);
    lab.wait_up(0, &cconf, UP)
        .unwrap_or_else(|| panic!("client not up:\n{}", broker.log_text()));
    let first = spis(&lab.broker);
    assert!(ping_works(&lab));
    assert!(!broker.log_text().contains("soft limit"));
    tcp_both_ways(&lab);
    wait_for(UP, || {
        let log = broker.log_text();
        (log.contains("reached its soft limit; rekeying") && spis(&lab.broker).is_disjoint(&first))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no rekey after the soft expire: {:?} vs {first:?}\n{}",
            spis(&lab.broker),
            broker.log_text()
        )
    });
    assert!(ping_works(&lab), "traffic flows on the new SAs");

    // SAs lost under the broker's policies: traffic from the inet host
    // to the client makes the kernel ask for SAs (ACQUIRE), and the
    // broker rekeys the Child SA to get them.
    let addr = lab.wait_up(0, &cconf, UP).unwrap();
    let before = spis(&lab.broker);
    lab.broker.run(&["ip", "xfrm", "state", "flush"]);
    assert!(spis(&lab.broker).is_empty());
    wait_for(UP, || {
        lab.inet
            .try_run(&["ping", "-6", "-c", "1", "-W", "2", &addr])
            .status
            .success()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no SAs after the acquire:\n{}", broker.log_text()));
    assert!(
        broker.log_text().contains("has no SA; rekeying"),
        "{}",
        broker.log_text()
    );
    let now = spis(&lab.broker);
    assert!(now.len() == 2 && now.is_disjoint(&before), "{now:?}");
}

/// What the broker counts as dropped from road warriors: its firewall
/// table's drops and the kernel's policy refusals, from `stats`.
fn broker_drops(lab: &TunnelLab) -> u64 {
    let socket = lab.dir.path().join("broker-state/broker.sock");
    let stats = sixgate_tests::control_request(&socket, &serde_json::json!("Stats"));
    let n = |key: &str| {
        stats["Stats"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {stats}"))
    };
    n("firewall_dropped") + n("kernel_policy_dropped")
}

/// The kernel path checks inner packets against the SA's selectors
/// itself, through the policy templates, and the broker's firewall drops
/// IPv4 from the tunnel as it arrives: a peer that seals a spoofed IPv6
/// source or IPv4 into ESP reaches nothing, the broker counts each drop,
/// and the peer's own traffic flows.
#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_spoofed_sources_and_ipv4_inside_esp_reach_nothing() {
    let mut lab = TunnelLab::new(2);
    lab.dataplane = "backend = \"xfrm\"".into();
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let broker = lab.start_broker(&bconf);
    let spoofed_at_inet = lab
        .inet
        .packet_counter("prerouting", "ip6 saddr 2001:db8:dead::/48");
    let echo4_answered = lab
        .broker
        .packet_counter("output", "ip daddr 192.0.2.100 icmp type echo-reply");
    let (mut peer, leased) = sixgate_tests::spoofing_peer(&lab, 1, "192.0.2.3", "client2");
    let v6 = |src: &str| sixgate_tests::icmpv6_echo_hex(src, "2001:db8:ffff::2");
    for (n, (next_header, packet)) in [
        (
            4,
            sixgate_tests::icmpv4_echo_hex("192.0.2.100", "192.0.2.1"),
        ),
        (41, v6("2001:db8:dead::2")),
        (41, v6("2001:db8:100::1")),
    ]
    .into_iter()
    .enumerate()
    {
        let before = broker_drops(&lab);
        peer.send(&format!("send-esp {next_header} {packet}"));
        peer.wait_nth("SENT_ESP", n + 1, UP).expect("sent");
        let dropped = wait_for(Duration::from_secs(20), || {
            (broker_drops(&lab) > before).then_some(())
        });
        assert!(
            dropped.is_some(),
            "packet {n} not counted as dropped:\n{}\n{}",
            lab.broker.run(&["cat", "/proc/net/xfrm_stat"]),
            broker.log_text()
        );
    }
    assert_eq!(
        spoofed_at_inet(),
        0,
        "a spoofed source reached the inet host"
    );
    assert_eq!(echo4_answered(), 0, "IPv4 inside ESP got an answer");
    // Its own address works.
    let arrived = lab.inet.packet_counter(
        "prerouting",
        &format!("ip6 saddr {leased} icmpv6 type echo-request"),
    );
    peer.send(&format!("send-esp 41 {}", v6(&leased)));
    assert!(
        wait_for(UP, || (arrived() >= 1).then_some(())).is_some(),
        "the peer's own packet did not arrive\n{}",
        broker.log_text()
    );
}

/// On a kernel without ESP (this machine's), the xfrm backend refuses to
/// start and says why and what to do instead; without CAP_NET_ADMIN too.
#[test]
fn without_esp_or_cap_net_admin_the_xfrm_backend_explains_itself() {
    let lab = xfrm_lab("");
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let probe = lab.broker.try_run(&[
        "ip",
        "xfrm",
        "state",
        "add",
        "src",
        "192.0.2.1",
        "dst",
        "192.0.2.9",
        "proto",
        "esp",
        "spi",
        "0x100",
        "mode",
        "tunnel",
        "aead",
        "rfc4106(gcm(aes))",
        "0x0000000000000000000000000000000000000000",
        "128",
    ]);
    let broker = workspace_bin("sixgate-broker");
    let run = |wrapper: &[&str]| {
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend([
            broker.to_str().unwrap(),
            "run",
            "--config",
            bconf.to_str().unwrap(),
        ]);
        let out = lab.broker.try_run(&argv);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    if !probe.status.success() {
        let (ok, err) = run(&[]);
        assert!(!ok);
        assert!(err.contains("no ESP support"), "{err}");
        assert!(err.contains("backend = \"userspace\""), "{err}");
    }
    let (ok, err) = run(&[
        "setpriv",
        "--bounding-set=-net_admin",
        "--inh-caps=-net_admin",
    ]);
    assert!(!ok);
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
    assert!(err.contains("backend = \"userspace\""), "{err}");
    assert!(
        !lab.broker.run(&["ip", "link"]).contains("sgb0"),
        "nothing left behind"
    );
}

/// Whether the broker's kernel states come to lead to `dst`, with pings
/// through them, within [`UP`].
fn broker_states_moved_to(lab: &TunnelLab, dst: &str) -> bool {
    let dst = format!("dst {dst}");
    wait_for(UP, || {
        let states = lab.broker.run(&["ip", "xfrm", "state"]);
        (states.contains(&dst) && lab.ping(0, 1)).then_some(())
    })
    .is_some()
}

/// The highest outbound sequence number among a namespace's SAs.
fn highest_oseq(ns: &Netns) -> u64 {
    ns.run(&["ip", "-s", "xfrm", "state"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "oseq")
        .filter_map(|w| {
            u64::from_str_radix(w[1].trim_end_matches(',').trim_start_matches("0x"), 16).ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_mobike_moves_the_kernel_states_with_their_counters() {
    let lab = xfrm_lab("force_udp_encapsulation = true");
    let pair = lab.start_pair("", "", UP);
    assert!(ping_works(&lab), "{}", pair.broker.log_text());
    tcp_both_ways(&lab);
    let (before, oseq) = (spis(&lab.broker), highest_oseq(&lab.broker));
    assert!(oseq > 1000, "{oseq}");
    lab.move_client_address(0, "192.0.2.2/24", "192.0.2.50/24");
    assert!(
        broker_states_moved_to(&lab, "192.0.2.50"),
        "{}
{}
{}",
        lab.broker.run(&["ip", "xfrm", "state"]),
        pair.client.log_text(),
        pair.broker.log_text()
    );
    // The same SAs, on both sides, counting on from where they were (a
    // sequence number used twice with one key would repeat a GCM nonce),
    // and the policies' templates moved with them.
    assert_eq!(spis(&lab.broker), before);
    assert_eq!(spis(&lab.clients[0]), before);
    assert!(highest_oseq(&lab.broker) > oseq);
    let policies = lab.broker.run(&["ip", "xfrm", "policy"]);
    assert!(!policies.contains("192.0.2.2 "), "{policies}");
    assert_eq!(lab.client_status(&pair.client_config)["reconnects"], 0);
}

#[test]
#[ignore = "needs a kernel with ESP: run by xfrm_tests_pass_in_a_vm"]
fn in_vm_a_nat_rebinding_moves_the_kernel_states() {
    let mut lab = TunnelLab::new(0);
    lab.dataplane = "backend = \"xfrm\"\nforce_udp_encapsulation = true".into();
    let home = HomeRouter::new(&mut lab, "192.0.2.20/24");
    let pair = lab.start_pair("", "", UP);
    assert!(ping_works(&lab), "{}", pair.broker.log_text());
    let before = spis(&lab.broker);
    home.renumber("192.0.2.20/24", "192.0.2.21/24");
    assert!(
        broker_states_moved_to(&lab, "192.0.2.21"),
        "{}
{}",
        lab.broker.run(&["ip", "xfrm", "state"]),
        pair.broker.log_text()
    );
    assert_eq!(spis(&lab.broker), before, "the same Child SA");
    assert_eq!(lab.client_status(&pair.client_config)["reconnects"], 0);
}

#[test]
fn xfrm_tests_pass_in_a_vm() {
    let exe = std::env::current_exe().unwrap();
    let (ok, text) = run_in_vm(&format!(
        "modprobe esp4 && modprobe xfrm_interface && modprobe tun && {} --ignored --test-threads 1 in_vm_",
        exe.display()
    ));
    assert!(
        ok && text.contains(&format!("test result: ok. {IN_VM} passed")),
        "in the VM:\n{text}"
    );
}
