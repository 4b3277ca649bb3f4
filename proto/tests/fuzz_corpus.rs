//! Runs the fuzz targets over their stored corpora (fuzz/corpus/), so every
//! input a fuzzing run kept is a regression test on the stable toolchain.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    sixgate_proto::fuzzing::stored_corpus(&PathBuf::from(env!("CARGO_MANIFEST_DIR")), target)
}

#[test]
fn message_corpus() {
    for (_, data) in corpus("message") {
        sixgate_proto::fuzzing::parse_message(&data);
    }
}

#[test]
fn encrypted_corpus() {
    for (_, data) in corpus("encrypted") {
        sixgate_proto::fuzzing::open_encrypted(&data);
    }
}

#[test]
fn responder_corpus() {
    use sixgate_proto::auth::PrivateKey;
    use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};
    use sixgate_proto::endpoint::Config;
    use sixgate_proto::wire::Identification;
    use std::sync::Arc;
    let certs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs-example/ecdsa");
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let chain = certificates_from_pem(&read("broker.pem")).unwrap();
    let key = PrivateKey::from_pem(&read("broker.key")).unwrap();
    let ca = TrustAnchors::new(certificates_from_pem(&read("ca.pem")).unwrap()).unwrap();
    // The same configuration as the fuzz target.
    let mut config = Config::new(
        Identification::fqdn("broker.example.net"),
        chain,
        Arc::new(key),
        ca,
    );
    config.max_half_open = 16;
    config.cookie_threshold = 8;
    let config = Arc::new(config);
    for (_, data) in corpus("responder") {
        sixgate_proto::fuzzing::responder(config.clone(), &data);
    }
}

#[test]
fn crl_corpus() {
    use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs-example/ecdsa/ca.pem");
    let anchors =
        TrustAnchors::new(certificates_from_pem(&std::fs::read(ca).unwrap()).unwrap()).unwrap();
    // The same time as the fuzz target: the policy fixtures' CRLs in force.
    for (_, data) in corpus("crl") {
        sixgate_proto::fuzzing::crl(&anchors, 1_780_272_000, &data);
    }
}
