//! The Security Association payload: proposals, transforms and their
//! attributes (RFC 7296 3.3).

use crate::codec::{Frame, PutExt, Reader};
use crate::error::{EncodeError, InvalidMessage};
use crate::wire::{AttributeType, ProtocolId, TransformId, TransformType};

/// An SA payload: the proposals in order of the sender's preference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityAssociation {
    /// The proposals; a response carries exactly one.
    pub proposals: Vec<Proposal>,
}

/// One proposal: a protocol, an SPI and a set of transforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number, 1 for the first and counting up; a response echoes
    /// the number of the proposal it accepted.
    pub number: u8,
    /// IKE, ESP or AH.
    pub protocol: ProtocolId,
    /// The sender's SPI: empty for IKE in IKE_SA_INIT, 8 bytes for IKE when
    /// rekeying, 4 bytes for ESP/AH.
    pub spi: Vec<u8>,
    /// The transforms. Several of one type are alternatives.
    pub transforms: Vec<Transform>,
    /// The reserved octet of the substructure header, as received (zero
    /// in what we send).
    pub reserved: u8,
}

impl Proposal {
    /// A proposal with a clear reserved field.
    pub fn new(number: u8, protocol: ProtocolId, spi: Vec<u8>, transforms: Vec<Transform>) -> Self {
        Proposal {
            number,
            protocol,
            spi,
            transforms,
            reserved: 0,
        }
    }
}

/// One transform (an algorithm), with its attributes. Two transforms are
/// equal when they name the same algorithm with the same attributes: the
/// reserved fields, kept so that what was parsed is emitted unchanged,
/// are ignored (RFC 7296 3.3.2: "MUST be ignored on receipt").
#[derive(Debug, Clone)]
pub struct Transform {
    /// Encryption, PRF, integrity, key exchange or ESN.
    pub ty: TransformType,
    /// The algorithm, numbered within `ty`.
    pub id: TransformId,
    /// Attributes; in practice only the key length.
    pub attributes: Vec<Attribute>,
    /// The reserved octet of the substructure header, as received.
    pub header_reserved: u8,
    /// The reserved octet after the transform type, as received.
    pub reserved: u8,
}

impl PartialEq for Transform {
    fn eq(&self, other: &Self) -> bool {
        self.ty == other.ty && self.id == other.id && self.attributes == other.attributes
    }
}

impl Eq for Transform {}

/// A transform attribute, in TV (short) or TLV (long) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute type, without the format bit.
    pub ty: AttributeType,
    /// The value in the form it was (or will be) sent.
    pub value: AttributeValue,
}

/// The two encodings of an attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// TV format: a 16-bit value in the attribute header.
    Short(u16),
    /// TLV format: a value with its own length.
    Long(Vec<u8>),
}

impl Transform {
    /// A transform without attributes.
    pub fn new(ty: TransformType, id: TransformId) -> Self {
        Transform {
            ty,
            id,
            attributes: Vec::new(),
            header_reserved: 0,
            reserved: 0,
        }
    }

    /// A transform with a key length attribute (in bits), as AES needs.
    pub fn with_key_length(ty: TransformType, id: TransformId, bits: u16) -> Self {
        Transform {
            ty,
            id,
            attributes: vec![Attribute {
                ty: AttributeType::KEY_LENGTH,
                value: AttributeValue::Short(bits),
            }],
            header_reserved: 0,
            reserved: 0,
        }
    }

    /// The key length attribute, if there is exactly one in TV form.
    pub fn key_length(&self) -> Option<u16> {
        let mut lengths = self
            .attributes
            .iter()
            .filter(|a| a.ty == AttributeType::KEY_LENGTH);
        match (lengths.next(), lengths.next()) {
            (
                Some(Attribute {
                    value: AttributeValue::Short(bits),
                    ..
                }),
                None,
            ) => Some(*bits),
            _ => None,
        }
    }
}

/// The "last substructure" octet of proposals and transforms: 0 for the
/// last, this value when more follow (2 for proposals, 3 for transforms).
fn check_last(octet: u8, last: bool, more: u8, what: &'static str) -> Result<(), InvalidMessage> {
    if octet == if last { 0 } else { more } {
        Ok(())
    } else {
        Err(InvalidMessage::InvalidValue(what))
    }
}

impl SecurityAssociation {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let mut proposals = Vec::new();
        while !r.is_empty() {
            let Frame {
                head: [last, reserved],
                body: mut p,
            } = Frame::read(r, "proposal")?;
            check_last(last, r.is_empty(), 2, "last proposal substructure")?;
            proposals.push(Proposal::read(reserved, &mut p)?);
            p.finish()?;
        }
        Ok(SecurityAssociation { proposals })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for (i, p) in self.proposals.iter().enumerate() {
            let last = if i + 1 == self.proposals.len() { 0 } else { 2 };
            Frame::write(out, [last, p.reserved], "proposal", |out| p.write(out))?;
        }
        Ok(())
    }
}

impl Proposal {
    fn read(reserved: u8, r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let number = r.u8()?;
        let protocol = ProtocolId(r.u8()?);
        let spi_size = usize::from(r.u8()?);
        let count = r.u8()?;
        let spi = r.take(spi_size)?.to_vec();
        let mut transforms = Vec::with_capacity(usize::from(count));
        for i in 0..count {
            let Frame {
                head: [last, reserved],
                body: mut t,
            } = Frame::read(r, "transform")?;
            check_last(last, i + 1 == count, 3, "last transform substructure")?;
            transforms.push(Transform::read(reserved, &mut t)?);
        }
        Ok(Proposal {
            number,
            protocol,
            spi,
            transforms,
            reserved,
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let spi_size = u8::try_from(self.spi.len()).map_err(|_| EncodeError::TooLong("SPI"))?;
        let count =
            u8::try_from(self.transforms.len()).map_err(|_| EncodeError::TooLong("transforms"))?;
        out.extend_from_slice(&[self.number, self.protocol.0, spi_size, count]);
        out.extend_from_slice(&self.spi);
        for (i, t) in self.transforms.iter().enumerate() {
            let last = if i + 1 == self.transforms.len() { 0 } else { 3 };
            Frame::write(out, [last, t.header_reserved], "transform", |out| {
                t.write(out)
            })?;
        }
        Ok(())
    }
}

impl Transform {
    fn read(header_reserved: u8, r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let ty = TransformType(r.u8()?);
        let reserved = r.u8()?;
        let id = TransformId(r.u16()?);
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let raw = r.u16()?;
            let ty = AttributeType(raw & 0x7fff);
            let value = if raw & 0x8000 != 0 {
                AttributeValue::Short(r.u16()?)
            } else {
                let len = usize::from(r.u16()?);
                AttributeValue::Long(r.take(len)?.to_vec())
            };
            attributes.push(Attribute { ty, value });
        }
        Ok(Transform {
            ty,
            id,
            attributes,
            header_reserved,
            reserved,
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.ty.0);
        out.push(self.reserved);
        out.put_u16(self.id.0);
        for a in &self.attributes {
            match &a.value {
                AttributeValue::Short(v) => {
                    out.put_u16(0x8000 | a.ty.0);
                    out.put_u16(*v);
                }
                AttributeValue::Long(v) => {
                    out.put_u16(a.ty.0 & 0x7fff);
                    let len = u16::try_from(v.len())
                        .map_err(|_| EncodeError::TooLong("transform attribute"))?;
                    out.put_u16(len);
                    out.extend_from_slice(v);
                }
            }
        }
        Ok(())
    }
}
