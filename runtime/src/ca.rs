//! A certificate authority of sixgate's own (rcgen): a CA key and
//! certificate, and the client and broker certificates the stock clients
//! accept (a SAN that is the IKE identity, keyUsage digitalSignature, and
//! the extended key usages each side is checked for).
//!
//! Keys are ECDSA P-256. Everything comes out as PEM, ready for the
//! configuration files, and stays in memory otherwise: where it is written
//! (0600, in a 0700 directory) is the caller's decision.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
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

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub certificate: String,
    /// Its key (PKCS#8).
    pub private_key: String,
}

/// A CA: its parameters, key and certificate.
pub struct CertificateAuthority {
    params: CertificateParams,
    key: KeyPair,
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
    pub fn generate(name: &str, days: u32) -> Result<CertificateAuthority, String> {
        let key = KeyPair::generate().map_err(err)?;
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
            params,
            key,
            certificate,
        })
    }

    /// The CA's certificate.
    pub fn certificate(&self) -> &str {
        &self.certificate
    }

    /// The CA's private key.
    pub fn private_key(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `identity` (its SAN), valid for `days`.
    pub fn issue(
        &self,
        identity: &CanonicalIdentity,
        usage: Usage,
        days: u32,
    ) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(err)?;
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
        validity(&mut params, days);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer).map_err(err)?.pem();
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
        let ca = CertificateAuthority::generate("sixgate test CA", 30).unwrap();
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
            let issued = ca.issue(&id, usage, 30).unwrap();
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
