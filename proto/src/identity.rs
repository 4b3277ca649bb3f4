//! Canonical identities: one spelling per identity a certificate proves,
//! so that every per-identity record (a lease, a reservation, a limit, a
//! revocation) has exactly one key however the peer writes its IDi.
//!
//! The forms follow RFC 5280 7.2 and 7.5: a host name is compared without
//! regard to case, so it is lower-cased (and a trailing dot dropped); an
//! RFC 822 name keeps its local part exactly and lower-cases its domain; an
//! address is its usual text form; a distinguished name is its RFC 4514
//! string, with attribute types in upper case (or as dotted OIDs) and the
//! values escaped the one way RFC 4514 2.4 prescribes. The same forms come
//! from configuration text ([`CanonicalIdentity::parse`]) and from the wire
//! ([`CanonicalIdentity::from_wire`]), so `[pool.static]` keys and the
//! identities clients prove meet in one key space.

use std::fmt;
use std::net::IpAddr;

use x509_parser::der_parser::asn1_rs::{Any, FromDer, Tag};
use x509_parser::x509::X509Name;

use crate::wire::{IdType, Identification, Identity};

/// Which kind of identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum IdentityKind {
    /// A host name (ID_FQDN, a dNSName SAN).
    Fqdn,
    /// An e-mail style name (ID_RFC822_ADDR, an rfc822Name SAN).
    Rfc822,
    /// An IPv4 or IPv6 address (an iPAddress SAN).
    Address,
    /// A distinguished name (ID_DER_ASN1_DN, the certificate's subject).
    DistinguishedName,
}

impl IdentityKind {
    fn tag(self) -> u8 {
        match self {
            IdentityKind::Fqdn => b'f',
            IdentityKind::Rfc822 => b'e',
            IdentityKind::Address => b'a',
            IdentityKind::DistinguishedName => b'd',
        }
    }

    fn from_tag(tag: u8) -> Option<IdentityKind> {
        Some(match tag {
            b'f' => IdentityKind::Fqdn,
            b'e' => IdentityKind::Rfc822,
            b'a' => IdentityKind::Address,
            b'd' => IdentityKind::DistinguishedName,
            _ => return None,
        })
    }
}

/// An identity in its one canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanonicalIdentity {
    kind: IdentityKind,
    text: String,
}

/// Why text or an IDi is not an identity sixgate can key records by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Nothing was given.
    #[error("empty identity")]
    Empty,
    /// Text that is neither an address, an RFC 822 name, a DN nor a host name.
    #[error("{0:?} is neither an address, an RFC 822 name (user@domain), a distinguished name (CN=...,O=...) nor a host name")]
    Unrecognised(String),
    /// A distinguished name that does not parse.
    #[error("distinguished name {0:?}: {1}")]
    BadDn(String, &'static str),
    /// An ID type sixgate does not key records by (KEY_ID and the like).
    #[error("ID type {0} cannot be used as an identity")]
    UnsupportedType(u8),
    /// The IDi's bytes do not form its type (not UTF-8, a short address).
    #[error("malformed identity payload")]
    Malformed,
}

impl CanonicalIdentity {
    /// The kind.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The canonical text (what logs and `leases` show).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Parses an identity as written in a configuration file or on a
    /// command line: an address, `user@domain`, an RFC 4514 DN
    /// (`CN=client,O=Example`), or a host name.
    pub fn parse(text: &str) -> Result<CanonicalIdentity, IdentityError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(IdentityError::Empty);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::address(ip));
        }
        if text.contains('=') {
            let rdns = parse_rfc4514(text).map_err(|why| IdentityError::BadDn(text.into(), why))?;
            return Ok(CanonicalIdentity {
                kind: IdentityKind::DistinguishedName,
                text: render_rdns(&rdns),
            });
        }
        if text.contains('@') {
            return rfc822(text).ok_or_else(|| IdentityError::Unrecognised(text.into()));
        }
        fqdn(text).ok_or_else(|| IdentityError::Unrecognised(text.into()))
    }

    fn address(ip: IpAddr) -> CanonicalIdentity {
        CanonicalIdentity {
            kind: IdentityKind::Address,
            text: ip.to_string(),
        }
    }

    /// The canonical form of an identification payload.
    pub fn from_wire(id: &Identification) -> Result<CanonicalIdentity, IdentityError> {
        match id.identity() {
            Identity::Fqdn(name) => fqdn(name).ok_or(IdentityError::Malformed),
            Identity::Rfc822(addr) => rfc822(addr).ok_or(IdentityError::Malformed),
            Identity::Address(ip) => Ok(Self::address(ip)),
            Identity::DistinguishedName(der) => Ok(CanonicalIdentity {
                kind: IdentityKind::DistinguishedName,
                text: dn_from_der(der).ok_or(IdentityError::Malformed)?,
            }),
            Identity::Other(ty, _) => Err(IdentityError::UnsupportedType(ty.0)),
        }
    }

    /// The payload that claims this identity, for every kind but DNs
    /// (whose DER is the certificate's subject: see
    /// [`crate::cert::subject_der`]).
    pub fn to_wire(&self) -> Option<Identification> {
        match self.kind {
            IdentityKind::Fqdn => Some(Identification::fqdn(&self.text)),
            IdentityKind::Rfc822 => Some(Identification::rfc822(&self.text)),
            IdentityKind::Address => self.text.parse().ok().map(Identification::address),
            IdentityKind::DistinguishedName => None,
        }
    }

    /// A key for storage: a tag octet for the kind, then the text.
    pub fn storage_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + self.text.len());
        k.push(self.kind.tag());
        k.extend_from_slice(self.text.as_bytes());
        k
    }

    /// The identity a [`CanonicalIdentity::storage_key`] was made from.
    pub fn from_storage_key(key: &[u8]) -> Option<CanonicalIdentity> {
        let (&tag, text) = key.split_first()?;
        Some(CanonicalIdentity {
            kind: IdentityKind::from_tag(tag)?,
            text: std::str::from_utf8(text).ok()?.to_string(),
        })
    }

    /// The canonical form of a wire identity type's text, for callers
    /// that hold an [`IdType`] and bytes (old lease keys).
    pub fn from_type_and_bytes(ty: IdType, data: &[u8]) -> Result<Self, IdentityError> {
        Self::from_wire(&Identification {
            id_type: ty,
            reserved: [0; 3],
            data: data.to_vec(),
        })
    }
}

impl fmt::Display for CanonicalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A host name: letters, digits, '-', '_' and dots; lower-cased, without a
/// trailing dot.
fn fqdn(name: &str) -> Option<CanonicalIdentity> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    ok.then(|| CanonicalIdentity {
        kind: IdentityKind::Fqdn,
        text: name.to_ascii_lowercase(),
    })
}

/// `local@domain`: the local part exactly, the domain lower-cased.
fn rfc822(addr: &str) -> Option<CanonicalIdentity> {
    let (local, domain) = addr.rsplit_once('@')?;
    if local.is_empty() || local.chars().any(char::is_control) {
        return None;
    }
    let domain = fqdn(domain)?;
    Some(CanonicalIdentity {
        kind: IdentityKind::Rfc822,
        text: format!("{local}@{}", domain.text),
    })
}

/// Whether two RFC 822 names are the same mailbox: local parts equal
/// octet for octet, domains equal without regard to case (RFC 5280 7.5).
pub(crate) fn rfc822_matches(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => false,
    }
}

/// One attribute of an RDN: its type (short name or dotted OID) and value.
type Attribute = (String, String);

/// Short names of the attribute types RFC 4514 3 lists, and a few more
/// that certificates carry, by dotted OID.
const SHORT_NAMES: [(&str, &str); 14] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "GN"),
    ("2.5.4.12", "TITLE"),
    ("1.2.840.113549.1.9.1", "EMAILADDRESS"),
];

fn short_name(oid: &str) -> String {
    SHORT_NAMES
        .iter()
        .find(|(o, _)| *o == oid)
        .map_or_else(|| oid.to_string(), |(_, n)| n.to_string())
}

/// The canonical type name for text as written: short names in upper
/// case, `OID.` prefixes dropped.
fn type_name(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("OID.")
        .or_else(|| t.strip_prefix("oid."))
        .unwrap_or(t);
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some(short_name(t));
    }
    let upper = t.to_ascii_uppercase();
    let known = SHORT_NAMES.iter().any(|(_, n)| *n == upper) || upper == "E";
    match upper.as_str() {
        "E" => Some("EMAILADDRESS".into()),
        _ if known => Some(upper),
        _ if t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => Some(upper),
        _ => None,
    }
}

/// The RDNs of a DER Name, most specific first (RFC 4514 2.1 order), or
/// `None` if it does not parse.
fn rdns_from_der(der: &[u8]) -> Option<Vec<Vec<Attribute>>> {
    let (rest, name) = X509Name::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for rdn in name.iter() {
        let mut attrs = Vec::new();
        for a in rdn.iter() {
            let ty = short_name(&a.attr_type().to_id_string());
            let value = attribute_text(a.attr_value());
            attrs.push((ty, value));
        }
        out.push(attrs);
    }
    out.reverse();
    Some(out)
}

/// An attribute value as text: the string types decoded (BMPString as
/// UTF-16, UniversalString as UTF-32, TeletexString as Latin-1, as
/// certificates from old CAs carry them), anything else as `#` and the hex
/// of its encoding (RFC 4514 2.4).
fn attribute_text(value: &Any<'_>) -> String {
    let data = value.data;
    let units = |n: usize| data.chunks_exact(n);
    let decoded = match value.tag() {
        Tag::NumericString
        | Tag::PrintableString
        | Tag::Utf8String
        | Tag::Ia5String
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::BmpString => {
            let u16s: Vec<u16> = units(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&u16s).ok()
        }
        Tag::UniversalString => units(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Tag::TeletexString => Some(data.iter().map(|b| char::from(*b)).collect()),
        _ => None,
    };
    decoded.unwrap_or_else(|| {
        // Tag (a universal, primitive one: what attribute values are) and
        // DER length, then the contents.
        let mut der = vec![value.tag().0 as u8];
        match u8::try_from(data.len()) {
            Ok(n) if n < 0x80 => der.push(n),
            _ => {
                let len = (data.len() as u32).to_be_bytes();
                let skip = len.iter().take_while(|b| **b == 0).count();
                der.push(0x80 | (4 - skip) as u8);
                der.extend_from_slice(&len[skip..]);
            }
        }
        der.extend_from_slice(data);
        let mut hex = String::from("#");
        for b in der {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    })
}

/// The RFC 4514 string of a DER Name.
pub fn dn_from_der(der: &[u8]) -> Option<String> {
    rdns_from_der(der).map(|r| render_rdns(&r))
}

fn escape(value: &str) -> String {
    if value.starts_with('#')
        && value.len() > 1
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        // Our own rendering of a non-string value.
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else if special {
            out.push('\\');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn render_rdns(rdns: &[Vec<Attribute>]) -> String {
    rdns.iter()
        .map(|rdn| {
            let mut attrs: Vec<String> = rdn
                .iter()
                .map(|(t, v)| format!("{t}={}", escape(v)))
                .collect();
            // A multi-valued RDN is a set: one order for all spellings.
            attrs.sort();
            attrs.join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses an RFC 4514 string into RDNs (most specific first), undoing its
/// escapes. Spaces around separators are tolerated, as people write them.
fn parse_rfc4514(text: &str) -> Result<Vec<Vec<Attribute>>, &'static str> {
    let mut rdns: Vec<Vec<Attribute>> = vec![Vec::new()];
    let mut chars = text.chars().peekable();
    loop {
        // attributeType "="
        let mut ty = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            ty.push(c);
        }
        let ty = type_name(&ty).ok_or("an attribute type is missing or invalid")?;
        // attributeValue, up to an unescaped ',' or '+'
        let mut value = String::new();
        let mut trailing_escaped_space = false;
        let mut end = None;
        while let Some(c) = chars.next() {
            match c {
                ',' | ';' => {
                    end = Some(',');
                    break;
                }
                '+' => {
                    end = Some('+');
                    break;
                }
                '\\' => {
                    let next = chars.next().ok_or("a trailing backslash")?;
                    if next.is_ascii_hexdigit() {
                        let lo = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or("a bad \\XX escape")?;
                        let byte = u8::from_str_radix(&format!("{next}{lo}"), 16)
                            .map_err(|_| "a bad \\XX escape")?;
                        value.push(char::from(byte));
                    } else {
                        value.push(next);
                    }
                    trailing_escaped_space = next == ' ';
                    continue;
                }
                c => value.push(c),
            }
            trailing_escaped_space = false;
        }
        let value = if trailing_escaped_space {
            value.trim_start().to_string()
        } else {
            value.trim().to_string()
        };
        if value.is_empty() {
            return Err("an attribute value is empty");
        }
        rdns.last_mut().ok_or("internal")?.push((ty, value));
        match end {
            Some(',') => rdns.push(Vec::new()),
            Some(_) => {}
            None => break,
        }
    }
    if rdns.iter().any(Vec::is_empty) {
        return Err("an empty RDN");
    }
    Ok(rdns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_identity_meet() {
        let a = CanonicalIdentity::parse("Alice@Example.NET").unwrap();
        let b = CanonicalIdentity::from_wire(&Identification::rfc822("Alice@example.net")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "Alice@example.net");
        assert_ne!(a, CanonicalIdentity::parse("alice@example.net").unwrap());
        let h = CanonicalIdentity::parse("VPN.Example.org.").unwrap();
        assert_eq!(h.as_str(), "vpn.example.org");
        assert_eq!(h.kind(), IdentityKind::Fqdn);
        assert_eq!(
            CanonicalIdentity::from_storage_key(&h.storage_key()),
            Some(h)
        );
        let ip = CanonicalIdentity::parse("2001:DB8::1").unwrap();
        assert_eq!(ip.as_str(), "2001:db8::1");
        assert!(CanonicalIdentity::parse("broker example").is_err());
        assert!(CanonicalIdentity::parse("").is_err());
    }

    #[test]
    fn distinguished_names_from_text_and_from_der_agree() {
        let written = CanonicalIdentity::parse("cn = client, o=Example\\, Inc., C=NL").unwrap();
        assert_eq!(written.as_str(), "CN=client,O=Example\\, Inc.,C=NL");
        let multi = CanonicalIdentity::parse("OU=b+CN=a,O=x").unwrap();
        assert_eq!(multi.as_str(), "CN=a+OU=b,O=x", "an RDN is a set");
        // DER of C=NL, O="Example, Inc.", CN=client (issuer order).
        let der = hex_der();
        let from_der =
            CanonicalIdentity::from_wire(&Identification::distinguished_name(der)).unwrap();
        assert_eq!(from_der, written);
        assert!(CanonicalIdentity::parse("CN=").is_err());
        assert!(CanonicalIdentity::parse("=x").is_err());
    }

    /// SEQUENCE { SET { C=NL }, SET { O="Example, Inc." }, SET { CN=client } }
    fn hex_der() -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![tag, body.len() as u8];
            v.extend_from_slice(body);
            v
        }
        let atv = |oid: &[u8], tag: u8, value: &str| {
            let mut b = tlv(0x06, oid);
            b.extend(tlv(tag, value.as_bytes()));
            tlv(0x31, &tlv(0x30, &b))
        };
        let mut seq = atv(&[0x55, 0x04, 0x06], 0x13, "NL");
        seq.extend(atv(&[0x55, 0x04, 0x0a], 0x0c, "Example, Inc."));
        seq.extend(atv(&[0x55, 0x04, 0x03], 0x0c, "client"));
        tlv(0x30, &seq)
    }

    #[test]
    fn rfc822_matching_is_exact_on_the_local_part() {
        assert!(rfc822_matches("alice@example.net", "alice@EXAMPLE.net"));
        assert!(!rfc822_matches("alice@example.net", "Alice@example.net"));
        assert!(!rfc822_matches("alice", "alice"));
    }
}
