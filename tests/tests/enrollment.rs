//! Enrollment end to end, as an operator without a PKI of their own: the
//! broker makes its CA and its certificate, `client add` writes bundles,
//! and the bundles work as they are: sixgate-client with the bundle's
//! `client.toml` (ECDSA) and strongSwan with the bundle's swanctl
//! directory (RSA) both connect and reach the IPv6 host behind the broker.
//! `client list` shows both with their certificates and leases, and
//! `client disconnect` ends one. Root, namespaces, the workspace binaries,
//! charon.

use std::path::Path;
use std::time::Duration;

use sixgate_tests::{wait_for, workspace_bin, StrongSwan, TunnelLab};

const UP: Duration = Duration::from_secs(40);

fn broker_verb(lab: &TunnelLab, config: &Path, args: &[&str]) -> String {
    let text = lab.broker_cli(args, config);
    assert!(!text.contains("sixgate-broker: "), "{args:?}: {text}");
    text
}

#[test]
fn bundles_from_client_add_connect_as_they_are() {
    let lab = TunnelLab::new(2);
    let dir = lab.dir.path();
    let config = lab.broker_config("2001:db8:100::100/120", &[], "");
    broker_verb(&lab, &config, &["ca", "init"]);
    let certs = dir.join("brokercert");
    broker_verb(
        &lab,
        &config,
        &[
            "ca",
            "issue-broker",
            "broker.example.net",
            "--out",
            certs.to_str().unwrap(),
        ],
    );
    // What `ca init` and `ca issue-broker` told the operator to write.
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("certificate = ") {
                format!("certificate = \"{}/broker.pem\"", certs.display())
            } else if l.starts_with("private_key = ") {
                format!("private_key = \"{}/broker.key\"", certs.display())
            } else if l.starts_with("ca = ") {
                format!("ca = [\"{}/broker-state/ca/ca.pem\"]", dir.display())
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&config, text).unwrap();
    let checked = broker_verb(&lab, &config, &["check"]);
    assert!(checked.contains("ok (0 warnings)"), "{checked}");

    let (alice, bob) = (dir.join("alice"), dir.join("bob"));
    for (who, out, extra) in [
        ("alice@example.net", &alice, None),
        ("bob@example.net", &bob, Some("--rsa")),
    ] {
        let mut args = vec![
            "client",
            "add",
            who,
            "--broker",
            "192.0.2.1",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        broker_verb(&lab, &config, &args);
    }
    let broker = lab.start_broker(&config);

    // sixgate-client on the bundle's client.toml. The control socket goes
    // beside it only because parallel tests share /run.
    let client_toml = alice.join("client.toml");
    let mut text = std::fs::read_to_string(&client_toml).unwrap();
    text.push_str("control_socket = \"client.sock\"\n");
    std::fs::write(&client_toml, text).unwrap();
    let out = lab.clients[0].try_run(&[
        workspace_bin("sixgate-client").to_str().unwrap(),
        "check",
        "--config",
        client_toml.to_str().unwrap(),
    ]);
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && checked.contains("ok ("),
        "{checked}"
    );
    let client = lab.start_client(0, &client_toml);
    let address = lab.wait_up(0, &client_toml, UP).unwrap_or_else(|| {
        panic!(
            "bundle client not up:\n{}\n{}",
            client.log_text(),
            broker.log_text()
        )
    });
    assert!(wait_for(UP, || lab.ping(0, 3).then_some(())).is_some());

    // strongSwan on the bundle's swanctl directory: it starts the tunnel
    // itself when the configuration loads (start_action = start).
    let swan = StrongSwan::start_with_swanctl_dir(&lab.clients[1], &bob.join("strongswan"), "");
    let installed = wait_for(UP, || {
        let sas = swan.swanctl(&["--list-sas"]);
        sas.contains("INSTALLED").then_some(sas)
    })
    .unwrap_or_else(|| panic!("strongSwan not up:\n{}\n{}", swan.log(), broker.log_text()));
    assert!(installed.contains("2001:db8:100::"), "{installed}");
    assert!(
        wait_for(UP, || lab.ping(1, 3).then_some(())).is_some(),
        "strongSwan bundle: no ping\n{installed}"
    );

    let list: serde_json::Value =
        serde_json::from_str(&broker_verb(&lab, &config, &["client", "list", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    for who in ["alice@example.net", "bob@example.net"] {
        let row = rows
            .iter()
            .find(|r| r["identity"] == who)
            .unwrap_or_else(|| panic!("{who} not in {list}"));
        assert_eq!(row["connected"], true, "{row}");
        assert!(row["certificate_expires"].as_i64().unwrap() > 0, "{row}");
        assert!(
            row["lease"].as_str().unwrap().starts_with("2001:db8:100::"),
            "{row}"
        );
    }
    let alice_row = rows
        .iter()
        .find(|r| r["identity"] == "alice@example.net")
        .unwrap();
    assert_eq!(alice_row["lease"], address.as_str());
    let table = broker_verb(&lab, &config, &["client", "list"]);
    assert!(
        table.contains("alice@example.net") && table.contains("yes"),
        "{table}"
    );

    // An operator's disconnect ends the IKE SA; the client comes back on
    // its own (it is not revoked), to the same address.
    let said = broker_verb(
        &lab,
        &config,
        &["client", "disconnect", "alice@EXAMPLE.net"],
    );
    assert!(
        said.contains("alice@example.net: 1 IKE SAs deleted"),
        "{said}"
    );
    let back = wait_for(UP, || {
        let s = lab.client_status(&client_toml);
        (s["state"] == "up" && s["reconnects"].as_u64() >= Some(1)).then_some(s)
    })
    .unwrap_or_else(|| panic!("not back:\n{}", client.log_text()));
    assert_eq!(back["address"], address.as_str());
    assert!(broker.log_text().contains("disconnected by the operator"));
    let none = lab.broker_cli(&["client", "disconnect", "nobody@example.net"], &config);
    assert!(
        none.contains("nobody@example.net is not connected"),
        "{none}"
    );
}
