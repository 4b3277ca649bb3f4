//! The certificate validation matrix: one good chain and one refusal per
//! defect, in RSA and ECDSA, each refusal with its own error.

mod common;

use sixgate_proto::cert::{match_identity, subject_der, CertError, TrustAnchors};
use sixgate_proto::identity::{CanonicalIdentity, IdentityKind};
use sixgate_proto::wire::Identification;

fn anchors(kind: &str) -> TrustAnchors {
    TrustAnchors::new(common::certs(&format!("{kind}/ca.pem"))).unwrap()
}

fn validate(kind: &str, chain_file: &str) -> Result<(), CertError> {
    let chain = common::certs(chain_file);
    anchors(kind).validate(&chain, common::NOW).map(|_| ())
}

#[test]
fn validation_matrix() {
    for kind in ["ecdsa", "rsa"] {
        let k = |f: &str| format!("{kind}/{f}");
        let bad = |f: &str| format!("bad/{kind}/{f}");
        assert_eq!(validate(kind, &k("client.pem")), Ok(()), "{kind} good leaf");
        assert_eq!(
            validate(kind, &k("client-chain.pem")),
            Ok(()),
            "{kind} leaf + CA"
        );
        assert_eq!(validate(kind, &k("broker.pem")), Ok(()), "{kind} broker");
        assert_eq!(
            validate(kind, &bad("rogue-client.pem")),
            Err(CertError::UnknownIssuer),
            "{kind} rogue"
        );
        assert_eq!(
            validate(kind, &bad("expired-client.pem")),
            Err(CertError::Expired),
            "{kind} expired"
        );
        assert_eq!(
            validate(kind, &bad("notyet-client.pem")),
            Err(CertError::NotYetValid),
            "{kind} not yet"
        );
        assert_eq!(
            validate(kind, &bad("nobc-client.pem")),
            Err(CertError::NotACa),
            "{kind} no CA:TRUE"
        );
    }
}

#[test]
fn a_rogue_ca_sent_along_is_still_not_trusted() {
    let mut chain = common::certs("bad/ecdsa/rogue-client.pem");
    chain.extend(common::certs("bad/ecdsa/rogue-ca.pem"));
    assert_eq!(
        anchors("ecdsa").validate(&chain, common::NOW).map(|_| ()),
        Err(CertError::UnknownIssuer)
    );
}

#[test]
fn a_ca_of_the_other_key_type_is_not_an_issuer() {
    let chain = common::certs("rsa/client.pem");
    assert_eq!(
        anchors("ecdsa").validate(&chain, common::NOW).map(|_| ()),
        Err(CertError::UnknownIssuer)
    );
}

#[test]
fn time_is_the_callers() {
    let chain = common::certs("ecdsa/client.pem");
    // 2024-01-01, before the example PKI's validity.
    assert_eq!(
        anchors("ecdsa").validate(&chain, 1_704_067_200).map(|_| ()),
        Err(CertError::NotYetValid)
    );
    // 2046-01-01, after it.
    assert_eq!(
        anchors("ecdsa").validate(&chain, 2_398_291_200).map(|_| ()),
        Err(CertError::Expired)
    );
}

#[test]
fn a_leaf_is_not_a_trust_anchor() {
    let leaf = common::certs("ecdsa/client.pem");
    assert_eq!(
        TrustAnchors::new(leaf).map(|_| ()).unwrap_err(),
        CertError::NotACa
    );
}

#[test]
fn identity_must_be_in_the_certificate() {
    for kind in ["ecdsa", "rsa"] {
        let client = &common::certs(&format!("{kind}/client.pem"))[0];
        let broker = &common::certs(&format!("{kind}/broker.pem"))[0];
        // One certificate, one key: the spellings it proves all meet in
        // one canonical identity, and a different local part is refused.
        let canonical = CanonicalIdentity::parse("client@example.net").unwrap();
        for spelling in [
            "client@example.net",
            "client@EXAMPLE.net",
            "client@Example.NET",
        ] {
            assert_eq!(
                match_identity(client, &Identification::rfc822(spelling)).as_ref(),
                Ok(&canonical),
                "{spelling}"
            );
        }
        assert_eq!(
            match_identity(client, &Identification::rfc822("CLIENT@example.net")),
            Err(CertError::IdentityMismatch),
            "the local part is exact (RFC 5280 7.5)"
        );
        assert_eq!(
            match_identity(broker, &Identification::fqdn("Broker.Example.NET"))
                .unwrap()
                .as_str(),
            "broker.example.net"
        );
        for wrong in [
            Identification::rfc822("client2@example.net"),
            Identification::fqdn("client@example.net"),
            Identification::rfc822("broker.example.net"),
            Identification::address("192.0.2.1".parse().unwrap()),
        ] {
            assert_eq!(
                match_identity(client, &wrong),
                Err(CertError::IdentityMismatch),
                "{wrong:?}"
            );
        }
        assert_eq!(
            match_identity(broker, &Identification::fqdn("evil.example.net")),
            Err(CertError::IdentityMismatch)
        );
        // The subject DN is an identity too.
        let dn = subject_der(client).unwrap();
        let proved =
            match_identity(client, &Identification::distinguished_name(dn.clone())).unwrap();
        assert_eq!(proved.kind(), IdentityKind::DistinguishedName);
        assert!(proved.as_str().starts_with("CN="), "{proved}");
        assert_eq!(CanonicalIdentity::parse(proved.as_str()), Ok(proved));
        assert_eq!(
            match_identity(broker, &Identification::distinguished_name(dn)),
            Err(CertError::IdentityMismatch)
        );
    }
}

#[test]
fn certreq_names_the_anchors_by_key_hash() {
    let anchors = anchors("rsa");
    let hashes = anchors.certreq_hashes();
    assert_eq!(hashes.len(), 20);
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        sixgate_proto::cert::certificates_from_pem(pem),
        Err(CertError::Malformed)
    );
    assert_eq!(
        sixgate_proto::cert::certificates_from_pem(b""),
        Err(CertError::Missing)
    );
    assert_eq!(
        anchors("rsa").validate(&[vec![0x30, 0x03, 1, 2, 3]], common::NOW),
        Err(CertError::Malformed)
    );
    assert_eq!(
        anchors("rsa").validate(&[], common::NOW),
        Err(CertError::Missing)
    );
}
