//! The AUTH payload: what is signed (RFC 7296 2.15), how it is signed with
//! our private key, and how the peer's signature is checked against its
//! certificate, for the classic methods (1, 9, 10) and RFC 7427 digital
//! signatures (14).
//!
//! For method 14 the signature algorithm travels with the signature as a
//! DER AlgorithmIdentifier; we accept the RSA PKCS#1 v1.5 and RSASSA-PSS
//! variants with SHA-2 and ECDSA with SHA-2 (whose signatures are then DER,
//! not the fixed r|s of methods 9-11). We sign with PKCS#1 v1.5 for RSA,
//! which is what strongSwan, iOS and Android verify by default.

use ring::signature::{self, KeyPair};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;

use crate::codec::{PutExt, Reader};
use crate::crypto::{Legacy, Prf};
use crate::error::{InvalidMessage, PeerIncompatible, PeerMisbehaved};
use crate::wire::{AuthMethod, Authentication, HashAlgorithm};

/// The octets a signature covers (RFC 7296 2.15):
/// `RealMessage | Nonce(peer) | prf(SK_p, ID')`, where RealMessage is the
/// signer's IKE_SA_INIT message, the nonce is the other side's, and ID' is
/// the signer's ID payload body.
pub fn signed_octets(
    real_message: &[u8],
    peer_nonce: &[u8],
    prf: Prf,
    sk_p: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let mac = prf.compute(sk_p, &[id_body]);
    let mut out = Vec::with_capacity(real_message.len() + peer_nonce.len() + mac.len());
    out.extend_from_slice(real_message);
    out.extend_from_slice(peer_nonce);
    out.extend_from_slice(&mac);
    out
}

/// The payload data of a SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 4).
pub fn hash_algorithms_notify(algs: &[HashAlgorithm]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * algs.len());
    for a in algs {
        out.put_u16(a.0);
    }
    out
}

/// Reads a SIGNATURE_HASH_ALGORITHMS notify.
pub fn parse_hash_algorithms(data: &[u8]) -> Result<Vec<HashAlgorithm>, InvalidMessage> {
    if !data.len().is_multiple_of(2) {
        return Err(InvalidMessage::BadLength("SIGNATURE_HASH_ALGORITHMS"));
    }
    let mut r = Reader::new(data, "SIGNATURE_HASH_ALGORITHMS");
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(HashAlgorithm(r.u16()?));
    }
    Ok(out)
}

/// The signature algorithms of RFC 7427 we know, each with its DER
/// AlgorithmIdentifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SignatureScheme {
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
}

// Object identifiers, DER content octets.
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_PKCS1: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const OID_ECDSA_SHA2: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];

fn pkcs1_oid(last: u8) -> Vec<u8> {
    let mut oid = OID_PKCS1.to_vec();
    oid.push(last);
    oid
}

/// Appends a DER TLV with a short or long-form length.
fn der(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
}

/// AlgorithmIdentifier { OID, parameters }, where `params` is already DER.
fn algorithm_identifier(oid: &[u8], params: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    der(0x06, oid, &mut body);
    body.extend_from_slice(params);
    let mut out = Vec::new();
    der(0x30, &body, &mut out);
    out
}

const DER_NULL: &[u8] = &[0x05, 0x00];

impl SignatureScheme {
    fn hash_oid(self) -> &'static [u8] {
        use SignatureScheme::*;
        match self {
            RsaPkcs1Sha256 | RsaPssSha256 | EcdsaSha256 => OID_SHA256,
            RsaPkcs1Sha384 | RsaPssSha384 | EcdsaSha384 => OID_SHA384,
            RsaPkcs1Sha512 | RsaPssSha512 | EcdsaSha512 => OID_SHA512,
        }
    }

    fn hash_len(self) -> u8 {
        match self.hash_oid() {
            OID_SHA256 => 32,
            OID_SHA384 => 48,
            _ => 64,
        }
    }

    /// The DER AlgorithmIdentifier RFC 7427 puts in front of the signature.
    pub fn algorithm_identifier(self) -> Vec<u8> {
        use SignatureScheme::*;
        match self {
            RsaPkcs1Sha256 => algorithm_identifier(&pkcs1_oid(11), DER_NULL),
            RsaPkcs1Sha384 => algorithm_identifier(&pkcs1_oid(12), DER_NULL),
            RsaPkcs1Sha512 => algorithm_identifier(&pkcs1_oid(13), DER_NULL),
            EcdsaSha256 => algorithm_identifier(&[&OID_ECDSA_SHA2[..], &[2]].concat(), &[]),
            EcdsaSha384 => algorithm_identifier(&[&OID_ECDSA_SHA2[..], &[3]].concat(), &[]),
            EcdsaSha512 => algorithm_identifier(&[&OID_ECDSA_SHA2[..], &[4]].concat(), &[]),
            RsaPssSha256 | RsaPssSha384 | RsaPssSha512 => {
                // RSASSA-PSS-params: hash, MGF1 with the same hash, salt
                // length equal to the hash length; trailer field default.
                let hash = algorithm_identifier(self.hash_oid(), DER_NULL);
                let mgf1 = algorithm_identifier(&pkcs1_oid(8), &hash);
                let mut params = Vec::new();
                der(0xa0, &hash, &mut params);
                der(0xa1, &mgf1, &mut params);
                let mut salt = Vec::new();
                der(0x02, &[self.hash_len()], &mut salt);
                der(0xa2, &salt, &mut params);
                let mut seq = Vec::new();
                der(0x30, &params, &mut seq);
                algorithm_identifier(&pkcs1_oid(10), &seq)
            }
        }
    }

    /// Recognises a peer's AlgorithmIdentifier. Parameters of the PKCS#1
    /// and ECDSA forms are not compared (absent and NULL both occur in the
    /// wild); for PSS only the hash is read: a mismatching MGF or salt
    /// length makes the signature fail to verify instead.
    pub fn from_algorithm_identifier(der: &[u8]) -> Option<SignatureScheme> {
        use SignatureScheme::*;
        let mut r = Reader::new(der, "AlgorithmIdentifier");
        let mut seq = der_tlv(&mut r, 0x30)?;
        r.finish().ok()?;
        let oid = der_tlv(&mut seq, 0x06)?.rest();
        if let Some(last) = oid.strip_prefix(&OID_PKCS1[..]) {
            return match last {
                [11] => Some(RsaPkcs1Sha256),
                [12] => Some(RsaPkcs1Sha384),
                [13] => Some(RsaPkcs1Sha512),
                [10] => {
                    let mut params = der_tlv(&mut seq, 0x30)?;
                    let mut hash_field = der_tlv(&mut params, 0xa0)?;
                    let mut hash_alg = der_tlv(&mut hash_field, 0x30)?;
                    match der_tlv(&mut hash_alg, 0x06)?.rest() {
                        OID_SHA256 => Some(RsaPssSha256),
                        OID_SHA384 => Some(RsaPssSha384),
                        OID_SHA512 => Some(RsaPssSha512),
                        _ => None,
                    }
                }
                _ => None,
            };
        }
        match oid.strip_prefix(&OID_ECDSA_SHA2[..])? {
            [2] => Some(EcdsaSha256),
            [3] => Some(EcdsaSha384),
            [4] => Some(EcdsaSha512),
            _ => None,
        }
    }
}

/// Reads one DER TLV with the given tag and returns a reader over its content.
fn der_tlv<'a>(r: &mut Reader<'a>, tag: u8) -> Option<Reader<'a>> {
    if r.u8().ok()? != tag {
        return None;
    }
    let first = r.u8().ok()?;
    let len = match first {
        0..=0x7f => usize::from(first),
        0x81 => usize::from(r.u8().ok()?),
        0x82 => usize::from(r.u16().ok()?),
        _ => return None,
    };
    r.sub(len, "DER value").ok()
}

/// The kind of key in a certificate, with the raw public key ring verifies with.
enum PeerKey<'a> {
    Rsa(&'a [u8]),
    EcP256(&'a [u8]),
    EcP384(&'a [u8]),
}

fn peer_key<'a>(cert: &'a X509Certificate<'a>) -> Result<PeerKey<'a>, PeerIncompatible> {
    let spki = cert.public_key();
    let key = spki.subject_public_key.data.as_ref();
    if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
        return Ok(PeerKey::Rsa(key));
    }
    if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve == Some(OID_EC_P256) {
            return Ok(PeerKey::EcP256(key));
        }
        if curve == Some(OID_NIST_EC_P384) {
            return Ok(PeerKey::EcP384(key));
        }
    }
    Err(PeerIncompatible::UnsupportedAuthentication(
        "certificate key type",
    ))
}

/// Why an AUTH payload was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The method or algorithm is one we do not verify.
    #[error(transparent)]
    Unsupported(#[from] PeerIncompatible),
    /// The signature is wrong.
    #[error(transparent)]
    Bad(#[from] PeerMisbehaved),
}

/// Verifies the peer's AUTH payload over `octets` with the key of its
/// certificate `cert_der` (already validated).
pub fn verify(
    auth: &Authentication,
    octets: &[u8],
    cert_der: &[u8],
    legacy: Legacy,
) -> Result<(), AuthError> {
    let unsupported =
        |what| AuthError::Unsupported(PeerIncompatible::UnsupportedAuthentication(what));
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|_| unsupported("certificate"))?;
    let key = peer_key(&cert)?;
    let (alg, sig): (&dyn signature::VerificationAlgorithm, &[u8]) = match (auth.method, &key) {
        (AuthMethod::RSA_SIG, PeerKey::Rsa(_)) if legacy == Legacy::Allow => (
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            &auth.data,
        ),
        (AuthMethod::ECDSA_SHA256_P256, PeerKey::EcP256(_)) => {
            (&signature::ECDSA_P256_SHA256_FIXED, &auth.data)
        }
        (AuthMethod::ECDSA_SHA384_P384, PeerKey::EcP384(_)) => {
            (&signature::ECDSA_P384_SHA384_FIXED, &auth.data)
        }
        (AuthMethod::DIGITAL_SIGNATURE, _) => {
            let [len, rest @ ..] = auth.data.as_slice() else {
                return Err(PeerMisbehaved::AuthenticationFailed.into());
            };
            if rest.len() < usize::from(*len) {
                return Err(PeerMisbehaved::AuthenticationFailed.into());
            }
            let (alg_id, sig) = rest.split_at(usize::from(*len));
            let scheme = SignatureScheme::from_algorithm_identifier(alg_id)
                .ok_or_else(|| unsupported("signature algorithm"))?;
            use SignatureScheme::*;
            let alg: &dyn signature::VerificationAlgorithm = match (scheme, &key) {
                (RsaPkcs1Sha256, PeerKey::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (RsaPkcs1Sha384, PeerKey::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA384,
                (RsaPkcs1Sha512, PeerKey::Rsa(_)) => &signature::RSA_PKCS1_2048_8192_SHA512,
                (RsaPssSha256, PeerKey::Rsa(_)) => &signature::RSA_PSS_2048_8192_SHA256,
                (RsaPssSha384, PeerKey::Rsa(_)) => &signature::RSA_PSS_2048_8192_SHA384,
                (RsaPssSha512, PeerKey::Rsa(_)) => &signature::RSA_PSS_2048_8192_SHA512,
                (EcdsaSha256, PeerKey::EcP256(_)) => &signature::ECDSA_P256_SHA256_ASN1,
                (EcdsaSha384, PeerKey::EcP256(_)) => &signature::ECDSA_P256_SHA384_ASN1,
                (EcdsaSha256, PeerKey::EcP384(_)) => &signature::ECDSA_P384_SHA256_ASN1,
                (EcdsaSha384, PeerKey::EcP384(_)) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => return Err(unsupported("signature algorithm for this key")),
            };
            (alg, sig)
        }
        _ => return Err(unsupported("authentication method for this key")),
    };
    let raw = match key {
        PeerKey::Rsa(k) | PeerKey::EcP256(k) | PeerKey::EcP384(k) => k,
    };
    signature::UnparsedPublicKey::new(alg, raw)
        .verify(octets, sig)
        .map_err(|_| PeerMisbehaved::AuthenticationFailed.into())
}

/// Our private key, for signing AUTH payloads.
pub enum PrivateKey {
    /// An RSA key.
    Rsa(signature::RsaKeyPair),
    /// An ECDSA P-256 key (kept twice, for the DER and fixed encodings).
    EcP256(signature::EcdsaKeyPair, signature::EcdsaKeyPair),
    /// An ECDSA P-384 key.
    EcP384(signature::EcdsaKeyPair, signature::EcdsaKeyPair),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivateKey::Rsa(_) => "PrivateKey::Rsa",
            PrivateKey::EcP256(..) => "PrivateKey::EcP256",
            PrivateKey::EcP384(..) => "PrivateKey::EcP384",
        })
    }
}

/// Why a private key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key in the PEM data.
    #[error("no private key found in PEM data")]
    Missing,
    /// A key that is not RSA, P-256 or P-384 in PKCS#8 or PKCS#1 form.
    #[error("unsupported private key: {0}")]
    Unsupported(&'static str),
}

impl PrivateKey {
    /// Loads the first private key of a PEM file (PKCS#8, or PKCS#1 RSA).
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        let mut reader = pem;
        let key = rustls_pemfile::private_key(&mut reader)
            .map_err(|_| KeyError::Missing)?
            .ok_or(KeyError::Missing)?;
        let rng = ring::rand::SystemRandom::new();
        use rustls_pki_types::PrivateKeyDer;
        match key {
            PrivateKeyDer::Pkcs1(k) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(PrivateKey::Rsa)
                .map_err(|_| KeyError::Unsupported("RSA key rejected")),
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(rsa) = signature::RsaKeyPair::from_pkcs8(der) {
                    return Ok(PrivateKey::Rsa(rsa));
                }
                let ec =
                    |asn1, fixed| -> Option<(signature::EcdsaKeyPair, signature::EcdsaKeyPair)> {
                        Some((
                            signature::EcdsaKeyPair::from_pkcs8(asn1, der, &rng).ok()?,
                            signature::EcdsaKeyPair::from_pkcs8(fixed, der, &rng).ok()?,
                        ))
                    };
                if let Some((a, f)) = ec(
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                ) {
                    return Ok(PrivateKey::EcP256(a, f));
                }
                if let Some((a, f)) = ec(
                    &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                ) {
                    return Ok(PrivateKey::EcP384(a, f));
                }
                Err(KeyError::Unsupported(
                    "PKCS#8 key is not RSA, P-256 or P-384",
                ))
            }
            _ => Err(KeyError::Unsupported("convert SEC1 keys to PKCS#8")),
        }
    }

    /// The public key, as the certificate's subjectPublicKey holds it.
    pub fn public_key(&self) -> &[u8] {
        match self {
            PrivateKey::Rsa(k) => k.public_key().as_ref(),
            PrivateKey::EcP256(k, _) | PrivateKey::EcP384(k, _) => k.public_key().as_ref(),
        }
    }

    /// Signs `octets` into an AUTH payload. With `digital_signature` (the
    /// peer announced SIGNATURE_HASH_ALGORITHMS) this is method 14;
    /// otherwise the classic method of the key type, which for RSA would be
    /// SHA-1 and is refused.
    pub fn sign(
        &self,
        octets: &[u8],
        digital_signature: bool,
    ) -> Result<Authentication, PeerIncompatible> {
        let rng = ring::rand::SystemRandom::new();
        let failed = PeerIncompatible::UnsupportedAuthentication("signing failed");
        let (method, scheme, sig) = match (self, digital_signature) {
            (PrivateKey::Rsa(k), true) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, octets, &mut sig)
                    .map_err(|_| failed)?;
                (
                    AuthMethod::DIGITAL_SIGNATURE,
                    Some(SignatureScheme::RsaPkcs1Sha256),
                    sig,
                )
            }
            (PrivateKey::Rsa(_), false) => {
                return Err(PeerIncompatible::UnsupportedAuthentication(
                    "peer does not support RFC 7427 signatures; RSA method 1 needs SHA-1",
                ))
            }
            (PrivateKey::EcP256(k, _), true) | (PrivateKey::EcP384(k, _), true) => {
                let scheme = if matches!(self, PrivateKey::EcP256(..)) {
                    SignatureScheme::EcdsaSha256
                } else {
                    SignatureScheme::EcdsaSha384
                };
                let sig = k.sign(&rng, octets).map_err(|_| failed)?;
                (
                    AuthMethod::DIGITAL_SIGNATURE,
                    Some(scheme),
                    sig.as_ref().to_vec(),
                )
            }
            (PrivateKey::EcP256(_, k), false) => {
                let sig = k.sign(&rng, octets).map_err(|_| failed)?;
                (AuthMethod::ECDSA_SHA256_P256, None, sig.as_ref().to_vec())
            }
            (PrivateKey::EcP384(_, k), false) => {
                let sig = k.sign(&rng, octets).map_err(|_| failed)?;
                (AuthMethod::ECDSA_SHA384_P384, None, sig.as_ref().to_vec())
            }
        };
        let data = match scheme {
            Some(scheme) => {
                let alg_id = scheme.algorithm_identifier();
                let mut data = Vec::with_capacity(1 + alg_id.len() + sig.len());
                data.push(alg_id.len() as u8);
                data.extend_from_slice(&alg_id);
                data.extend_from_slice(&sig);
                data
            }
            None => sig,
        };
        Ok(Authentication { method, data })
    }
}
