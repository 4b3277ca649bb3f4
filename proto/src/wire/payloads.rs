//! The bodies of the IKEv2 payloads other than SA (RFC 7296 3.4-3.16,
//! RFC 7383 2.5).
//!
//! Each body keeps the wire values as they are (raw numbers, raw identity
//! and certificate bytes) and offers typed views on top, so that what was
//! parsed is emitted again byte for byte, and the bytes that AUTH signs are
//! exactly those the peer sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::codec::{Frame, PutExt, Reader};
use crate::error::{EncodeError, InvalidMessage};
use crate::wire::{
    AuthMethod, CertEncoding, CfgAttributeType, CfgType, IdType, NotifyType, PayloadType,
    ProtocolId, TransformId, TsType,
};

/// Key Exchange payload (RFC 7296 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// The key exchange method (transform type 4 ID) of `data`.
    pub group: TransformId,
    /// The reserved field, as received (zero in what we send).
    pub reserved: u16,
    /// The sender's public value.
    pub data: Vec<u8>,
}

impl KeyExchange {
    /// A KE payload for `group` with public value `data`.
    pub fn new(group: TransformId, data: Vec<u8>) -> Self {
        KeyExchange {
            group,
            reserved: 0,
            data,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let group = TransformId(r.u16()?);
        let reserved = r.u16()?;
        Ok(KeyExchange {
            group,
            reserved,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_u16(self.group.0);
        out.put_u16(self.reserved);
        out.extend_from_slice(&self.data);
    }
}

/// Identification payload, IDi or IDr (RFC 7296 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    /// How `data` is to be read.
    pub id_type: IdType,
    /// The three reserved octets, kept as received because the AUTH payload
    /// signs the ID payload body as sent.
    pub reserved: [u8; 3],
    /// The identity.
    pub data: Vec<u8>,
}

/// A typed view of an [`Identification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity<'a> {
    /// ID_IPV4_ADDR or ID_IPV6_ADDR.
    Address(IpAddr),
    /// ID_FQDN.
    Fqdn(&'a str),
    /// ID_RFC822_ADDR.
    Rfc822(&'a str),
    /// ID_DER_ASN1_DN: a DER-encoded X.501 distinguished name.
    DistinguishedName(&'a [u8]),
    /// Any other type, or a value that does not fit its type.
    Other(IdType, &'a [u8]),
}

impl Identification {
    fn new(id_type: IdType, data: Vec<u8>) -> Self {
        Identification {
            id_type,
            reserved: [0; 3],
            data,
        }
    }

    /// An ID_FQDN identity.
    pub fn fqdn(name: &str) -> Self {
        Self::new(IdType::FQDN, name.as_bytes().to_vec())
    }

    /// An ID_RFC822_ADDR identity.
    pub fn rfc822(addr: &str) -> Self {
        Self::new(IdType::RFC822_ADDR, addr.as_bytes().to_vec())
    }

    /// An ID_IPV4_ADDR or ID_IPV6_ADDR identity.
    pub fn address(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::new(IdType::IPV4_ADDR, a.octets().to_vec()),
            IpAddr::V6(a) => Self::new(IdType::IPV6_ADDR, a.octets().to_vec()),
        }
    }

    /// An ID_DER_ASN1_DN identity from a DER-encoded name.
    pub fn distinguished_name(der: Vec<u8>) -> Self {
        Self::new(IdType::DER_ASN1_DN, der)
    }

    /// The identity, typed by its ID type.
    pub fn identity(&self) -> Identity<'_> {
        let text = || std::str::from_utf8(&self.data).ok();
        match self.id_type {
            IdType::IPV4_ADDR => match <[u8; 4]>::try_from(self.data.as_slice()) {
                Ok(a) => Identity::Address(Ipv4Addr::from(a).into()),
                Err(_) => Identity::Other(self.id_type, &self.data),
            },
            IdType::IPV6_ADDR => match <[u8; 16]>::try_from(self.data.as_slice()) {
                Ok(a) => Identity::Address(Ipv6Addr::from(a).into()),
                Err(_) => Identity::Other(self.id_type, &self.data),
            },
            IdType::FQDN => {
                text().map_or(Identity::Other(self.id_type, &self.data), Identity::Fqdn)
            }
            IdType::RFC822_ADDR => {
                text().map_or(Identity::Other(self.id_type, &self.data), Identity::Rfc822)
            }
            IdType::DER_ASN1_DN => Identity::DistinguishedName(&self.data),
            other => Identity::Other(other, &self.data),
        }
    }

    /// The payload body as it is on the wire: what RFC 7296 2.15 calls IDi'
    /// (or IDr'), the input of the AUTH computation.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.data.len());
        self.write(&mut out);
        out
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let id_type = IdType(r.u8()?);
        let reserved = r.array()?;
        Ok(Identification {
            id_type,
            reserved,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.id_type.0);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.data);
    }
}

/// Certificate payload (RFC 7296 3.6) or Certificate Request payload (3.7):
/// both are an encoding octet followed by data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// How `data` is encoded.
    pub encoding: CertEncoding,
    /// For X509_SIGNATURE in CERT: one DER certificate. In CERTREQ: the
    /// concatenated SHA-1 hashes of the acceptable CAs' public keys.
    pub data: Vec<u8>,
}

impl Certificate {
    /// A CERT payload holding one DER-encoded X.509 certificate.
    pub fn x509(der: Vec<u8>) -> Self {
        Certificate {
            encoding: CertEncoding::X509_SIGNATURE,
            data: der,
        }
    }

    /// For a CERTREQ: the 20-byte SHA-1 hashes of the CA public keys it
    /// names, or `None` if the data is not a whole number of hashes.
    pub fn authority_hashes(&self) -> Option<impl Iterator<Item = &[u8]>> {
        self.data
            .len()
            .is_multiple_of(20)
            .then(|| self.data.chunks_exact(20))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        Ok(Certificate {
            encoding: CertEncoding(r.u8()?),
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.0);
        out.extend_from_slice(&self.data);
    }
}

/// Authentication payload (RFC 7296 3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// The authentication method.
    pub method: AuthMethod,
    /// The reserved octets, as received (zero in what we send).
    pub reserved: [u8; 3],
    /// The signature or MAC; for method 14, prefixed by the length-prefixed
    /// AlgorithmIdentifier (RFC 7427 3).
    pub data: Vec<u8>,
}

impl Authentication {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let method = AuthMethod(r.u8()?);
        let reserved = r.array()?;
        Ok(Authentication {
            method,
            reserved,
            data: r.rest().to_vec(),
        })
    }

    /// An AUTH payload of `method` carrying `data`.
    pub fn new(method: AuthMethod, data: Vec<u8>) -> Self {
        Authentication {
            method,
            reserved: [0; 3],
            data,
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.method.0);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.data);
    }
}

/// Notify payload (RFC 7296 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The protocol the SPI belongs to, or NONE.
    pub protocol: ProtocolId,
    /// The SPI the notification is about; usually empty.
    pub spi: Vec<u8>,
    /// What is notified.
    pub ty: NotifyType,
    /// Type-specific data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notification about no particular SA.
    pub fn new(ty: NotifyType, data: Vec<u8>) -> Self {
        Notify {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ty,
            data,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let protocol = ProtocolId(r.u8()?);
        let spi_size = usize::from(r.u8()?);
        let ty = NotifyType(r.u16()?);
        let spi = r.take(spi_size)?.to_vec();
        Ok(Notify {
            protocol,
            spi,
            ty,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.protocol.0);
        out.push(u8::try_from(self.spi.len()).map_err(|_| EncodeError::TooLong("notify SPI"))?);
        out.put_u16(self.ty.0);
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// Delete payload (RFC 7296 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// IKE (no SPIs: the SA the message travels on) or ESP/AH.
    pub protocol: ProtocolId,
    /// The size of each SPI: 0 for IKE, 4 for ESP/AH.
    pub spi_size: u8,
    /// The SPIs (as the deleting side receives with them) being deleted.
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let protocol = ProtocolId(r.u8()?);
        let spi_size = r.u8()?;
        let count = r.u16()?;
        if spi_size == 0 && count != 0 {
            return Err(InvalidMessage::InvalidValue("delete payload SPI size"));
        }
        let mut spis = Vec::new();
        for _ in 0..count {
            spis.push(r.take(usize::from(spi_size))?.to_vec());
        }
        Ok(Delete {
            protocol,
            spi_size,
            spis,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.protocol.0);
        out.push(self.spi_size);
        let count = u16::try_from(self.spis.len()).map_err(|_| EncodeError::TooLong("SPIs"))?;
        out.put_u16(count);
        for spi in &self.spis {
            if spi.len() != usize::from(self.spi_size) {
                return Err(EncodeError::TooLong("delete payload SPI"));
            }
            out.extend_from_slice(spi);
        }
        Ok(())
    }
}

/// An address range with a protocol and port range (RFC 7296 3.13.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsRange<A> {
    /// IP protocol number, 0 for any.
    pub ip_protocol: u8,
    /// First port of the range.
    pub start_port: u16,
    /// Last port of the range.
    pub end_port: u16,
    /// First address of the range.
    pub start: A,
    /// Last address of the range.
    pub end: A,
}

/// One traffic selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficSelector {
    /// TS_IPV4_ADDR_RANGE.
    Ipv4(TsRange<Ipv4Addr>),
    /// TS_IPV6_ADDR_RANGE.
    Ipv6(TsRange<Ipv6Addr>),
    /// Another type: its second octet and its body after the length, kept
    /// as they are.
    Other {
        /// The selector type.
        ts_type: TsType,
        /// The octet after the type (the IP protocol for the range types).
        second: u8,
        /// Everything after the length field.
        data: Vec<u8>,
    },
}

impl TrafficSelector {
    /// All ports and protocols between two IPv6 addresses.
    pub fn ipv6(start: Ipv6Addr, end: Ipv6Addr) -> Self {
        TrafficSelector::Ipv6(TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start,
            end,
        })
    }

    /// All ports and protocols between two IPv4 addresses.
    pub fn ipv4(start: Ipv4Addr, end: Ipv4Addr) -> Self {
        TrafficSelector::Ipv4(TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start,
            end,
        })
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let Frame {
            head: [ts_type, second],
            body: mut b,
        } = Frame::read(r, "traffic selector")?;
        let ts_type = TsType(ts_type);
        let ts = match ts_type {
            TsType::IPV4_ADDR_RANGE => TrafficSelector::Ipv4(TsRange {
                ip_protocol: second,
                start_port: b.u16()?,
                end_port: b.u16()?,
                start: Ipv4Addr::from(b.array::<4>()?),
                end: Ipv4Addr::from(b.array::<4>()?),
            }),
            TsType::IPV6_ADDR_RANGE => TrafficSelector::Ipv6(TsRange {
                ip_protocol: second,
                start_port: b.u16()?,
                end_port: b.u16()?,
                start: Ipv6Addr::from(b.array::<16>()?),
                end: Ipv6Addr::from(b.array::<16>()?),
            }),
            _ => TrafficSelector::Other {
                ts_type,
                second,
                data: b.rest().to_vec(),
            },
        };
        b.finish()?;
        Ok(ts)
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        fn range<A>(out: &mut Vec<u8>, t: &TsRange<A>, octets: impl Fn(&A) -> Vec<u8>) {
            out.put_u16(t.start_port);
            out.put_u16(t.end_port);
            out.extend_from_slice(&octets(&t.start));
            out.extend_from_slice(&octets(&t.end));
        }
        match self {
            TrafficSelector::Ipv4(t) => Frame::write(
                out,
                [TsType::IPV4_ADDR_RANGE.0, t.ip_protocol],
                "traffic selector",
                |out| {
                    range(out, t, |a| a.octets().to_vec());
                    Ok(())
                },
            ),
            TrafficSelector::Ipv6(t) => Frame::write(
                out,
                [TsType::IPV6_ADDR_RANGE.0, t.ip_protocol],
                "traffic selector",
                |out| {
                    range(out, t, |a| a.octets().to_vec());
                    Ok(())
                },
            ),
            TrafficSelector::Other {
                ts_type,
                second,
                data,
            } => Frame::write(out, [ts_type.0, *second], "traffic selector", |out| {
                out.extend_from_slice(data);
                Ok(())
            }),
        }
    }
}

/// A TSi or TSr payload: a list of traffic selectors (RFC 7296 3.13).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrafficSelectors {
    /// The reserved octets, as received (zero in what we send).
    pub reserved: [u8; 3],
    /// The selectors, most specific first by convention.
    pub selectors: Vec<TrafficSelector>,
}

impl TrafficSelectors {
    /// A TSi or TSr payload of these selectors.
    pub fn new(selectors: Vec<TrafficSelector>) -> Self {
        TrafficSelectors {
            reserved: [0; 3],
            selectors,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let count = r.u8()?;
        let reserved = r.array()?;
        let mut selectors = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            selectors.push(TrafficSelector::read(r)?);
        }
        Ok(TrafficSelectors {
            reserved,
            selectors,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let count = u8::try_from(self.selectors.len())
            .map_err(|_| EncodeError::TooLong("traffic selector count"))?;
        out.push(count);
        out.extend_from_slice(&self.reserved);
        for ts in &self.selectors {
            ts.write(out)?;
        }
        Ok(())
    }
}

/// Configuration payload (RFC 7296 3.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    /// Request, reply, set or ack.
    pub cfg_type: CfgType,
    /// The reserved octets, as received (zero in what we send).
    pub reserved: [u8; 3],
    /// The attributes, in order.
    pub attributes: Vec<CfgAttribute>,
}

/// One configuration attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgAttribute {
    /// The reserved bit in front of the type, as received (clear in
    /// what we send).
    pub reserved: bool,
    /// The attribute type (15 bits).
    pub ty: CfgAttributeType,
    /// Its value; empty in a request for "any".
    pub value: Vec<u8>,
}

impl CfgAttribute {
    /// An attribute with an empty value: a request for "assign me one".
    pub fn request(ty: CfgAttributeType) -> Self {
        CfgAttribute {
            reserved: false,
            ty,
            value: Vec::new(),
        }
    }

    /// INTERNAL_IP6_ADDRESS or INTERNAL_IP6_SUBNET: address and prefix length.
    pub fn ip6_prefix(ty: CfgAttributeType, addr: Ipv6Addr, prefix_len: u8) -> Self {
        let mut value = addr.octets().to_vec();
        value.push(prefix_len);
        CfgAttribute {
            reserved: false,
            ty,
            value,
        }
    }

    /// An attribute holding one address (the IPv4/IPv6 address and DNS types).
    pub fn address(ty: CfgAttributeType, addr: IpAddr) -> Self {
        let value = match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        CfgAttribute {
            reserved: false,
            ty,
            value,
        }
    }

    /// The value read as an IPv6 address and prefix length (17 octets).
    pub fn as_ip6_prefix(&self) -> Option<(Ipv6Addr, u8)> {
        let bytes: [u8; 17] = self.value.as_slice().try_into().ok()?;
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&bytes[..16]);
        Some((Ipv6Addr::from(addr), bytes[16]))
    }

    /// The value read as a single address (4 or 16 octets).
    pub fn as_address(&self) -> Option<IpAddr> {
        match self.value.len() {
            4 => <[u8; 4]>::try_from(self.value.as_slice())
                .ok()
                .map(|a| Ipv4Addr::from(a).into()),
            16 => <[u8; 16]>::try_from(self.value.as_slice())
                .ok()
                .map(|a| Ipv6Addr::from(a).into()),
            _ => None,
        }
    }
}

impl Configuration {
    /// A road warrior's request: an IPv6 address and DNS servers.
    pub fn address_request() -> Self {
        Configuration::new(
            CfgType::REQUEST,
            vec![
                CfgAttribute::request(CfgAttributeType::INTERNAL_IP6_ADDRESS),
                CfgAttribute::request(CfgAttributeType::INTERNAL_IP6_DNS),
            ],
        )
    }

    /// A CP payload of `cfg_type` with these attributes.
    pub fn new(cfg_type: CfgType, attributes: Vec<CfgAttribute>) -> Self {
        Configuration {
            cfg_type,
            reserved: [0; 3],
            attributes,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let cfg_type = CfgType(r.u8()?);
        let reserved = r.array()?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let raw = r.u16()?;
            let len = usize::from(r.u16()?);
            attributes.push(CfgAttribute {
                reserved: raw & 0x8000 != 0,
                ty: CfgAttributeType(raw & 0x7fff),
                value: r.take(len)?.to_vec(),
            });
        }
        Ok(Configuration {
            cfg_type,
            reserved,
            attributes,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.cfg_type.0);
        out.extend_from_slice(&self.reserved);
        for a in &self.attributes {
            out.put_u16((a.ty.0 & 0x7fff) | if a.reserved { 0x8000 } else { 0 });
            let len = u16::try_from(a.value.len())
                .map_err(|_| EncodeError::TooLong("configuration attribute"))?;
            out.put_u16(len);
            out.extend_from_slice(&a.value);
        }
        Ok(())
    }
}

/// The Encrypted and Authenticated payload, SK (RFC 7296 3.14), still
/// encrypted. See [`crate::crypto::sk`] for opening and sealing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// The type of the first payload inside.
    pub first_payload: PayloadType,
    /// IV, ciphertext and integrity check value.
    pub data: Vec<u8>,
}

/// The Encrypted Fragment payload, SKF (RFC 7383 2.5), still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedFragment {
    /// The type of the first inner payload; only set in fragment 1.
    pub first_payload: PayloadType,
    /// This fragment's number, from 1.
    pub number: u16,
    /// How many fragments the message has.
    pub total: u16,
    /// IV, ciphertext and integrity check value.
    pub data: Vec<u8>,
}

impl EncryptedFragment {
    pub(crate) fn read(
        first_payload: PayloadType,
        r: &mut Reader<'_>,
    ) -> Result<Self, InvalidMessage> {
        let number = r.u16()?;
        let total = r.u16()?;
        if number == 0 || number > total {
            return Err(InvalidMessage::InvalidValue("fragment number"));
        }
        Ok(EncryptedFragment {
            first_payload,
            number,
            total,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_u16(self.number);
        out.put_u16(self.total);
        out.extend_from_slice(&self.data);
    }
}
