//! IKEv2 and ESP on the wire: parsing untrusted bytes into plain values and
//! emitting those values back to bytes.
//!
//! A [`Message`] is the IKE header and a chain of [`Payload`]s. Parsing is
//! strict about framing (every length must add up, nothing may trail) and
//! lenient about numbers: a payload, notify, transform or attribute type that
//! is not registered survives a parse and an emit unchanged, except that an
//! unknown payload with the critical bit set makes the whole message
//! unsupported, as RFC 7296 2.5 requires. The encrypted payloads (SK, SKF)
//! stay opaque here; [`crate::crypto::sk`] opens them and hands the inner
//! bytes back to [`parse_chain`].
//!
//! For every message this module produces, `Message::parse(m.emit())`
//! gives `m` back, and for every datagram it accepts, emitting the parse
//! gives the same bytes: reserved fields are kept as received (and sent
//! as zero in what sixgate builds), and the "last substructure" octets of
//! proposals and transforms must say what they mean or the message is
//! refused. The generic header of payloads, and of SA and traffic
//! selector substructures, is read and written in one place,
//! [`crate::codec::Frame`].

mod esp;
mod header;
mod numbers;
mod payloads;
mod sa;

pub use esp::{classify_udp4500, EspHeader, EspTrailer, Udp4500, NON_ESP_MARKER};
pub use header::{Flags, Header, HEADER_LEN};
pub use numbers::{
    encr_id, esn_id, integ_id, ke_id, prf_id, AttributeType, AuthMethod, CertEncoding,
    CfgAttributeType, CfgType, ExchangeType, HashAlgorithm, IdType, NotifyType, PayloadType,
    ProtocolId, TransformId, TransformType, TsType,
};
pub use payloads::{
    Authentication, Certificate, CfgAttribute, Configuration, Delete, Encrypted, EncryptedFragment,
    Identification, Identity, KeyExchange, Notify, TrafficSelector, TrafficSelectors, TsRange,
};
pub use sa::{Attribute, AttributeValue, Proposal, SecurityAssociation, Transform};

use crate::codec::{Frame, Reader};
use crate::error::{EncodeError, InvalidMessage};

/// One payload of a chain: its body and the flags octet it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The critical bit. Receivers ignore it on payloads they know; it is
    /// kept so that what was parsed is emitted unchanged.
    pub critical: bool,
    /// The seven reserved bits after it, as received (clear in what we
    /// send).
    pub reserved: u8,
    /// What the payload says.
    pub body: PayloadBody,
}

/// The body of a payload, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadBody {
    /// SA.
    Sa(SecurityAssociation),
    /// KE.
    Ke(KeyExchange),
    /// IDi.
    IdI(Identification),
    /// IDr.
    IdR(Identification),
    /// CERT.
    Cert(Certificate),
    /// CERTREQ.
    CertReq(Certificate),
    /// AUTH.
    Auth(Authentication),
    /// Ni or Nr.
    Nonce(Vec<u8>),
    /// N.
    Notify(Notify),
    /// D.
    Delete(Delete),
    /// V.
    VendorId(Vec<u8>),
    /// TSi.
    TsI(TrafficSelectors),
    /// TSr.
    TsR(TrafficSelectors),
    /// SK, still encrypted; always the last payload.
    Encrypted(Encrypted),
    /// CP.
    Cp(Configuration),
    /// EAP, carried opaquely.
    Eap(Vec<u8>),
    /// SKF, still encrypted; always the last payload.
    EncryptedFragment(EncryptedFragment),
    /// A payload type this crate does not know (never critical).
    Unknown {
        /// Its type.
        ty: PayloadType,
        /// Its body.
        data: Vec<u8>,
    },
}

impl PayloadBody {
    /// The payload type that announces this body in the chain.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            PayloadBody::Sa(_) => PayloadType::SA,
            PayloadBody::Ke(_) => PayloadType::KE,
            PayloadBody::IdI(_) => PayloadType::IDI,
            PayloadBody::IdR(_) => PayloadType::IDR,
            PayloadBody::Cert(_) => PayloadType::CERT,
            PayloadBody::CertReq(_) => PayloadType::CERTREQ,
            PayloadBody::Auth(_) => PayloadType::AUTH,
            PayloadBody::Nonce(_) => PayloadType::NONCE,
            PayloadBody::Notify(_) => PayloadType::NOTIFY,
            PayloadBody::Delete(_) => PayloadType::DELETE,
            PayloadBody::VendorId(_) => PayloadType::VENDOR_ID,
            PayloadBody::TsI(_) => PayloadType::TSI,
            PayloadBody::TsR(_) => PayloadType::TSR,
            PayloadBody::Encrypted(_) => PayloadType::SK,
            PayloadBody::Cp(_) => PayloadType::CP,
            PayloadBody::Eap(_) => PayloadType::EAP,
            PayloadBody::EncryptedFragment(_) => PayloadType::SKF,
            PayloadBody::Unknown { ty, .. } => *ty,
        }
    }

    /// For SK and SKF: the type of the first inner payload, which their
    /// generic header carries in place of the next payload.
    fn inner_first(&self) -> Option<PayloadType> {
        match self {
            PayloadBody::Encrypted(e) => Some(e.first_payload),
            PayloadBody::EncryptedFragment(f) => Some(f.first_payload),
            _ => None,
        }
    }

    fn read(
        ty: PayloadType,
        next: PayloadType,
        r: &mut Reader<'_>,
    ) -> Result<Self, InvalidMessage> {
        Ok(match ty {
            PayloadType::SA => PayloadBody::Sa(SecurityAssociation::read(r)?),
            PayloadType::KE => PayloadBody::Ke(KeyExchange::read(r)?),
            PayloadType::IDI => PayloadBody::IdI(Identification::read(r)?),
            PayloadType::IDR => PayloadBody::IdR(Identification::read(r)?),
            PayloadType::CERT => PayloadBody::Cert(Certificate::read(r)?),
            PayloadType::CERTREQ => PayloadBody::CertReq(Certificate::read(r)?),
            PayloadType::AUTH => PayloadBody::Auth(Authentication::read(r)?),
            PayloadType::NONCE => PayloadBody::Nonce(r.rest().to_vec()),
            PayloadType::NOTIFY => PayloadBody::Notify(Notify::read(r)?),
            PayloadType::DELETE => PayloadBody::Delete(Delete::read(r)?),
            PayloadType::VENDOR_ID => PayloadBody::VendorId(r.rest().to_vec()),
            PayloadType::TSI => PayloadBody::TsI(TrafficSelectors::read(r)?),
            PayloadType::TSR => PayloadBody::TsR(TrafficSelectors::read(r)?),
            PayloadType::SK => PayloadBody::Encrypted(Encrypted {
                first_payload: next,
                data: r.rest().to_vec(),
            }),
            PayloadType::CP => PayloadBody::Cp(Configuration::read(r)?),
            PayloadType::EAP => PayloadBody::Eap(r.rest().to_vec()),
            PayloadType::SKF => PayloadBody::EncryptedFragment(EncryptedFragment::read(next, r)?),
            ty => PayloadBody::Unknown {
                ty,
                data: r.rest().to_vec(),
            },
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            PayloadBody::Sa(p) => p.write(out)?,
            PayloadBody::Ke(p) => p.write(out),
            PayloadBody::IdI(p) | PayloadBody::IdR(p) => p.write(out),
            PayloadBody::Cert(p) | PayloadBody::CertReq(p) => p.write(out),
            PayloadBody::Auth(p) => p.write(out),
            PayloadBody::Nonce(d) | PayloadBody::VendorId(d) | PayloadBody::Eap(d) => {
                out.extend_from_slice(d)
            }
            PayloadBody::Notify(p) => p.write(out)?,
            PayloadBody::Delete(p) => p.write(out)?,
            PayloadBody::TsI(p) | PayloadBody::TsR(p) => p.write(out)?,
            PayloadBody::Encrypted(p) => out.extend_from_slice(&p.data),
            PayloadBody::Cp(p) => p.write(out)?,
            PayloadBody::EncryptedFragment(p) => p.write(out),
            PayloadBody::Unknown { data, .. } => out.extend_from_slice(data),
        }
        Ok(())
    }
}

impl From<PayloadBody> for Payload {
    fn from(body: PayloadBody) -> Self {
        Payload {
            critical: false,
            reserved: 0,
            body,
        }
    }
}

/// Parses a chain of payloads whose first payload has type `first`: the
/// payloads of a message, or the plaintext inside an SK payload.
pub fn parse_chain(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, InvalidMessage> {
    let mut r = Reader::new(bytes, "payload chain");
    let mut payloads = Vec::new();
    let mut ty = first;
    while ty != PayloadType::NONE {
        let Frame {
            head: [next, flags],
            mut body,
        } = Frame::read(&mut r, "payload")?;
        let next = PayloadType(next);
        let critical = flags & 0x80 != 0;
        let parsed = PayloadBody::read(ty, next, &mut body)?;
        body.finish()?;
        if let PayloadBody::Unknown { ty, .. } = parsed {
            if critical {
                return Err(InvalidMessage::UnsupportedCriticalPayload(ty));
            }
        }
        let encrypted = parsed.inner_first().is_some();
        payloads.push(Payload {
            critical,
            reserved: flags & 0x7f,
            body: parsed,
        });
        if encrypted {
            // SK and SKF end the chain: their "next payload" names the
            // first payload inside them.
            if !r.is_empty() {
                return Err(InvalidMessage::EncryptedNotLast(ty));
            }
            break;
        }
        ty = next;
    }
    r.finish()?;
    Ok(payloads)
}

/// Emits a chain of payloads and returns the type of the first one (NONE
/// for an empty chain), to go in whatever header precedes the chain.
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> Result<PayloadType, EncodeError> {
    for (i, p) in payloads.iter().enumerate() {
        let next = match p.body.inner_first() {
            Some(first) => first,
            None => payloads
                .get(i + 1)
                .map_or(PayloadType::NONE, |n| n.body.payload_type()),
        };
        let flags = if p.critical { 0x80 } else { 0 } | (p.reserved & 0x7f);
        Frame::write(out, [next.0, flags], "payload", |out| p.body.write(out))?;
    }
    Ok(payloads
        .first()
        .map_or(PayloadType::NONE, |p| p.body.payload_type()))
}

/// An IKE message: header and payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header (its next-payload and length fields are derived).
    pub header: Header,
    /// The payloads, SK or SKF last if present.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses one IKE message; the datagram must hold exactly the message
    /// (strip the non-ESP marker of port 4500 first).
    pub fn parse(datagram: &[u8]) -> Result<Message, InvalidMessage> {
        let mut r = Reader::new(datagram, "IKE message");
        let (header, first, length) = Header::read(&mut r)?;
        if length as usize != datagram.len() {
            return Err(InvalidMessage::BadLength("IKE message"));
        }
        let payloads = parse_chain(first, r.rest())?;
        Ok(Message { header, payloads })
    }

    /// Emits the message.
    pub fn emit(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 256);
        self.header.write(PayloadType::NONE, 0, &mut out);
        let first = emit_chain(&self.payloads, &mut out)?;
        out[16] = first.0;
        let len = u32::try_from(out.len()).map_err(|_| EncodeError::TooLong("IKE message"))?;
        out[24..28].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// The bodies of the payloads, in order.
    pub fn bodies(&self) -> impl Iterator<Item = &PayloadBody> {
        self.payloads.iter().map(|p| &p.body)
    }

    /// The notifications of the given type.
    pub fn notifies(&self, ty: NotifyType) -> impl Iterator<Item = &Notify> {
        self.bodies().filter_map(move |b| match b {
            PayloadBody::Notify(n) if n.ty == ty => Some(n),
            _ => None,
        })
    }
}
