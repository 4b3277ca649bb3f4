//! An IKE_SA_INIT flood against the broker, as root in namespaces:
//! Debian's `ike-scan` sending IKEv2 requests from random source addresses
//! as fast as it can, while an established client keeps pinging and a new
//! client connects. ike-scan offers only what the broker does not accept
//! (AES-CBC or 3DES with SHA-1 or MD5), so each request is refused without
//! state; that the broker asks for cookies and cheaper groups when the
//! requests are acceptable is shown in proto/tests/floods.rs.

use std::time::{Duration, Instant};

use sixgate_tests::{wait_for, Flood, TunnelLab};

const UP: Duration = Duration::from_secs(30);

#[test]
fn an_ike_sa_init_flood_from_random_sources_is_absorbed() {
    let lab = TunnelLab::new(3);
    let pair = lab.start_pair("", "", UP);
    let arrived = lab
        .broker
        .packet_counter("prerouting", "udp dport 500 ip saddr != 192.0.2.0/24");
    let mut flood = Flood::start(&lab, 1, 2_000_000);
    let started = wait_for(Duration::from_secs(30), || {
        (arrived() > 10_000).then_some(())
    });
    assert!(
        started.is_some(),
        "the flood did not start: {} arrived, ike-scan running: {}",
        arrived(),
        flood.running()
    );
    let (t0, before) = (Instant::now(), arrived());

    // A newcomer connects during the flood, and the established client's
    // pings go on.
    let newcomer = lab.ecdsa_client_config("new", "client3", "");
    let _new = lab.start_client(2, &newcomer);
    let ping = lab.ping_summary(0, 200);
    let up = lab.wait_up(2, &newcomer, Duration::from_secs(10));
    let flooded = arrived() - before;
    let elapsed = t0.elapsed();
    let still_flooding = flood.running();
    drop(flood);

    let received = ping.received;
    let socket = lab.dir.path().join("broker-state/broker.sock");
    let stats = sixgate_tests::control_request(&socket, &serde_json::json!("Stats"));
    println!(
        "flood: {flooded} IKE_SA_INITs in {elapsed:?} ({:.0}/s), pings {received}/200, newcomer {}, stats {stats}",
        flooded as f64 / elapsed.as_secs_f64(),
        if up.is_some() { "up" } else { "not up" }
    );
    assert!(still_flooding, "the flood ended before the checks did");
    assert!(received >= 198, "pings lost under the flood: {ping:?}");
    assert!(
        up.is_some(),
        "the newcomer did not connect within 10 s\n{}",
        pair.broker.log_text()
    );
    // Refused without state: the flood offers only proposals we do not
    // accept. Some of it may have been dropped at the IKE hand-off, never
    // on the ESP path (the pings above).
    let ike = &stats["Stats"]["runtime"]["ike"];
    let refused = ike["inits_refused"].as_u64().unwrap();
    assert!(refused > flooded / 2, "the flood was not answered: {stats}");
    assert_eq!(ike["half_open_dropped"], 0, "{stats}");
}
