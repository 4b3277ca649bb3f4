//! Tunnels whose outer addresses change under a running TCP stream, as
//! root in network namespaces: a client that moves to another address
//! (MOBIKE, RFC 4555) — strongSwan and the sixgate client against the
//! sixgate broker, the sixgate client against a strongSwan broker — and a
//! client behind a masquerading router whose public address changes (NAT
//! rebinding, RFC 7296 2.23). Each keeps its IKE SA. Needs the workspace
//! binaries, iproute2, nftables, iperf3 and strongSwan.

use std::time::{Duration, Instant};

use sixgate_tests::{wait_for, HomeRouter, StrongSwan, SwanConnection, SwanMode, TunnelLab};

const UP: Duration = Duration::from_secs(30);
/// How long an 8 s stream may take to report.
const STREAM_END: Duration = Duration::from_secs(40);
const OLD: &str = "192.0.2.2/24";
const NEW: &str = "192.0.2.50/24";

/// The broker's one connection: its number, the peer's address, and its
/// Child SAs' inbound SPIs.
fn broker_connection(lab: &TunnelLab) -> Option<(u64, String, Vec<String>)> {
    let rows = lab.broker_status();
    let [row] = rows.as_slice() else {
        return None;
    };
    let spis = row["child_sas"]
        .as_array()?
        .iter()
        .filter_map(|c| c["inbound_spi"].as_str().map(str::to_string))
        .collect();
    Some((
        row["sa"].as_u64()?,
        row["remote"].as_str()?.to_string(),
        spis,
    ))
}

/// Waits until client `i` has a TCP connection to the iperf3 server.
fn stream_running(lab: &TunnelLab, i: usize) {
    let up = wait_for(UP, || {
        let ss = lab.clients[i].try_run(&["ss", "-Htn", "state", "established", "dport = :5201"]);
        (!ss.stdout.is_empty()).then_some(())
    });
    assert!(up.is_some(), "the iperf3 stream did not start");
}

/// The intervals of a stream that must not have broken: it finished
/// without an error, and moved data in its last two seconds, after the
/// move.
fn assert_stream_went_on(intervals: Result<Vec<u64>, String>, context: &str) {
    let intervals = intervals.unwrap_or_else(|e| panic!("the TCP stream broke: {e}\n{context}"));
    let tail = &intervals[intervals.len().saturating_sub(4)..];
    assert!(
        tail.len() == 4 && tail.iter().all(|b| *b > 0),
        "no data after the move: {intervals:?}\n{context}"
    );
}

/// The IKE SA line of `swanctl --list-sas` (name, number, SPIs).
fn swan_ike_sa(swan: &StrongSwan) -> String {
    let sas = swan.swanctl(&["--list-sas"]);
    sas.lines()
        .find(|l| l.contains("ESTABLISHED"))
        .map(|l| {
            // "sixgate: #1, ESTABLISHED, IKEv2, 0123_i* 4567_r": without
            // the age that follows on later lines.
            l.trim().to_string()
        })
        .unwrap_or_else(|| panic!("no IKE SA: {sas}"))
}

#[test]
fn a_strongswan_client_moves_with_mobike_and_its_tcp_stream_goes_on() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let broker = lab.start_broker(&bconf);
    let conf = SwanConnection {
        local_addrs: "%any",
        ..SwanConnection::default()
    }
    .client();
    let swan = StrongSwan::start_client(&lab.clients[0], &conf, SwanMode::Routes);
    swan.initiate(20, &broker.log_text());
    assert!(wait_for(UP, || lab.ping(0, 3).then_some(())).is_some());
    let (sa, remote, spis) = broker_connection(&lab).expect("one connection");
    assert_eq!(remote, "192.0.2.2:4500");
    let ike_sa = swan_ike_sa(&swan);

    let iperf = lab.iperf_background(0, 8).expect("iperf3");
    stream_running(&lab, 0);
    lab.move_client_address(0, OLD, NEW);
    let moved = wait_for(UP, || {
        broker_connection(&lab).filter(|(_, r, _)| r == "192.0.2.50:4500")
    });
    let log = || format!("broker:\n{}\ncharon:\n{}", broker.log_text(), swan.log());
    let (sa_after, _, spis_after) = moved.unwrap_or_else(|| panic!("not moved\n{}", log()));
    assert_stream_went_on(iperf.intervals(STREAM_END), &log());
    // The same IKE SA on both sides, moved by MOBIKE. (kernel-libipsec
    // cannot move its SAs in place, so charon rekeys the Child SA after
    // the update: new Child SPIs are strongSwan's choice here.)
    assert_eq!(sa_after, sa);
    assert_eq!(swan_ike_sa(&swan), ike_sa);
    assert!(!spis.is_empty() && !spis_after.is_empty());
    let charon = swan.log();
    assert!(
        charon.contains("N(UPD_SA_ADDR)") && charon.contains("N(COOKIE2)"),
        "strongSwan did not update its addresses with MOBIKE:\n{charon}"
    );
    assert!(lab.ping(0, 3));
}

#[test]
fn the_sixgate_client_moves_with_mobike_and_its_tcp_stream_goes_on() {
    let lab = TunnelLab::new(1);
    let pair = lab.start_pair("", "", UP);
    assert!(wait_for(UP, || lab.ping(0, 3).then_some(())).is_some());
    let (sa, remote, spis) = broker_connection(&lab).expect("one connection");
    assert_eq!(remote, "192.0.2.2:4500");

    let iperf = lab.iperf_background(0, 8).expect("iperf3");
    stream_running(&lab, 0);
    lab.move_client_address(0, OLD, NEW);
    let moved = wait_for(UP, || {
        broker_connection(&lab).filter(|(_, r, _)| r == "192.0.2.50:4500")
    });
    let log = || {
        format!(
            "client:\n{}\nbroker:\n{}",
            pair.client.log_text(),
            pair.broker.log_text()
        )
    };
    let (sa_after, _, spis_after) = moved.unwrap_or_else(|| panic!("not moved\n{}", log()));
    assert_stream_went_on(iperf.intervals(STREAM_END), &log());
    assert_eq!((sa_after, spis_after), (sa, spis));
    let status = lab.client_status(&pair.client_config);
    assert_eq!(status["state"], "up");
    assert_eq!(status["reconnects"], 0, "{status}");
    assert!(
        pair.client
            .log_text()
            .contains("our address towards the broker is now 192.0.2.50"),
        "{}",
        log()
    );
}

#[test]
fn the_sixgate_client_moves_with_mobike_against_a_strongswan_broker() {
    let lab = TunnelLab::new(1);
    let (swan, client, cconf, _) = lab.sixgate_client_of_a_strongswan_broker(UP);
    assert!(wait_for(UP, || lab.ping(0, 3).then_some(())).is_some());
    let ike_sa = swan_ike_sa(&swan);

    let iperf = lab.iperf_background(0, 8).expect("iperf3");
    stream_running(&lab, 0);
    lab.move_client_address(0, OLD, NEW);
    let log = || format!("client:\n{}\ncharon:\n{}", client.log_text(), swan.log());
    let moved = wait_for(UP, || {
        let sas = swan.swanctl(&["--list-sas"]);
        sas.contains("192.0.2.50[").then_some(())
    });
    assert!(moved.is_some(), "strongSwan did not move the SA\n{}", log());
    assert_stream_went_on(iperf.intervals(STREAM_END), &log());
    assert_eq!(swan_ike_sa(&swan), ike_sa, "the same IKE SA");
    assert!(
        swan.log().contains("N(UPD_SA_ADDR)"),
        "no UPDATE_SA_ADDRESSES\n{}",
        log()
    );
    assert_eq!(lab.client_status(&cconf)["reconnects"], 0);
}

#[test]
fn a_nat_rebinding_keeps_the_tunnel_and_a_dead_path_is_not_called_up() {
    let mut lab = TunnelLab::new(0);
    let home = HomeRouter::new(&mut lab, "192.0.2.20/24");
    let pair = lab.start_pair("", "", UP);
    assert!(wait_for(UP, || lab.ping(0, 3).then_some(())).is_some());
    let (sa, remote, spis) = broker_connection(&lab).expect("one connection");
    assert!(remote.starts_with("192.0.2.20:"), "{remote}");
    let log = || {
        format!(
            "client:\n{}\nbroker:\n{}",
            pair.client.log_text(),
            pair.broker.log_text()
        )
    };

    // A DSL reconnect: a new public address; pings through the tunnel
    // resume on the same IKE SA.
    home.renumber("192.0.2.20/24", "192.0.2.21/24");
    let renumbered = Instant::now();
    let back = wait_for(UP, || lab.ping(0, 1).then_some(()));
    assert!(back.is_some(), "pings did not resume\n{}", log());
    assert!(renumbered.elapsed() < UP);
    // The broker's view follows the packets: a message the client sent
    // before the renumbering, handled late, may move it back for a moment,
    // until the next ESP from the new address moves it on again.
    let (sa_after, remote_after, spis_after) = wait_for(UP, || {
        broker_connection(&lab).filter(|(_, remote, _)| remote.starts_with("192.0.2.21:"))
    })
    .unwrap_or_else(|| {
        panic!(
            "the broker still sends to {:?}\n{}",
            broker_connection(&lab),
            log()
        )
    });
    assert!(remote_after.starts_with("192.0.2.21:"), "{remote_after}");
    assert_eq!((sa_after, spis_after), (sa, spis), "the same IKE SA");
    assert_eq!(lab.client_status(&pair.client_config)["reconnects"], 0);

    // The line goes dead: the client must stop saying "up" within
    // dead_after (30 s; with this lab's 1 s DPD and short retransmissions
    // it notices sooner).
    home.cut(true);
    let cut = Instant::now();
    let down = wait_for(Duration::from_secs(40), || {
        (lab.client_status(&pair.client_config)["state"] != "up").then_some(())
    });
    assert!(
        down.is_some(),
        "still up 40 s after the path died\n{}",
        log()
    );
    assert!(
        cut.elapsed() <= Duration::from_secs(31),
        "{:?}",
        cut.elapsed()
    );
    // And it comes back once the line does.
    home.cut(false);
    assert!(
        lab.wait_up(0, &pair.client_config, UP).is_some(),
        "{}",
        log()
    );
    assert!(wait_for(UP, || lab.ping(0, 1).then_some(())).is_some());
}
