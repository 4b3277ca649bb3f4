//! IKEv2 interoperability with strongSwan (charon with kernel-libipsec) over
//! real UDP in network namespaces, in both roles: the handshake with a
//! virtual IPv6 address from the pool, CHILD SA and IKE SA rekeys, deletes
//! from either side, and the IKE SA keys compared with charon's key log.
//! Runs as root.

use std::process::Command;
use std::time::Duration;

use sixgate_tests::{link, LinePeer, Netns, StrongSwan, SwanConnection, SwanMode};

const T: Duration = Duration::from_secs(30);

struct Case {
    kind: &'static str,
    proposal: &'static str,
    fragmentation: bool,
}

const CASES: [Case; 4] = [
    Case {
        kind: "ecdsa",
        proposal: "default",
        fragmentation: false,
    },
    Case {
        kind: "rsa",
        proposal: "default",
        fragmentation: false,
    },
    Case {
        kind: "rsa",
        proposal: "aes256-sha256-modp2048",
        fragmentation: false,
    },
    Case {
        kind: "ecdsa",
        proposal: "default",
        fragmentation: true,
    },
];

fn lab() -> (Netns, Netns) {
    let client = Netns::new("sgc");
    let broker = Netns::new("sgb");
    link(&client, "192.0.2.2/24", &broker, "192.0.2.1/24");
    (client, broker)
}

fn ike_peer(ns: &Netns, role: &str, local: &str, remote: Option<&str>, case: &Case) -> LinePeer {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_ike-peer"));
    cmd.args([
        "--role",
        role,
        "--local",
        local,
        "--kind",
        case.kind,
        "--proposal",
        case.proposal,
    ]);
    if let Some(r) = remote {
        cmd.args(["--remote", r]);
    }
    if case.fragmentation {
        cmd.args(["--fragment-size", "576"]);
    }
    let peer = LinePeer::spawn(cmd);
    peer.wait("READY", T).expect("ike-peer started");
    peer
}

/// strongSwan's side of a case: its proposals, and whether it fragments.
fn connection(case: &Case) -> SwanConnection<'static> {
    SwanConnection {
        ike: case.proposal,
        esp: if case.proposal == "default" {
            "default"
        } else {
            "aes256-sha256"
        },
        fragmentation: if case.fragmentation { "force" } else { "yes" },
        ..SwanConnection::default()
    }
}

/// The key names and values of a KEYS line.
fn our_keys(line: &str) -> Vec<(String, Vec<u8>)> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k != "sa")
        .map(|(k, v)| (k.to_string(), hex::decode(v).expect("hex")))
        .collect()
}

fn assert_same_keys(ours: &str, swan: &StrongSwan) {
    let theirs = swan.logged_keys();
    let ours = our_keys(ours);
    assert_eq!(ours.len(), 8);
    for (name, value) in &ours {
        if value.is_empty() {
            continue; // SK_ai/SK_ar with an AEAD
        }
        let logged = theirs.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if logged != Some(value) {
            let log = swan.log();
            let context: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("=>") && (l.contains("SKEYSEED") || l.contains("Sk_")))
                .collect();
            let at = log.find("SKEYSEED").unwrap_or(0);
            panic!("{name} differs from charon's log: ours {value:02x?}, theirs {logged:02x?}\n{context:#?}\n{}", &log[at..(at + 600).min(log.len())]);
        }
    }
}

/// We delete the IKE SA (the `nth` to go down), and strongSwan drops it.
fn our_delete(peer: &mut LinePeer, swan: &StrongSwan, nth: usize) {
    peer.send("delete");
    let down = peer.wait_nth("IKE_DOWN", nth, T).expect("down");
    assert!(down.contains("DeletedLocally"), "{down}");
    assert!(
        sixgate_tests::wait_for(T, || (!sas(swan).contains("ESTABLISHED")).then_some(())).is_some(),
        "{}",
        dump("delete", peer, swan)
    );
}

/// strongSwan deletes the IKE SA, and we hear it.
fn their_delete(swan: &StrongSwan, peer: &LinePeer) {
    let out = swan.swanctl(&["--terminate", "--ike", "sixgate", "--timeout", "10"]);
    assert!(
        out.contains("terminate completed successfully"),
        "{}",
        dump(&out, peer, swan)
    );
    let down = peer.wait("IKE_DOWN", T).expect("down");
    assert!(down.contains("DeletedByPeer"), "{down}");
}

/// strongSwan rekeys (`swanctl --rekey ARGS`), and says it completed.
fn their_rekey(swan: &StrongSwan, peer: &LinePeer, args: &[&str]) {
    let mut argv = vec!["--rekey"];
    argv.extend_from_slice(args);
    let out = swan.swanctl(&argv);
    assert!(
        out.contains("rekey completed successfully"),
        "{}",
        dump(&out, peer, swan)
    );
}

/// strongSwan lists the IKE SA established and the Child SA installed.
fn assert_installed(swan: &StrongSwan, peer: &LinePeer) {
    let listed = sas(swan);
    assert!(
        listed.contains("ESTABLISHED") && listed.contains("INSTALLED"),
        "{}",
        dump(&listed, peer, swan)
    );
}

fn sas(swan: &StrongSwan) -> String {
    swan.swanctl(&["--list-sas"])
}

fn dump(what: &str, peer: &LinePeer, swan: &StrongSwan) -> String {
    format!(
        "{what}\n--- sixgate:\n{}\n--- charon log tail:\n{}",
        peer.lines().join("\n"),
        swan.log()
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[test]
fn strongswan_initiator_against_sixgate_responder() {
    for case in &CASES {
        let (client, broker) = lab();
        let mut peer = ike_peer(&broker, "responder", "192.0.2.1", None, case);
        let conf = connection(case).client();
        let extra = if case.fragmentation {
            "fragment_size = 576"
        } else {
            ""
        };
        let swan = StrongSwan::start(&client, case.kind, "client", extra, &conf, SwanMode::Ike);
        let out = swan.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
        let ctx = format!(
            "{} {} frag={}",
            case.kind, case.proposal, case.fragmentation
        );
        assert!(
            out.contains("initiate completed successfully"),
            "{}",
            dump(&format!("{ctx}: {out}"), &peer, &swan)
        );
        let keys = peer.wait("KEYS", T).expect("keys");
        peer.wait("CHILD_UP", T).expect("child up");
        let listed = sas(&swan);
        assert!(
            listed.contains("ESTABLISHED") && listed.contains("INSTALLED"),
            "{ctx}: {listed}"
        );
        assert!(
            listed.contains("2001:db8:100::100"),
            "{ctx}: virtual IP from the pool: {listed}"
        );
        assert_same_keys(&keys, &swan);
        if case.fragmentation {
            assert!(
                swan.log().contains("IKE_AUTH request 1 [ EF"),
                "{ctx}: fragmented IKE_AUTH"
            );
        }

        // strongSwan rekeys the CHILD SA, then the IKE SA.
        their_rekey(&swan, &peer, &["--child", "net"]);
        peer.wait("CHILD_REKEYED", T)
            .unwrap_or_else(|| panic!("{}", dump("child rekey", &peer, &swan)));
        peer.wait("CHILD_DOWN", T).expect("old child deleted");
        their_rekey(&swan, &peer, &["--ike", "sixgate"]);
        peer.wait("IKE_REKEYED", T)
            .unwrap_or_else(|| panic!("{}", dump("ike rekey", &peer, &swan)));
        let rekeyed_keys = peer.wait_nth("KEYS", 2, T).expect("keys after rekey");
        std::thread::sleep(Duration::from_millis(300));
        assert_same_keys(&rekeyed_keys, &swan);

        // We rekey the CHILD SA and the IKE SA too.
        peer.send("rekey-child");
        peer.wait_nth("CHILD_REKEYED", 2, T)
            .unwrap_or_else(|| panic!("{}", dump("our child rekey", &peer, &swan)));
        peer.send("rekey-ike");
        peer.wait_nth("IKE_REKEYED", 2, T)
            .unwrap_or_else(|| panic!("{}", dump("our ike rekey", &peer, &swan)));
        assert_installed(&swan, &peer);

        // strongSwan deletes it.
        their_delete(&swan, &peer);

        // Again, and this time we delete it.
        let out = swan.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
        assert!(
            out.contains("initiate completed successfully"),
            "{}",
            dump(&out, &peer, &swan)
        );
        peer.wait_nth("CHILD_UP", 2, T).expect("second child up");
        our_delete(&mut peer, &swan, 2);
        peer.send("quit");
    }
}

#[test]
fn sixgate_initiator_against_strongswan_responder() {
    for case in &CASES {
        let (client, broker) = lab();
        let conf = connection(case).broker();
        let extra = if case.fragmentation {
            "fragment_size = 576"
        } else {
            ""
        };
        let swan = StrongSwan::start(&broker, case.kind, "broker", extra, &conf, SwanMode::Ike);
        let mut peer = ike_peer(&client, "initiator", "192.0.2.2", Some("192.0.2.1"), case);
        let ctx = format!(
            "{} {} frag={}",
            case.kind, case.proposal, case.fragmentation
        );
        peer.wait("CHILD_UP", T)
            .unwrap_or_else(|| panic!("{}", dump(&ctx, &peer, &swan)));
        let address = peer.wait("ADDRESS", T).expect("address");
        assert!(address.starts_with("ADDRESS 2001:db8:100::"), "{address}");
        let keys = peer.wait("KEYS", T).expect("keys");
        let listed = sas(&swan);
        assert!(
            listed.contains("ESTABLISHED") && listed.contains("INSTALLED"),
            "{ctx}: {listed}"
        );
        assert!(listed.contains("2001:db8:100::"), "{ctx}: {listed}");
        assert_same_keys(&keys, &swan);
        if case.fragmentation {
            assert!(
                swan.log().contains("IKE_AUTH response 1 [ EF"),
                "{ctx}: fragmented IKE_AUTH response"
            );
        }

        peer.send("rekey-child");
        peer.wait("CHILD_REKEYED", T)
            .unwrap_or_else(|| panic!("{}", dump("our child rekey", &peer, &swan)));
        peer.send("rekey-ike");
        peer.wait("IKE_REKEYED", T)
            .unwrap_or_else(|| panic!("{}", dump("our ike rekey", &peer, &swan)));
        their_rekey(&swan, &peer, &["--child", "net"]);
        peer.wait_nth("CHILD_REKEYED", 2, T)
            .unwrap_or_else(|| panic!("{}", dump("their child rekey", &peer, &swan)));
        their_rekey(&swan, &peer, &["--ike", "sixgate"]);
        peer.wait_nth("IKE_REKEYED", 2, T)
            .unwrap_or_else(|| panic!("{}", dump("their ike rekey", &peer, &swan)));
        assert_installed(&swan, &peer);

        // We delete; strongSwan honours it.
        our_delete(&mut peer, &swan, 1);
        drop(peer);

        // Again, and strongSwan deletes.
        let mut peer = ike_peer(&client, "initiator", "192.0.2.2", Some("192.0.2.1"), case);
        peer.wait("CHILD_UP", T)
            .unwrap_or_else(|| panic!("{}", dump("second", &peer, &swan)));
        their_delete(&swan, &peer);
        peer.send("quit");
        let _ = Command::new("true").status();
    }
}
