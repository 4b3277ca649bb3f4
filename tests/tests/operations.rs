//! Running the daemons as a service: the systemd units pass
//! `systemd-analyze verify`; the broker tells systemd when it is ready,
//! reloading and stopping (sd_notify); and a reload (`sixgate-broker
//! reload` or SIGHUP) picks up a new static reservation while the
//! connected client keeps its SAs, the same SPIs. Root, namespaces, the
//! workspace binaries.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use sixgate_tests::{unique, wait_for, workspace_bin, Daemon, TunnelLab};

const UP: Duration = Duration::from_secs(30);

#[test]
fn the_systemd_units_verify() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    let dir = sixgate_tests::TempDir::new("sgunits");
    let bin = workspace_bin("sixgate-broker");
    let bin_dir = bin.parent().unwrap();
    for unit in ["sixgate-broker.service", "sixgate-client.service"] {
        // As installed: the binaries where the unit says, here the build's.
        let text = std::fs::read_to_string(dist.join(unit)).unwrap();
        assert!(text.contains("Type=notify") && text.contains("CapabilityBoundingSet="));
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
}

/// The SPIs of the client's Child SAs, as the broker's status has them.
fn spis(lab: &TunnelLab) -> Vec<String> {
    let mut spis: Vec<String> = lab
        .broker_status()
        .iter()
        .flat_map(|c| c["child_sas"].as_array().cloned().unwrap_or_default())
        .map(|child| format!("{} {}", child["inbound_spi"], child["outbound_spi"]))
        .collect();
    spis.sort();
    spis
}

/// The next notification from the daemon, within `limit`.
fn notification(socket: &UnixDatagram, limit: Duration) -> String {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn reload_takes_a_new_reservation_and_keeps_every_sa() {
    let lab = TunnelLab::new(2);
    let config = lab.broker_config("2001:db8:100::100/120", &[], "");
    let notify_path = lab.dir.path().join(format!("{}.notify", unique("n")));
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let broker_bin = workspace_bin("sixgate-broker");
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let broker = Daemon::spawn(
        &lab.broker,
        Path::new("env"),
        &[
            &notify_env,
            broker_bin.to_str().unwrap(),
            "run",
            "--config",
            config.to_str().unwrap(),
        ],
        lab.dir.path().join("broker.log"),
    );
    let ready = notification(&notify, UP);
    assert!(
        ready.starts_with("READY=1\nSTATUS=listening"),
        "{ready}\n{}",
        broker.log_text()
    );

    let first = lab.ecdsa_client_config("first", "client", "");
    let _first = lab.start_client(0, &first);
    let address = lab.wait_up(0, &first, UP).expect("first client up");
    assert!(lab.ping(0, 2));
    let before = spis(&lab);
    assert_eq!(before.len(), 1, "{before:?}");

    // client2 gets a reservation by a reload.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[pool.static]\n",
        "[pool.static]\n\"client2@example.net\" = \"2001:db8:100::1ee\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let said = lab.broker_cli(&["reload"], &config);
    assert!(said.contains("1 static reservations"), "{said}");
    assert_eq!(
        notification(&notify, UP).lines().next(),
        Some("RELOADING=1")
    );
    assert_eq!(notification(&notify, UP), "READY=1");
    let second = lab.ecdsa_client_config("second", "client2", "");
    let _second = lab.start_client(1, &second);
    assert_eq!(
        lab.wait_up(1, &second, UP).as_deref(),
        Some("2001:db8:100::1ee"),
        "{}",
        broker.log_text()
    );
    // The first client's SAs are the same ones, and carry traffic.
    assert_eq!(lab.client_status(&first)["address"], address.as_str());
    assert_eq!(lab.client_status(&first)["reconnects"], 0);
    assert!(lab.ping(0, 2));
    let after: Vec<String> = spis(&lab)
        .into_iter()
        .filter(|s| before.contains(s))
        .collect();
    assert_eq!(after, before, "the first client's SPIs changed");

    // A broken configuration changes nothing, and says why.
    std::fs::write(&config, "[ike]\nlisten = [").unwrap();
    let pid = broker.pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert_eq!(
        notification(&notify, UP).lines().next(),
        Some("RELOADING=1")
    );
    assert_eq!(notification(&notify, UP), "READY=1");
    let logged = wait_for(UP, || {
        let log = broker.log_text();
        log.contains("SIGHUP:").then_some(log)
    })
    .unwrap();
    assert!(logged.contains("nothing changed"), "{logged}");
    assert!(lab.ping(0, 2) && lab.ping(1, 2));
    assert_eq!(lab.client_status(&first)["reconnects"], 0);
}

/// One scrape of the broker's metrics, from inside its namespace.
fn scrape(lab: &TunnelLab) -> String {
    lab.broker.run(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9469 && printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3 && cat <&3",
    ])
}

/// The value of the series `name` (with its labels as written), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_show_a_connect_a_refusal_and_traffic() {
    let lab = TunnelLab::new(2);
    let config = lab.broker_config(
        "2001:db8:100::100/120",
        &[],
        "[metrics]\nlisten = \"127.0.0.1:9469\"",
    );
    let broker = lab.start_broker(&config);
    let before = scrape(&lab);
    assert!(before.starts_with("HTTP/1.1 200 OK"), "{before}");
    assert_eq!(
        value(&before, "sixgate_ike_setups_total"),
        Some(0.0),
        "{before}"
    );
    assert_eq!(value(&before, "sixgate_connected_clients"), Some(0.0));

    // A connect and traffic.
    let good = lab.ecdsa_client_config("good", "client", "");
    let _good = lab.start_client(0, &good);
    lab.wait_up(0, &good, UP).expect("up");
    assert!(lab.ping(0, 5));
    // A refusal: a certificate from a CA the broker does not trust.
    let stranger = lab.client_config(
        "stranger",
        "client2",
        "rsa/client2.pem",
        "rsa/client2.key",
        "",
    );
    let _stranger = lab.start_client(1, &stranger);
    let text = wait_for(UP, || {
        let t = scrape(&lab);
        value(
            &t,
            "sixgate_ike_ends_total{reason=\"refused_AUTHENTICATION_FAILED\"}",
        )
        .is_some_and(|n| n >= 1.0)
        .then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "no refusal counted:\n{}\n{}",
            scrape(&lab),
            broker.log_text()
        )
    });
    assert!(
        value(&text, "sixgate_ike_setups_total").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "sixgate_connected_clients"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "sixgate_child_sas"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "sixgate_leases{state=\"active\"}"),
        Some(1.0),
        "{text}"
    );
    let series = "sixgate_client_packets_total{identity=\"client@example.net\",direction=\"in\"}";
    let packets = value(&text, series).unwrap_or_else(|| panic!("{series} not in\n{text}"));
    assert!(packets >= 5.0, "{text}");
    assert!(
        text.contains("# TYPE sixgate_esp_dropped counter"),
        "{text}"
    );

    // status --json agrees with the data plane's counters (read one
    // after the other, so allowed a few tries in case a packet passes
    // between the two).
    let agree = wait_for(UP, || {
        let status: serde_json::Value =
            serde_json::from_str(&lab.broker_cli(&["status", "--json"], &config)).ok()?;
        let row = status
            .as_array()?
            .iter()
            .find(|r| r["identity"] == "client@example.net")?
            .clone();
        let text = scrape(&lab);
        let same = [("bytes_in", "in"), ("bytes_out", "out")].iter().all(|(field, direction)| {
            let series = format!(
                "sixgate_client_bytes_total{{identity=\"client@example.net\",direction=\"{direction}\"}}"
            );
            let metric = value(&text, &series);
            metric.is_some_and(|m| m > 0.0) && metric == row["traffic"][field].as_u64().map(|n| n as f64)
        });
        same.then_some(())
    });
    assert!(
        agree.is_some(),
        "status and metrics disagree:\n{}",
        scrape(&lab)
    );
    // status shows what swanctl --list-sas would: algorithms, SPIs,
    // selectors, rekey times, the last word from the peer; both sides
    // agree on the SPIs.
    let text = lab.broker_cli(&["status"], &config);
    assert!(
        text.contains("IKE SA #") && text.contains("peer heard") && text.contains("Child SA "),
        "{text}"
    );
    let rows = lab.broker_status();
    let child = &rows[0]["child_sas"][0];
    let rekey = child["rekey_in_secs"].as_u64().expect("a rekey time");
    assert!(rekey <= 3600, "{child}");
    assert!(rows[0]["ike_rekey_in_secs"]
        .as_u64()
        .is_some_and(|t| t <= 4 * 3600));
    let client = lab.client_status(&good);
    let theirs = &client["ike_sa"]["child_sas"][0];
    assert_eq!(theirs["inbound_spi"], child["outbound_spi"], "{client}");
    assert_eq!(theirs["outbound_spi"], child["inbound_spi"], "{client}");
    assert_eq!(theirs["encryption"], child["encryption"]);
    let not_found = lab.broker.run(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9469 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
    ]);
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
}
