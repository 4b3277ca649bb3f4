//! `sixgate-broker check` as an operator meets it: each misconfiguration
//! a start would trip over is reported with the key it is about, a start
//! refuses with the same words, and a good configuration passes.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sixgate_proto::identity::CanonicalIdentity;
use sixgate_runtime::ca::{CertificateAuthority, KeyKind, Usage};

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example")
}

/// A configuration with the example ECDSA PKI, listening on loopback.
fn config(dir: &Path) -> PathBuf {
    let c = certs().join("ecdsa");
    let text = format!(
        r#"[ike]
listen = ["127.0.0.1"]
identity = "broker.example.net"
certificate = "{c}/broker.pem"
private_key = "{c}/broker.key"
ca = ["{c}/ca.pem"]
[pool]
prefix = "2001:db8:100::/64"
[storage]
path = "state"
"#,
        c = c.display()
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the broker with `verb`; returns (success, stdout and stderr).
fn broker(verb: &str, config: &Path) -> (bool, String) {
    sixgate_tests::outcome(
        Command::new(env!("CARGO_BIN_EXE_sixgate-broker"))
            .args([verb, "--config"])
            .arg(config),
    )
}

/// The findings that are errors, but the ports' (which need root to bind
/// port 500 when the tests run unprivileged).
fn errors(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains(": error: "))
        .filter(|l| !(l.contains("ike.listen") && l.contains("needs root")))
        .collect()
}

/// A broker certificate from a fresh CA, valid between the two times.
fn broker_certificate(dir: &Path, not_before: SystemTime, not_after: SystemTime) -> String {
    let ca = CertificateAuthority::generate("check test CA", KeyKind::EcdsaP256, 30).unwrap();
    let id = CanonicalIdentity::parse("broker.example.net").unwrap();
    let issued = ca
        .issue_between(
            &id,
            Usage::Broker,
            KeyKind::EcdsaP256,
            not_before,
            not_after,
        )
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.certificate()).unwrap();
    std::fs::write(dir.join("b.pem"), &issued.certificate).unwrap();
    std::fs::write(dir.join("b.key"), &issued.private_key).unwrap();
    format!(
        "certificate = \"{d}/b.pem\"\nprivate_key = \"{d}/b.key\"\nca = [\"{d}/ca.pem\"]",
        d = dir.display()
    )
}

#[test]
fn check_names_the_key_of_each_misconfiguration_and_a_start_refuses_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = config(d);
    let (ok, text) = broker("check", &good);
    assert!(errors(&text).is_empty(), "{text}");
    assert!(ok || text.contains("needs root"), "{text}");

    let day = Duration::from_secs(86400);
    let now = SystemTime::now();
    let expired = broker_certificate(d, now - 40 * day, now - day);
    let c = certs();
    let cases: Vec<(String, String, &str, &str)> = vec![
        (
            String::new(),
            "prefix = \"fe80::/64\"".into(),
            "pool.prefix",
            "link-local",
        ),
        (
            String::new(),
            "prefix = \"ff02::/64\"".into(),
            "pool.prefix",
            "multicast",
        ),
        (
            "identity = \"vpn.example.org\"".into(),
            String::new(),
            "ike.identity",
            "does not certify vpn.example.org (it names broker.example.net",
        ),
        (
            format!(
                "private_key = \"{}/ecdsa/client.key\"",
                c.display()
            ),
            String::new(),
            "ike.private_key",
            "does not belong",
        ),
        (
            format!(
                "certificate = \"{c}/policy/eku-client.pem\"\nprivate_key = \"{c}/policy/eku-client.key\"",
                c = c.display()
            ),
            String::new(),
            "ike.certificate",
            "extendedKeyUsage allows neither IKE nor serverAuth",
        ),
        (expired, String::new(), "ike.certificate", "expired on"),
        (
            String::new(),
            "[sites]\nprefix = \"2001:db8:200::/48\"\ntransfer4 = \"100.64.0.0/24\"\n\
             endpoint = \"192.0.2.1:51820\"\nuplink = \"sgnosuch0\""
                .into(),
            "sites.uplink",
            "no interface \"sgnosuch0\"",
        ),
    ];
    for (ike, rest, key, problem) in cases {
        let text_config = good_with(d, &ike, &rest);
        let (ok, text) = broker("check", &text_config);
        assert!(!ok, "{key}: check passed:\n{text}");
        let line = errors(&text)
            .into_iter()
            .find(|l| l.contains(key) && l.contains(problem))
            .unwrap_or_else(|| panic!("{key}/{problem} not in:\n{text}"))
            .to_string();
        // `run` makes the same finding before it does anything.
        let (ran, run_text) = broker("run", &text_config);
        assert!(!ran, "{key}: run started");
        let message = line.split(": error: ").nth(1).unwrap();
        assert!(
            run_text.contains(message),
            "{message}\nnot in run's\n{run_text}"
        );
    }

    // A certificate close to its end: a warning, and the check passes.
    let soon = broker_certificate(d, now - day, now + 10 * day);
    let (ok, text) = broker("check", &good_with(d, &soon, ""));
    assert!(
        text.contains("warning: ike.certificate") && text.contains(" days, on "),
        "{text}"
    );
    assert!(errors(&text).is_empty(), "{text}");
    assert!(ok || text.contains("needs root"), "{text}");

    // A port in use.
    let busy = UdpSocket::bind("127.0.0.1:4500");
    if let Ok(_held) = busy {
        let (ok, text) = broker("check", &good);
        assert!(!ok);
        assert!(
            text.contains("error: ike.listen: UDP 127.0.0.1:4500 is in use"),
            "{text}"
        );
    }
}

/// The good configuration with `[ike]` lines overridden (a later key of
/// the same name would be a TOML error, so the originals go) and `rest`
/// in `[pool]`'s place or after it.
fn good_with(dir: &Path, ike: &str, rest: &str) -> PathBuf {
    let path = config(dir);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for line in ike.lines() {
        let key = line.split('=').next().unwrap().trim();
        let start = text.find(&format!("\n{key} = ")).unwrap() + 1;
        let end = start + text[start..].find('\n').unwrap();
        text.replace_range(start..end, line);
    }
    if let Some(prefix) = rest.strip_prefix("prefix = ") {
        text = text.replace("\"2001:db8:100::/64\"", prefix);
    } else {
        text = text.replace("[storage]", &format!("{rest}\n[storage]"));
    }
    std::fs::write(&path, text).unwrap();
    path
}
