//! The fixed IKE header (RFC 7296 3.1).

use crate::codec::{PutExt, Reader};
use crate::error::InvalidMessage;
use crate::wire::{ExchangeType, PayloadType};

/// Length of the IKE header on the wire.
pub const HEADER_LEN: usize = 28;

/// The IKE header flags octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Set in messages sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// The sender can speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// This message is a response.
    pub const RESPONSE: u8 = 0x20;

    /// Flags for a message from the original `initiator` that is (or not) a `response`.
    pub fn new(initiator: bool, response: bool) -> Self {
        let mut f = 0;
        if initiator {
            f |= Self::INITIATOR;
        }
        if response {
            f |= Self::RESPONSE;
        }
        Flags(f)
    }

    /// Whether the sender is the original initiator.
    pub fn initiator(self) -> bool {
        self.0 & Self::INITIATOR != 0
    }

    /// Whether the message is a response.
    pub fn response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }
}

/// The IKE header, without the two fields derived from what follows it
/// (next payload and length), which [`crate::wire::Message`] computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The initiator's SPI.
    pub spi_i: u64,
    /// The responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// The minor version (the major version is always 2 here).
    pub minor_version: u8,
    /// The exchange this message belongs to.
    pub exchange: ExchangeType,
    /// Initiator/response/version flags.
    pub flags: Flags,
    /// The message ID.
    pub message_id: u32,
}

impl Header {
    /// Parses the header at the start of `r`, returning it with the first
    /// payload type and the length field.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<(Header, PayloadType, u32), InvalidMessage> {
        let spi_i = r.u64()?;
        let spi_r = r.u64()?;
        let next = PayloadType(r.u8()?);
        let version = r.u8()?;
        if version >> 4 != 2 {
            return Err(InvalidMessage::UnsupportedMajorVersion(version >> 4));
        }
        let exchange = ExchangeType(r.u8()?);
        let flags = Flags(r.u8()?);
        let message_id = r.u32()?;
        let length = r.u32()?;
        Ok((
            Header {
                spi_i,
                spi_r,
                minor_version: version & 0x0f,
                exchange,
                flags,
                message_id,
            },
            next,
            length,
        ))
    }

    /// Parses only the header of a datagram: enough to find the IKE SA a
    /// message belongs to before doing any cryptographic work.
    pub fn peek(datagram: &[u8]) -> Result<Header, InvalidMessage> {
        let (header, _, length) = Header::read(&mut Reader::new(datagram, "IKE header"))?;
        if length as usize != datagram.len() {
            return Err(InvalidMessage::BadLength("IKE message"));
        }
        Ok(header)
    }

    pub(crate) fn write(&self, next: PayloadType, length: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(next.0);
        out.push(0x20 | (self.minor_version & 0x0f));
        out.push(self.exchange.0);
        out.push(self.flags.0);
        out.put_u32(self.message_id);
        out.put_u32(length);
    }
}
