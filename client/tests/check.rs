//! `sixgate-client check` as a user meets it: a certificate that does not
//! name the configured identity, or a key that is not the certificate's,
//! is reported with its key, and `up` refuses with the same words before
//! it touches the network.

use std::path::{Path, PathBuf};
use std::process::Command;

fn config(dir: &Path, identity: &str, key: &str) -> PathBuf {
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example/ecdsa");
    let text = format!(
        "broker = \"127.0.0.1\"\nbroker_identity = \"broker.example.net\"\n\
         identity = \"{identity}\"\ncertificate = \"{c}/client.pem\"\n\
         private_key = \"{c}/{key}\"\nca = [\"{c}/ca.pem\"]\n\
         control_socket = \"{d}/client.sock\"\n",
        c = c.display(),
        d = dir.display()
    );
    let path = dir.join("client.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn client(verb: &str, config: &Path) -> (bool, String) {
    sixgate_tests::outcome(
        Command::new(env!("CARGO_BIN_EXE_sixgate-client"))
            .args([verb, "--config"])
            .arg(config),
    )
}

#[test]
fn check_and_up_refuse_credentials_the_broker_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    for (identity, key, finding) in [
        ("someone@example.net", "client.key", "identity: "),
        ("client@example.net", "broker.key", "private_key: "),
    ] {
        let path = config(dir.path(), identity, key);
        let (ok, text) = client("check", &path);
        assert!(!ok, "{text}");
        let line = text
            .lines()
            .find(|l| l.contains(&format!("error: {finding}")))
            .unwrap_or_else(|| panic!("{finding} not in\n{text}"));
        let message = line.split(": error: ").nth(1).unwrap();
        let (up, up_text) = client("up", &path);
        assert!(!up, "up started: {up_text}");
        assert!(
            up_text.contains(message),
            "{message}\nnot in up's\n{up_text}"
        );
    }
    let good = config(dir.path(), "client@example.net", "client.key");
    let (_, text) = client("check", &good);
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": error: ") && !l.contains("needs root") && !l.contains("in use"))
        .collect();
    assert!(errors.is_empty(), "{text}");
}
