//! A certificate authority of sixgate's own (rcgen): a CA key and
//! certificate, and the client and broker certificates the stock clients
//! accept (a SAN that is the IKE identity, keyUsage digitalSignature, and
//! the extended key usages each side is checked for).
//!
//! Keys are ECDSA P-256, or RSA for the clients that want RSA (3072 bits
//! for a CA, 2048 for the certificates it issues, which every stock client
//! takes). A CA is made here or read back from PEM (its own files, or an
//! imported CA's). Everything comes out as PEM, ready for the
//! configuration files, and stays in memory otherwise: where it is written
//! (0600, in a 0700 directory) is the caller's decision.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::EncodePrivateKey as _;
use sixgate_proto::identity::{CanonicalIdentity, IdentityKind};

/// The "IP security IKE intermediate" EKU Windows and macOS look for on a
/// VPN server's certificate (1.3.6.1.5.5.8.2.2).
pub const EKU_IKE_INTERMEDIATE: [u64; 9] = [1, 3, 6, 1, 5, 5, 8, 2, 2];

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A road warrior: clientAuth only (not id-kp-ipsecIKE, which would
    /// make it good for a server too).
    Client,
    /// The broker: serverAuth and the IKE-intermediate EKU.
    Broker,
}

/// The kind of key a certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256, signing with SHA-256.
    EcdsaP256,
    /// RSA (PKCS#1 v1.5 signatures with SHA-256).
    Rsa,
}

/// RSA modulus sizes: a CA lives longer than what it issues.
const RSA_CA_BITS: usize = 3072;
const RSA_LEAF_BITS: usize = 2048;

fn generate_key(kind: KeyKind, rsa_bits: usize) -> Result<KeyPair, String> {
    match kind {
        KeyKind::EcdsaP256 => KeyPair::generate().map_err(err),
        KeyKind::Rsa => {
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, rsa_bits)
                .map_err(|e| format!("generating an RSA key: {e}"))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| format!("encoding an RSA key: {e}"))?;
            KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &rcgen::PKCS_RSA_SHA256)
                .map_err(err)
        }
    }
}

/// A private key from PEM: PKCS#8 as it is, PKCS#1 RSA converted (what
/// older openssl commands write).
fn key_from_pem(pem: &str) -> Result<KeyPair, String> {
    if pem.contains("BEGIN RSA PRIVATE KEY") {
        let key = rsa::PrivateKey::from_pkcs1_pem(pem).map_err(|e| format!("RSA key: {e}"))?;
        let der = key.to_pkcs8_der().map_err(|e| format!("RSA key: {e}"))?;
        return KeyPair::from_pkcs8_der_and_sign_algo(
            &der.as_bytes().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(err);
    }
    if pem.contains("BEGIN EC PRIVATE KEY") {
        return Err(
            "an EC key in SEC1 form: convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        );
    }
    KeyPair::from_pem(pem).map_err(err)
}

/// A DER certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub certificate: String,
    /// Its key (PKCS#8).
    pub private_key: String,
}

/// A CA: its name and key as an issuer, and its certificate.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate: String,
}

fn err(e: rcgen::Error) -> String {
    format!("certificate: {e}")
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now();
    // A little in the past, for clocks that are a little behind.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86400)).into();
}

impl CertificateAuthority {
    /// A new CA called `name`, valid for `days`.
    pub fn generate(name: &str, kind: KeyKind, days: u32) -> Result<CertificateAuthority, String> {
        let key = generate_key(kind, RSA_CA_BITS)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let certificate = params.self_signed(&key).map_err(err)?.pem();
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
            certificate,
        })
    }

    /// A CA from its certificate and key (PEM), checking that they belong
    /// together and that the certificate is a CA's.
    pub fn from_pem(certificate: &str, private_key: &str) -> Result<CertificateAuthority, String> {
        use x509_parser::prelude::FromDer;
        let key = key_from_pem(private_key)?;
        let der = sixgate_proto::cert::certificates_from_pem(certificate.as_bytes())
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or("no certificate in the file")?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| format!("the certificate: {e}"))?;
        if !cert.is_ca() {
            return Err("the certificate is not a CA's (no basicConstraints CA:TRUE)".into());
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err("the key does not belong to the certificate".into());
        }
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(err)?;
        Ok(CertificateAuthority {
            issuer,
            certificate: certificate_pem(&der),
        })
    }

    /// The CA's certificate.
    pub fn certificate(&self) -> &str {
        &self.certificate
    }

    /// The CA's private key.
    pub fn private_key(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `identity` (its SAN), valid from an hour ago for
    /// `days`.
    pub fn issue(
        &self,
        identity: &CanonicalIdentity,
        usage: Usage,
        kind: KeyKind,
        days: u32,
    ) -> Result<Issued, String> {
        let now = SystemTime::now();
        let not_after = now + Duration::from_secs(u64::from(days) * 86400);
        self.issue_between(
            identity,
            usage,
            kind,
            now - Duration::from_secs(3600),
            not_after,
        )
    }

    /// A certificate for `identity` valid from `not_before` to `not_after`
    /// (which may be in the past, for tests of expiry).
    pub fn issue_between(
        &self,
        identity: &CanonicalIdentity,
        usage: Usage,
        kind: KeyKind,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, String> {
        let key = generate_key(kind, RSA_LEAF_BITS)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.as_str());
        params.distinguished_name = dn;
        let san = match identity.kind() {
            IdentityKind::Fqdn => SanType::DnsName(identity.as_str().try_into().map_err(err)?),
            IdentityKind::Rfc822 => SanType::Rfc822Name(identity.as_str().try_into().map_err(err)?),
            IdentityKind::Address => SanType::IpAddress(
                identity
                    .as_str()
                    .parse()
                    .map_err(|_| format!("{identity} is not an address"))?,
            ),
            _ => {
                return Err(format!(
                    "{identity}: only names and addresses get certificates here"
                ))
            }
        };
        params.subject_alt_names = vec![san];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Broker => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::Other(EKU_IKE_INTERMEDIATE.to_vec()),
            ],
        };
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let certificate = params.signed_by(&key, &self.issuer).map_err(err)?.pem();
        Ok(Issued {
            certificate,
            private_key: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sixgate_proto::cert::{
        certificates_from_pem, match_identity, CertError, Purpose, TrustAnchors,
    };
    use sixgate_proto::crypto::Legacy;

    #[test]
    fn issued_certificates_chain_to_the_ca_and_prove_their_identity() {
        let ca = CertificateAuthority::generate("sixgate test CA", KeyKind::EcdsaP256, 30).unwrap();
        let anchors =
            TrustAnchors::new(certificates_from_pem(ca.certificate().as_bytes()).unwrap()).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (who, usage, purpose, other) in [
            (
                "alice@example.net",
                Usage::Client,
                Purpose::Client,
                Purpose::Server,
            ),
            (
                "vpn.example.net",
                Usage::Broker,
                Purpose::Server,
                Purpose::Client,
            ),
        ] {
            let id = CanonicalIdentity::parse(who).unwrap();
            let issued = ca.issue(&id, usage, KeyKind::EcdsaP256, 30).unwrap();
            let chain = certificates_from_pem(issued.certificate.as_bytes()).unwrap();
            let valid = anchors
                .validate(&chain, now, purpose, Legacy::Refuse)
                .unwrap();
            assert_eq!(
                match_identity(valid.leaf, &id.to_wire().unwrap()).unwrap(),
                id
            );
            // A client's certificate does not make a broker, nor the reverse.
            assert_eq!(
                anchors
                    .validate(&chain, now, other, Legacy::Refuse)
                    .map(|_| ()),
                Err(CertError::ExtendedKeyUsage(other)),
                "{who}"
            );
            sixgate_proto::auth::PrivateKey::from_pem(issued.private_key.as_bytes()).unwrap();
        }
    }
}
