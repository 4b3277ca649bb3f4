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
    /// ECDSA with hash `h` (SHA-256 for anything unknown).
    fn ecdsa(h: HashAlgorithm) -> SignatureScheme {
        match h {
            HashAlgorithm::SHA2_384 => SignatureScheme::EcdsaSha384,
            HashAlgorithm::SHA2_512 => SignatureScheme::EcdsaSha512,
            _ => SignatureScheme::EcdsaSha256,
        }
    }

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

/// The kind of key in a certificate, with its raw public key.
enum PeerKey<'a> {
    Rsa(&'a [u8]),
    EcP256(p256::ecdsa::VerifyingKey, &'a [u8]),
    EcP384(p384::ecdsa::VerifyingKey, &'a [u8]),
}

fn peer_key<'a>(cert: &'a X509Certificate<'a>) -> Result<PeerKey<'a>, PeerIncompatible> {
    let spki = cert.public_key();
    let key = spki.subject_public_key.data.as_ref();
    let bad = PeerIncompatible::UnsupportedAuthentication("certificate key");
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
            return p256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .map(|k| PeerKey::EcP256(k, key))
                .map_err(|_| bad);
        }
        if curve == Some(OID_NIST_EC_P384) {
            return p384::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .map(|k| PeerKey::EcP384(k, key))
                .map_err(|_| bad);
        }
    }
    Err(PeerIncompatible::UnsupportedAuthentication(
        "certificate key type",
    ))
}

/// Why an AUTH payload was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The method or algorithm is one we do not verify.
    #[error(transparent)]
    Unsupported(#[from] PeerIncompatible),
    /// The signature is wrong.
    #[error(transparent)]
    Bad(#[from] PeerMisbehaved),
}

/// A SHA-2 digest, for ECDSA over any of them (RFC 7427 lets either
/// curve be used with SHA-256, -384 or -512; libreswan picks SHA-512).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sha2 {
    Sha256,
    Sha384,
    Sha512,
}

impl Sha2 {
    fn digest(self, octets: &[u8]) -> ring::digest::Digest {
        let alg = match self {
            Sha2::Sha256 => &ring::digest::SHA256,
            Sha2::Sha384 => &ring::digest::SHA384,
            Sha2::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, octets)
    }
}

/// An ECDSA signature as the AUTH payload carries it: fixed `r | s`
/// (methods 9 and 10) or DER (method 14).
#[derive(Clone, Copy)]
enum EcdsaEncoding {
    Fixed,
    Der,
}

fn verify_ecdsa(
    key: &PeerKey<'_>,
    hash: Sha2,
    octets: &[u8],
    sig: &[u8],
    encoding: EcdsaEncoding,
) -> Result<(), AuthError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let bad = || AuthError::Bad(PeerMisbehaved::AuthenticationFailed);
    // ring where it has the combination (every one but SHA-512, which
    // libreswan may pick): several times faster than the portable curves.
    let ring_alg: Option<(&'static signature::EcdsaVerificationAlgorithm, &[u8])> =
        match (key, hash, encoding) {
            (PeerKey::EcP256(_, k), Sha2::Sha256, EcdsaEncoding::Fixed) => {
                Some((&signature::ECDSA_P256_SHA256_FIXED, k))
            }
            (PeerKey::EcP256(_, k), Sha2::Sha256, EcdsaEncoding::Der) => {
                Some((&signature::ECDSA_P256_SHA256_ASN1, k))
            }
            (PeerKey::EcP256(_, k), Sha2::Sha384, EcdsaEncoding::Der) => {
                Some((&signature::ECDSA_P256_SHA384_ASN1, k))
            }
            (PeerKey::EcP384(_, k), Sha2::Sha384, EcdsaEncoding::Fixed) => {
                Some((&signature::ECDSA_P384_SHA384_FIXED, k))
            }
            (PeerKey::EcP384(_, k), Sha2::Sha384, EcdsaEncoding::Der) => {
                Some((&signature::ECDSA_P384_SHA384_ASN1, k))
            }
            (PeerKey::EcP384(_, k), Sha2::Sha256, EcdsaEncoding::Der) => {
                Some((&signature::ECDSA_P384_SHA256_ASN1, k))
            }
            _ => None,
        };
    if let Some((alg, raw)) = ring_alg {
        return signature::UnparsedPublicKey::new(alg, raw)
            .verify(octets, sig)
            .map_err(|_| bad());
    }
    let prehash = hash.digest(octets);
    let ok = match (key, encoding) {
        (PeerKey::EcP256(k, _), EcdsaEncoding::Fixed) => p256::ecdsa::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_prehash(prehash.as_ref(), &s).is_ok()),
        (PeerKey::EcP256(k, _), EcdsaEncoding::Der) => p256::ecdsa::Signature::from_der(sig)
            .is_ok_and(|s| k.verify_prehash(prehash.as_ref(), &s).is_ok()),
        (PeerKey::EcP384(k, _), EcdsaEncoding::Fixed) => p384::ecdsa::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_prehash(prehash.as_ref(), &s).is_ok()),
        (PeerKey::EcP384(k, _), EcdsaEncoding::Der) => p384::ecdsa::Signature::from_der(sig)
            .is_ok_and(|s| k.verify_prehash(prehash.as_ref(), &s).is_ok()),
        (PeerKey::Rsa(_), _) => return Err(bad()),
    };
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn verify_rsa(
    alg: &'static dyn signature::VerificationAlgorithm,
    key: &[u8],
    octets: &[u8],
    sig: &[u8],
) -> Result<(), AuthError> {
    signature::UnparsedPublicKey::new(alg, key)
        .verify(octets, sig)
        .map_err(|_| PeerMisbehaved::AuthenticationFailed.into())
}

/// Verifies the peer's AUTH payload over `octets` with the key of its
/// certificate `cert_der` (already validated). Method 1 (RSA with SHA-1)
/// is accepted only with `legacy`.
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
    use EcdsaEncoding::{Der, Fixed};
    match (auth.method, &key) {
        (AuthMethod::RSA_SIG, PeerKey::Rsa(k)) if legacy == Legacy::Allow => verify_rsa(
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            k,
            octets,
            &auth.data,
        ),
        (AuthMethod::RSA_SIG, PeerKey::Rsa(_)) => Err(unsupported(
            "RSA authentication method 1 uses SHA-1; the peer sent no SIGNATURE_HASH_ALGORITHMS (set `legacy = true` to accept it)",
        )),
        (AuthMethod::ECDSA_SHA256_P256, PeerKey::EcP256(..)) => {
            verify_ecdsa(&key, Sha2::Sha256, octets, &auth.data, Fixed)
        }
        (AuthMethod::ECDSA_SHA384_P384, PeerKey::EcP384(..)) => {
            verify_ecdsa(&key, Sha2::Sha384, octets, &auth.data, Fixed)
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
            match (scheme, &key) {
                (RsaPkcs1Sha256, PeerKey::Rsa(k)) => {
                    verify_rsa(&signature::RSA_PKCS1_2048_8192_SHA256, k, octets, sig)
                }
                (RsaPkcs1Sha384, PeerKey::Rsa(k)) => {
                    verify_rsa(&signature::RSA_PKCS1_2048_8192_SHA384, k, octets, sig)
                }
                (RsaPkcs1Sha512, PeerKey::Rsa(k)) => {
                    verify_rsa(&signature::RSA_PKCS1_2048_8192_SHA512, k, octets, sig)
                }
                (RsaPssSha256, PeerKey::Rsa(k)) => {
                    verify_rsa(&signature::RSA_PSS_2048_8192_SHA256, k, octets, sig)
                }
                (RsaPssSha384, PeerKey::Rsa(k)) => {
                    verify_rsa(&signature::RSA_PSS_2048_8192_SHA384, k, octets, sig)
                }
                (RsaPssSha512, PeerKey::Rsa(k)) => {
                    verify_rsa(&signature::RSA_PSS_2048_8192_SHA512, k, octets, sig)
                }
                (EcdsaSha256, PeerKey::EcP256(..) | PeerKey::EcP384(..)) => {
                    verify_ecdsa(&key, Sha2::Sha256, octets, sig, Der)
                }
                (EcdsaSha384, PeerKey::EcP256(..) | PeerKey::EcP384(..)) => {
                    verify_ecdsa(&key, Sha2::Sha384, octets, sig, Der)
                }
                (EcdsaSha512, PeerKey::EcP256(..) | PeerKey::EcP384(..)) => {
                    verify_ecdsa(&key, Sha2::Sha512, octets, sig, Der)
                }
                _ => Err(unsupported("signature algorithm for this key")),
            }
        }
        _ => Err(unsupported("authentication method for this key")),
    }
}

/// The hashes [`verify`] accepts in RFC 7427 signatures, for
/// SIGNATURE_HASH_ALGORITHMS: every one announced can be verified.
pub const VERIFIED_HASHES: [HashAlgorithm; 3] = [
    HashAlgorithm::SHA2_256,
    HashAlgorithm::SHA2_384,
    HashAlgorithm::SHA2_512,
];

/// Our private key, for signing AUTH payloads. ECDSA signatures use RFC
/// 6979 deterministic nonces, so a signature depends on the key and the
/// octets alone: seeded test runs are the same byte for byte, and no
/// random generator can leak the key through a repeated nonce.
pub enum PrivateKey {
    /// An RSA key: ring's for the SHA-2 signatures, and the same key for
    /// RustCrypto's `rsa`, which makes the SHA-1 signatures of method 1
    /// (ring makes none).
    Rsa(
        signature::RsaKeyPair,
        Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>,
    ),
    /// An ECDSA P-256 key.
    EcP256(Box<EcP256Key>),
    /// An ECDSA P-384 key.
    EcP384(p384::ecdsa::SigningKey),
}

/// A P-256 key, as ring signs with it (SHA-256, in both encodings) and
/// as the portable implementation does (the other hashes).
pub struct EcP256Key {
    portable: p256::ecdsa::SigningKey,
    der: signature::EcdsaKeyPair,
    fixed: signature::EcdsaKeyPair,
}

impl EcP256Key {
    fn new(portable: p256::ecdsa::SigningKey) -> Result<EcP256Key, KeyError> {
        use p256::pkcs8::EncodePrivateKey;
        let unusable = |_| KeyError::Unsupported("P-256 key rejected");
        // ring takes PKCS#8 with the public key in it: made here, whatever
        // form the key came in.
        let secret = p256::SecretKey::from(portable.as_nonzero_scalar());
        let pkcs8 = secret
            .to_pkcs8_der()
            .map_err(|_| KeyError::Unsupported("P-256 key"))?;
        let rng = ring::rand::SystemRandom::new();
        let pair = |alg| signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_bytes(), &rng);
        Ok(EcP256Key {
            der: pair(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).map_err(unusable)?,
            fixed: pair(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(unusable)?,
            portable,
        })
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivateKey::Rsa(..) => "PrivateKey::Rsa",
            PrivateKey::EcP256(..) => "PrivateKey::EcP256",
            PrivateKey::EcP384(..) => "PrivateKey::EcP384",
        })
    }
}

/// Why a private key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key in the PEM data.
    #[error("no private key found in PEM data")]
    Missing,
    /// A key that is not RSA, P-256 or P-384 in PKCS#8, PKCS#1 or SEC1 form.
    #[error("unsupported private key: {0}")]
    Unsupported(&'static str),
}

/// How to sign, from what the peer announced.
#[derive(Debug, Clone, Copy)]
pub enum SignMode<'a> {
    /// RFC 7427 (method 14) with one of these hashes, the peer's
    /// SIGNATURE_HASH_ALGORITHMS.
    DigitalSignature(&'a [HashAlgorithm]),
    /// The classic method of the key (1, 9 or 10): the peer announced no
    /// SIGNATURE_HASH_ALGORITHMS. For RSA that is SHA-1, used only when
    /// `legacy` allows it.
    Classic(Legacy),
}

impl PrivateKey {
    /// Loads the first private key of a PEM file (PKCS#8, PKCS#1 RSA, or
    /// SEC1 EC).
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        use p256::pkcs8::DecodePrivateKey;
        let mut reader = pem;
        let key = rustls_pemfile::private_key(&mut reader)
            .map_err(|_| KeyError::Missing)?
            .ok_or(KeyError::Missing)?;
        use rustls_pki_types::PrivateKeyDer;
        match key {
            PrivateKeyDer::Pkcs1(k) => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                let der = k.secret_pkcs1_der();
                let ring = signature::RsaKeyPair::from_der(der)
                    .map_err(|_| KeyError::Unsupported("RSA key rejected"))?;
                let legacy = rsa::PrivateKey::from_pkcs1_der(der)
                    .map_err(|_| KeyError::Unsupported("RSA key rejected"))?;
                Ok(PrivateKey::Rsa(
                    ring,
                    Box::new(rsa::pkcs1v15::SigningKey::new(legacy)),
                ))
            }
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(ring) = signature::RsaKeyPair::from_pkcs8(der) {
                    use rsa::pkcs8::DecodePrivateKey as _;
                    let legacy = rsa::PrivateKey::from_pkcs8_der(der)
                        .map_err(|_| KeyError::Unsupported("RSA key rejected"))?;
                    return Ok(PrivateKey::Rsa(
                        ring,
                        Box::new(rsa::pkcs1v15::SigningKey::new(legacy)),
                    ));
                }
                if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
                    return Ok(PrivateKey::EcP256(Box::new(EcP256Key::new(k)?)));
                }
                if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(der) {
                    return Ok(PrivateKey::EcP384(k));
                }
                Err(KeyError::Unsupported(
                    "PKCS#8 key is not RSA, P-256 or P-384",
                ))
            }
            PrivateKeyDer::Sec1(k) => {
                let der = k.secret_sec1_der();
                if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                    return Ok(PrivateKey::EcP256(Box::new(EcP256Key::new(k.into())?)));
                }
                if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                    return Ok(PrivateKey::EcP384(k.into()));
                }
                Err(KeyError::Unsupported("SEC1 key is not P-256 or P-384"))
            }
            _ => Err(KeyError::Unsupported("unknown private key format")),
        }
    }

    /// The public key, as the certificate's subjectPublicKey holds it.
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            PrivateKey::Rsa(k, _) => k.public_key().as_ref().to_vec(),
            PrivateKey::EcP256(k) => k
                .portable
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            PrivateKey::EcP384(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    /// Signs `octets` into an AUTH payload, as `mode` says.
    pub fn sign(
        &self,
        octets: &[u8],
        mode: SignMode<'_>,
    ) -> Result<Authentication, PeerIncompatible> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let failed = PeerIncompatible::UnsupportedAuthentication("signing failed");
        let offered = |h: HashAlgorithm| match mode {
            SignMode::DigitalSignature(hashes) => hashes.contains(&h),
            SignMode::Classic(_) => false,
        };
        // The strongest hash of the key's natural size the peer verifies,
        // else any it verifies, else SHA-256 (RFC 7427 4: every peer that
        // announces the notify must do SHA2-256).
        let pick = |natural: HashAlgorithm| {
            [
                natural,
                HashAlgorithm::SHA2_256,
                HashAlgorithm::SHA2_384,
                HashAlgorithm::SHA2_512,
            ]
            .into_iter()
            .find(|h| offered(*h))
            .unwrap_or(HashAlgorithm::SHA2_256)
        };
        let sha2 = |h: HashAlgorithm| match h {
            HashAlgorithm::SHA2_384 => Sha2::Sha384,
            HashAlgorithm::SHA2_512 => Sha2::Sha512,
            _ => Sha2::Sha256,
        };
        let (method, scheme, sig) = match (self, mode) {
            (PrivateKey::Rsa(k, _), SignMode::DigitalSignature(_)) => {
                let (enc, scheme) = match pick(HashAlgorithm::SHA2_256) {
                    HashAlgorithm::SHA2_384 => (&signature::RSA_PKCS1_SHA384, SignatureScheme::RsaPkcs1Sha384),
                    HashAlgorithm::SHA2_512 => (&signature::RSA_PKCS1_SHA512, SignatureScheme::RsaPkcs1Sha512),
                    _ => (&signature::RSA_PKCS1_SHA256, SignatureScheme::RsaPkcs1Sha256),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                // PKCS#1 v1.5 is deterministic; ring's generator only
                // blinds the computation.
                k.sign(enc, &ring::rand::SystemRandom::new(), octets, &mut sig)
                    .map_err(|_| failed)?;
                (AuthMethod::DIGITAL_SIGNATURE, Some(scheme), sig)
            }
            (PrivateKey::Rsa(_, k), SignMode::Classic(Legacy::Allow)) => {
                use rsa::signature::{hazmat::PrehashSigner as _, SignatureEncoding as _};
                let prehash =
                    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, octets);
                let sig = k.sign_prehash(prehash.as_ref()).map_err(|_| failed)?;
                (AuthMethod::RSA_SIG, None, sig.to_vec())
            }
            (PrivateKey::Rsa(..), SignMode::Classic(Legacy::Refuse)) => {
                return Err(PeerIncompatible::UnsupportedAuthentication(
                    "the peer does not announce RFC 7427 signatures, and RSA method 1 needs SHA-1 (set `legacy = true` to allow it)",
                ))
            }
            (PrivateKey::EcP256(k), SignMode::DigitalSignature(_)) => {
                let h = pick(HashAlgorithm::SHA2_256);
                let sig = if h == HashAlgorithm::SHA2_256 {
                    let rng = ring::rand::SystemRandom::new();
                    k.der.sign(&rng, octets).map_err(|_| failed)?.as_ref().to_vec()
                } else {
                    let s: p256::ecdsa::Signature = k.portable.sign_prehash(sha2(h).digest(octets).as_ref()).map_err(|_| failed)?;
                    s.to_der().as_bytes().to_vec()
                };
                (AuthMethod::DIGITAL_SIGNATURE, Some(SignatureScheme::ecdsa(h)), sig)
            }
            (PrivateKey::EcP384(k), SignMode::DigitalSignature(_)) => {
                let h = pick(HashAlgorithm::SHA2_384);
                let s: p384::ecdsa::Signature = k.sign_prehash(sha2(h).digest(octets).as_ref()).map_err(|_| failed)?;
                (AuthMethod::DIGITAL_SIGNATURE, Some(SignatureScheme::ecdsa(h)), s.to_der().as_bytes().to_vec())
            }
            (PrivateKey::EcP256(k), SignMode::Classic(_)) => {
                let rng = ring::rand::SystemRandom::new();
                let sig = k.fixed.sign(&rng, octets).map_err(|_| failed)?;
                (AuthMethod::ECDSA_SHA256_P256, None, sig.as_ref().to_vec())
            }
            (PrivateKey::EcP384(k), SignMode::Classic(_)) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(Sha2::Sha384.digest(octets).as_ref()).map_err(|_| failed)?;
                (AuthMethod::ECDSA_SHA384_P384, None, s.to_bytes().to_vec())
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
        Ok(Authentication::new(method, data))
    }
}
