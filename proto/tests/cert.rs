//! The certificate validation matrix: one good chain and one refusal per
//! defect, in RSA and ECDSA, each refusal with its own error; the
//! certificate policy (usage, path length, name constraints, critical
//! extensions, weak algorithms) and revocation, by CRL and by list.

mod common;

use sixgate_proto::cert::{
    crl_from_file, match_identity, parse_serial, subject_der, CertError, Purpose, Revocations,
    TrustAnchors,
};
use sixgate_proto::crypto::Legacy;
use sixgate_proto::identity::{CanonicalIdentity, IdentityKind};
use sixgate_proto::wire::Identification;

fn anchors(kind: &str) -> TrustAnchors {
    TrustAnchors::new(common::certs(&format!("{kind}/ca.pem"))).unwrap()
}

/// A client chain's validation against a kind's CA, without legacy.
fn validate_client(kind: &str, chain: &[Vec<u8>], now: i64) -> Result<(), CertError> {
    anchors(kind)
        .validate(chain, now, Purpose::Client, Legacy::Refuse)
        .map(|_| ())
}

fn validate(kind: &str, chain_file: &str) -> Result<(), CertError> {
    validate_as(kind, chain_file, Purpose::Client, Legacy::Refuse)
}

fn validate_as(
    kind: &str,
    chain_file: &str,
    purpose: Purpose,
    legacy: Legacy,
) -> Result<(), CertError> {
    let chain = common::certs(chain_file);
    anchors(kind)
        .validate(&chain, common::NOW, purpose, legacy)
        .map(|_| ())
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
        validate_client("ecdsa", &chain, common::NOW),
        Err(CertError::UnknownIssuer)
    );
}

#[test]
fn a_ca_of_the_other_key_type_is_not_an_issuer() {
    let chain = common::certs("rsa/client.pem");
    assert_eq!(
        validate_client("ecdsa", &chain, common::NOW),
        Err(CertError::UnknownIssuer)
    );
}

#[test]
fn time_is_the_callers() {
    let chain = common::certs("ecdsa/client.pem");
    // 2024-01-01, before the example PKI's validity.
    assert_eq!(
        validate_client("ecdsa", &chain, 1_704_067_200),
        Err(CertError::NotYetValid)
    );
    // 2046-01-01, after it.
    assert_eq!(
        validate_client("ecdsa", &chain, 2_398_291_200),
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
        anchors("rsa")
            .validate(
                &[vec![0x30, 0x03, 1, 2, 3]],
                common::NOW,
                Purpose::Client,
                Legacy::Refuse
            )
            .map(|_| ()),
        Err(CertError::Malformed)
    );
    assert_eq!(
        anchors("rsa")
            .validate(&[], common::NOW, Purpose::Client, Legacy::Refuse)
            .map(|_| ()),
        Err(CertError::Missing)
    );
}

/// The policy matrix: each certificate differs from a good client
/// certificate in one property (certs-example/make-policy-certs.sh).
#[test]
fn policy_matrix() {
    let p = |f: &str| format!("policy/{f}.pem");
    let refused = [
        ("ecdsa", "ku-client", CertError::KeyUsage),
        (
            "ecdsa",
            "eku-client",
            CertError::ExtendedKeyUsage(Purpose::Client),
        ),
        (
            "ecdsa",
            "serverauth-client",
            CertError::ExtendedKeyUsage(Purpose::Client),
        ),
        ("ecdsa", "pathlen-client", CertError::PathLenExceeded),
        ("ecdsa", "nc-bad-client", CertError::NameConstraints),
        (
            "ecdsa",
            "critical-client",
            CertError::UnknownCriticalExtension("1.3.6.1.4.1.55555.1".into()),
        ),
        ("rsa", "sha1-client", CertError::WeakSignature),
        ("rsa", "rsa1024-client", CertError::WeakKey(1024)),
    ];
    for (kind, file, error) in refused {
        assert_eq!(validate(kind, &p(file)), Err(error), "{file}");
    }
    for (kind, file) in [
        ("ecdsa", "ikeonly-client"),
        ("ecdsa", "pathlen0-client"),
        ("ecdsa", "nc-good-client"),
        ("ecdsa", "revoked-client"),
    ] {
        assert_eq!(validate(kind, &p(file)), Ok(()), "{file}");
    }
    // Each refusal is of the property, not of the certificate: the right
    // purpose or `legacy` lets the same certificate through.
    assert_eq!(
        validate_as(
            "ecdsa",
            &p("serverauth-client"),
            Purpose::Server,
            Legacy::Refuse
        ),
        Ok(())
    );
    for file in ["sha1-client", "rsa1024-client"] {
        assert_eq!(
            validate_as("rsa", &p(file), Purpose::Client, Legacy::Allow),
            Ok(()),
            "{file} with legacy"
        );
    }
    // The example certificates carry serverAuth, clientAuth and ipsecIKE,
    // as strongSwan's documentation makes them: good in both roles.
    for kind in ["ecdsa", "rsa"] {
        for (file, purpose) in [
            ("client.pem", Purpose::Client),
            ("client.pem", Purpose::Server),
            ("broker.pem", Purpose::Server),
        ] {
            assert_eq!(
                validate_as(kind, &format!("{kind}/{file}"), purpose, Legacy::Refuse),
                Ok(()),
                "{kind}/{file} as {purpose:?}"
            );
        }
    }
}

fn crl(file: &str) -> Vec<u8> {
    let bytes = std::fs::read(common::certs_dir().join("policy").join(file)).unwrap();
    crl_from_file(&bytes).unwrap()
}

fn revocation_check(revocations: &Revocations, file: &str) -> Result<(), CertError> {
    let chain = common::certs(file);
    let valid = anchors("ecdsa").validate(&chain, common::NOW, Purpose::Client, Legacy::Refuse)?;
    let identity = match_identity(valid.leaf, &Identification::rfc822("client@example.net"))?;
    revocations.check(&valid.path, &identity)
}

#[test]
fn revoked_by_crl_in_pem_and_der() {
    for file in ["crl.pem", "crl.der"] {
        let mut r = Revocations::new();
        let summary = r
            .add_crl(&anchors("ecdsa"), &crl(file), common::NOW)
            .unwrap();
        assert_eq!(summary.revoked, 1, "{file}");
        assert!(!summary.stale);
        assert!(
            summary.issuer.contains("sixgate example CA (ecdsa)"),
            "{summary:?}"
        );
        assert_eq!(
            revocation_check(&r, "policy/revoked-client.pem"),
            Err(CertError::RevokedByCrl),
            "{file}"
        );
        assert_eq!(revocation_check(&r, "ecdsa/client.pem"), Ok(()), "{file}");
    }
}

#[test]
fn a_crl_must_come_from_an_anchor_and_may_be_stale() {
    let mut r = Revocations::new();
    assert_eq!(
        r.add_crl(&anchors("ecdsa"), &crl("crl-rogue.pem"), common::NOW),
        Err(CertError::BadSignature),
        "the CA's name with another key"
    );
    assert_eq!(
        r.add_crl(&anchors("rsa"), &crl("crl.pem"), common::NOW),
        Err(CertError::UnknownIssuer)
    );
    assert!(r.is_empty());
    let stale = r
        .add_crl(&anchors("ecdsa"), &crl("crl-stale.pem"), common::NOW)
        .unwrap();
    assert!(stale.stale, "nextUpdate 2025-06-01 is past");
    assert_eq!(
        revocation_check(&r, "policy/revoked-client.pem"),
        Err(CertError::RevokedByCrl),
        "a stale CRL still revokes"
    );
}

#[test]
fn revoked_by_the_operators_list() {
    let mut by_identity = Revocations::new();
    by_identity.revoke_identity(CanonicalIdentity::parse("client@EXAMPLE.net").unwrap());
    assert_eq!(
        revocation_check(&by_identity, "ecdsa/client.pem"),
        Err(CertError::Revoked)
    );
    assert_eq!(
        revocation_check(&by_identity, "ecdsa/client2.pem"),
        Err(CertError::IdentityMismatch),
        "(client2's certificate does not prove client@)"
    );

    // The example client certificate has serial 0x1002.
    let mut by_serial = Revocations::new();
    by_serial.revoke_serial(&parse_serial("10:02").unwrap());
    assert_eq!(
        revocation_check(&by_serial, "ecdsa/client.pem"),
        Err(CertError::Revoked)
    );
    assert_eq!(
        revocation_check(&by_serial, "policy/revoked-client.pem"),
        Ok(()),
        "another serial"
    );
}
