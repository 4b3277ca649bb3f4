//! What a certificate on a validated path must be, beyond a good signature
//! and dates: the checks of RFC 5280 6.1 that sixgate enforces (CA-ness,
//! pathLenConstraint, name constraints, critical extensions), the fitness
//! of the leaf for IKE (keyUsage and extendedKeyUsage, RFC 4945 5.1.3.2 and
//! 5.1.3.12), and the algorithm floor (no SHA-1 signatures, no RSA keys
//! under 2048 bits) that only `legacy` lowers.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, NameConstraints, ParsedExtension};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Name;

use super::CertError;
use crate::crypto::Legacy;

/// What the peer's certificate must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A road warrior's certificate, as the broker checks it: an
    /// extendedKeyUsage, if present, must allow clientAuth or IKE.
    Client,
    /// The broker's certificate, as a client checks it: an
    /// extendedKeyUsage, if present, must allow serverAuth,
    /// iKEIntermediate or IKE.
    Server,
}

/// id-kp-ipsecIKE (RFC 4945 5.1.3.12).
const EKU_IPSEC_IKE: &str = "1.3.6.1.5.5.7.3.17";
/// iKEIntermediate, which Windows and macOS look for on a server and
/// strongSwan's documentation recommends (1.3.6.1.5.5.8.2.2): a server's
/// purpose, like serverAuth.
const EKU_IKE_INTERMEDIATE: &str = "1.3.6.1.5.5.8.2.2";

/// Signature algorithms that hash with SHA-1 (or worse).
const WEAK_SIGNATURES: [&str; 5] = [
    "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
    "1.2.840.10045.4.1",    // ecdsa-with-SHA1
    "1.2.840.10040.4.3",    // dsa-with-sha1
    "1.2.840.113549.1.1.4", // md5WithRSAEncryption
    "1.3.14.3.2.29",        // sha1WithRSA (OIW)
];

/// The smallest RSA modulus accepted without `legacy`.
pub const MIN_RSA_BITS: usize = 2048;

/// Refuses a critical extension this module does not enforce. Policy
/// processing is not done, so the extensions that constrain it are
/// refused when critical; certificatePolicies itself is informative here.
pub(super) fn check_critical_extensions(cert: &X509Certificate<'_>) -> Result<(), CertError> {
    for ext in cert.extensions().iter().filter(|e| e.critical) {
        let known = match ext.parsed_extension() {
            ParsedExtension::ParseError { .. } => return Err(CertError::Malformed),
            ParsedExtension::BasicConstraints(_)
            | ParsedExtension::KeyUsage(_)
            | ParsedExtension::ExtendedKeyUsage(_)
            | ParsedExtension::SubjectAlternativeName(_)
            | ParsedExtension::NameConstraints(_)
            | ParsedExtension::CertificatePolicies(_)
            | ParsedExtension::SubjectKeyIdentifier(_)
            | ParsedExtension::AuthorityKeyIdentifier(_)
            | ParsedExtension::IssuerAlternativeName(_) => true,
            _ => false,
        };
        if !known {
            return Err(CertError::UnknownCriticalExtension(ext.oid.to_id_string()));
        }
    }
    Ok(())
}

/// Refuses SHA-1 signatures on `cert` (whose signature the path relies
/// on) and an RSA key under [`MIN_RSA_BITS`], unless `legacy`.
pub(super) fn check_algorithms(
    cert: &X509Certificate<'_>,
    signature_checked: bool,
    legacy: Legacy,
) -> Result<(), CertError> {
    if legacy == Legacy::Allow {
        return Ok(());
    }
    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    if signature_checked && WEAK_SIGNATURES.contains(&algorithm.as_str()) {
        return Err(CertError::WeakSignature);
    }
    if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() {
        if rsa.key_size() < MIN_RSA_BITS {
            return Err(CertError::WeakKey(rsa.key_size()));
        }
    }
    Ok(())
}

/// An issuer must be a CA: basicConstraints CA:TRUE, and keyCertSign when
/// it has a keyUsage.
pub(super) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let may_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    ca && may_sign
}

/// The CA at `issuer`'s place in the path may have at most its
/// pathLenConstraint intermediates below it; `below` is how many there are.
pub(super) fn check_path_len(issuer: &X509Certificate<'_>, below: usize) -> Result<(), CertError> {
    match issuer.basic_constraints() {
        Ok(Some(bc)) => match bc.value.path_len_constraint {
            Some(max) if below > max as usize => Err(CertError::PathLenExceeded),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The leaf must be fit for IKE signatures in its `purpose`.
pub(super) fn check_leaf_usage(
    leaf: &X509Certificate<'_>,
    purpose: Purpose,
) -> Result<(), CertError> {
    match leaf.key_usage() {
        Ok(Some(ku)) if !ku.value.digital_signature() => return Err(CertError::KeyUsage),
        Err(_) => return Err(CertError::Malformed),
        _ => {}
    }
    let eku = match leaf.extended_key_usage() {
        Ok(Some(eku)) => eku.value,
        Ok(None) => return Ok(()),
        Err(_) => return Err(CertError::Malformed),
    };
    let has = |oid: &str| eku.other.iter().any(|o| o.to_id_string() == oid);
    let for_ike = eku.any || has(EKU_IPSEC_IKE);
    let for_role = match purpose {
        Purpose::Client => eku.client_auth,
        Purpose::Server => eku.server_auth || has(EKU_IKE_INTERMEDIATE),
    };
    if for_ike || for_role {
        Ok(())
    } else {
        Err(CertError::ExtendedKeyUsage(purpose))
    }
}

/// Checks `cert`'s names (subject, SANs, and e-mail addresses in the
/// subject) against the name constraints of a CA above it (RFC 5280
/// 4.2.1.10): every name of a type the permitted subtrees constrain must
/// lie inside one of them, and none inside an excluded subtree.
pub(super) fn check_name_constraints(
    issuer: &X509Certificate<'_>,
    cert: &X509Certificate<'_>,
) -> Result<(), CertError> {
    let constraints: &NameConstraints<'_> = match issuer.name_constraints() {
        Ok(Some(nc)) => nc.value,
        Ok(None) => return Ok(()),
        Err(_) => return Err(CertError::Malformed),
    };
    let mut names: Vec<Name<'_>> = Vec::new();
    names.push(Name::Directory(cert.subject()));
    for attr in cert.subject().iter_email() {
        if let Ok(mail) = attr.as_str() {
            names.push(Name::Mail(mail));
        }
    }
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            for n in &san.value.general_names {
                match n {
                    GeneralName::RFC822Name(m) => names.push(Name::Mail(m)),
                    GeneralName::DNSName(d) => names.push(Name::Dns(d)),
                    GeneralName::IPAddress(a) => names.push(Name::Ip(a)),
                    GeneralName::DirectoryName(d) => names.push(Name::Directory(d)),
                    // Other kinds are not identities IKE can prove.
                    _ => {}
                }
            }
        }
        Ok(None) => {}
        Err(_) => return Err(CertError::Malformed),
    }
    let permitted: Vec<&GeneralName<'_>> = constraints
        .permitted_subtrees
        .iter()
        .flatten()
        .map(|s| &s.base)
        .collect();
    let excluded: Vec<&GeneralName<'_>> = constraints
        .excluded_subtrees
        .iter()
        .flatten()
        .map(|s| &s.base)
        .collect();
    for name in &names {
        if excluded.iter().any(|c| name.within(c) == Some(true)) {
            return Err(CertError::NameConstraints);
        }
        let of_its_kind: Vec<bool> = permitted.iter().filter_map(|c| name.within(c)).collect();
        if !of_its_kind.is_empty() && !of_its_kind.contains(&true) {
            return Err(CertError::NameConstraints);
        }
    }
    Ok(())
}

/// A name a certificate carries, of a kind name constraints apply to.
enum Name<'a> {
    Mail(&'a str),
    Dns(&'a str),
    Ip(&'a [u8]),
    Directory(&'a X509Name<'a>),
}

impl Name<'_> {
    /// Whether the name lies inside the subtree `base`; `None` when the
    /// subtree is of another kind (and so says nothing about this name).
    fn within(&self, base: &GeneralName<'_>) -> Option<bool> {
        match (self, base) {
            (Name::Mail(m), GeneralName::RFC822Name(c)) => Some(mail_within(m, c)),
            (Name::Dns(d), GeneralName::DNSName(c)) => Some(dns_within(d, c)),
            (Name::Ip(a), GeneralName::IPAddress(c)) => Some(ip_within(a, c)),
            (Name::Directory(d), GeneralName::DirectoryName(c)) => Some(dn_within(d, c)),
            _ => None,
        }
    }
}

/// An rfc822Name constraint is a mailbox (`user@host`), a host (`host`:
/// every mailbox there) or a domain (`.host`: every mailbox in a
/// subdomain). Hosts compare without regard to case.
fn mail_within(mail: &str, constraint: &str) -> bool {
    let Some((_, host)) = mail.rsplit_once('@') else {
        return false;
    };
    if constraint.contains('@') {
        super::rfc822_matches(mail, constraint)
    } else if constraint.starts_with('.') {
        ends_with_ignore_case(host, constraint)
    } else {
        host.eq_ignore_ascii_case(constraint)
    }
}

/// A dNSName constraint covers the name itself and every name made by
/// adding labels on the left; a leading dot means subdomains only.
fn dns_within(name: &str, constraint: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if constraint.is_empty() {
        return true;
    }
    if constraint.starts_with('.') {
        return ends_with_ignore_case(name, constraint);
    }
    name.eq_ignore_ascii_case(constraint) || ends_with_ignore_case(name, &format!(".{constraint}"))
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// An iPAddress constraint is an address and a mask of the same family.
fn ip_within(address: &[u8], constraint: &[u8]) -> bool {
    let n = address.len();
    if constraint.len() != 2 * n {
        return false;
    }
    let (net, mask) = constraint.split_at(n);
    address
        .iter()
        .zip(net)
        .zip(mask)
        .all(|((a, n), m)| a & m == n & m)
}

/// A directoryName constraint is a prefix of RDNs.
fn dn_within(name: &X509Name<'_>, constraint: &X509Name<'_>) -> bool {
    let mut rdns = name.iter();
    constraint.iter().all(|want| {
        rdns.next().is_some_and(|have| {
            let a: Vec<_> = have.iter().collect();
            let b: Vec<_> = want.iter().collect();
            a.len() == b.len()
                && a.iter().zip(&b).all(|(x, y)| {
                    x.attr_type() == y.attr_type()
                        && match (x.as_str(), y.as_str()) {
                            (Ok(p), Ok(q)) => p.eq_ignore_ascii_case(q),
                            _ => x.as_slice() == y.as_slice(),
                        }
                })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_constraints() {
        assert!(mail_within("a@example.org", "example.org"));
        assert!(mail_within("a@EXAMPLE.org", "example.org"));
        assert!(!mail_within("a@sub.example.org", "example.org"));
        assert!(mail_within("a@sub.example.org", ".example.org"));
        assert!(!mail_within("a@example.org", ".example.org"));
        assert!(mail_within("a@example.org", "a@example.org"));
        assert!(!mail_within("b@example.org", "a@example.org"));
        assert!(!mail_within("a@example.net", "example.org"));
        assert!(!mail_within("no-at-sign", "example.org"));
    }

    #[test]
    fn dns_constraints() {
        assert!(dns_within("example.org", "example.org"));
        assert!(dns_within("vpn.Example.org", "example.org"));
        assert!(!dns_within("badexample.org", "example.org"));
        assert!(!dns_within("example.org", ".example.org"));
        assert!(dns_within("a.example.org.", ".example.org"));
        // Not a char boundary: must not panic.
        assert!(!dns_within("é.org", "xx.org"));
    }

    #[test]
    fn ip_constraints() {
        let net = [192, 0, 2, 0, 255, 255, 255, 0];
        assert!(ip_within(&[192, 0, 2, 7], &net));
        assert!(!ip_within(&[192, 0, 3, 7], &net));
        assert!(!ip_within(&[0; 16], &net), "another family");
    }
}
