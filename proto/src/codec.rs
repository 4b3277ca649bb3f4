//! Bounds-checked reading and length-prefixed writing of wire structures.
//!
//! Every parser in this crate reads untrusted bytes through [`Reader`], which
//! never indexes past its slice: each accessor returns an error naming the
//! structure that was cut short, and [`Reader::sub`] hands out a reader
//! limited to a length field so a nested structure can never read into its
//! neighbour. Writing goes to a plain `Vec<u8>`; [`LengthPrefix`] back-patches
//! a length field once the structure behind it is complete, and refuses
//! lengths the field cannot hold instead of truncating them.

use crate::error::{EncodeError, InvalidMessage};

/// A cursor over untrusted bytes whose accessors cannot panic.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, which holds a structure called `what` (used in errors).
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], InvalidMessage> {
        if len > self.buf.len() {
            return Err(InvalidMessage::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], InvalidMessage> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Takes the next `len` bytes as a reader of their own, for structure `what`.
    pub fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader<'a>, InvalidMessage> {
        Ok(Reader::new(self.take(len)?, what))
    }

    /// Reads one octet.
    pub fn u8(&mut self) -> Result<u8, InvalidMessage> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, InvalidMessage> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, InvalidMessage> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, InvalidMessage> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless every byte was consumed: trailing data inside a length
    /// field is a framing error, not something to skip.
    pub fn finish(&self) -> Result<(), InvalidMessage> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(InvalidMessage::TrailingData(self.what))
        }
    }
}

/// Appends big-endian integers to a buffer.
pub trait PutExt {
    /// Appends a big-endian u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a big-endian u32.
    fn put_u32(&mut self, v: u32);
}

impl PutExt for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
}

/// A length field written as a placeholder and filled in once the structure
/// it measures is complete.
#[must_use = "a length prefix must be finished"]
pub struct LengthPrefix {
    field_at: usize,
    counted_from: usize,
    width: usize,
    what: &'static str,
}

impl LengthPrefix {
    /// Writes a placeholder of `width` (2 or 4) bytes at the end of `out`.
    /// The length will count from `counted_from` (an offset into `out`, so
    /// headers that include themselves in the length pass their own start).
    pub fn start(out: &mut Vec<u8>, counted_from: usize, width: usize, what: &'static str) -> Self {
        let field_at = out.len();
        out.resize(field_at + width, 0);
        LengthPrefix {
            field_at,
            counted_from,
            width,
            what,
        }
    }

    /// A u16 length counting the structure that starts at `counted_from`.
    pub fn u16(out: &mut Vec<u8>, counted_from: usize, what: &'static str) -> Self {
        Self::start(out, counted_from, 2, what)
    }

    /// Fills in the length of everything from `counted_from` to the end of `out`.
    pub fn finish(self, out: &mut [u8]) -> Result<(), EncodeError> {
        let len = out.len() - self.counted_from;
        let field = &mut out[self.field_at..self.field_at + self.width];
        match self.width {
            2 => {
                let len = u16::try_from(len).map_err(|_| EncodeError::TooLong(self.what))?;
                field.copy_from_slice(&len.to_be_bytes());
            }
            _ => {
                let len = u32::try_from(len).map_err(|_| EncodeError::TooLong(self.what))?;
                field.copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// The framing every IKEv2 payload and every SA and traffic selector
/// substructure shares (RFC 7296 3.2, 3.3.1, 3.3.2, 3.13.1): two octets of
/// their own (next payload and flags, last-substructure and reserved, type
/// and protocol), then a 16-bit length that counts the whole structure,
/// these four octets included.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The two octets before the length.
    pub head: [u8; 2],
    /// A reader confined to what the length covers after the header.
    pub body: Reader<'a>,
}

impl<'a> Frame<'a> {
    /// Reads one framed structure called `what`.
    pub fn read(r: &mut Reader<'a>, what: &'static str) -> Result<Frame<'a>, InvalidMessage> {
        let head = r.array()?;
        let len = usize::from(r.u16()?);
        let body_len = len.checked_sub(4).ok_or(InvalidMessage::BadLength(what))?;
        Ok(Frame {
            head,
            body: r.sub(body_len, what)?,
        })
    }

    /// Writes one framed structure: `head`, the length, and what `body`
    /// writes.
    pub fn write(
        out: &mut Vec<u8>,
        head: [u8; 2],
        what: &'static str,
        body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&head);
        let len = LengthPrefix::u16(out, start, what);
        body(out)?;
        len.finish(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_to_read_past_its_end() {
        let mut r = Reader::new(&[1, 2, 3], "test");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(r.u16(), Err(InvalidMessage::Truncated("test")));
        assert_eq!(r.u8().unwrap(), 3);
        r.finish().unwrap();
    }

    #[test]
    fn sub_reader_is_confined_to_its_length() {
        let mut r = Reader::new(&[0, 0, 9, 9], "outer");
        let mut inner = r.sub(2, "inner").unwrap();
        assert_eq!(inner.u16().unwrap(), 0);
        assert_eq!(inner.u8(), Err(InvalidMessage::Truncated("inner")));
        assert_eq!(r.rest(), &[9, 9]);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut r = Reader::new(&[1, 2], "thing");
        r.u8().unwrap();
        assert_eq!(r.finish(), Err(InvalidMessage::TrailingData("thing")));
    }

    #[test]
    fn a_frame_counts_its_header_and_confines_its_body() {
        let mut out = Vec::new();
        Frame::write(&mut out, [7, 0x80], "thing", |o| {
            o.extend_from_slice(&[1, 2, 3]);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, [7, 0x80, 0, 7, 1, 2, 3]);
        out.push(9);
        let mut r = Reader::new(&out, "outer");
        let mut f = Frame::read(&mut r, "thing").unwrap();
        assert_eq!(f.head, [7, 0x80]);
        assert_eq!(f.body.rest(), &[1, 2, 3]);
        assert_eq!(r.rest(), &[9]);
        let mut short = Reader::new(&[0, 0, 0, 3], "outer");
        assert_eq!(
            Frame::read(&mut short, "thing").unwrap_err(),
            InvalidMessage::BadLength("thing")
        );
    }

    #[test]
    fn length_prefix_refuses_overflow() {
        let mut out = Vec::new();
        let len = LengthPrefix::u16(&mut out, 0, "big");
        out.resize(70_000, 0);
        assert_eq!(len.finish(&mut out), Err(EncodeError::TooLong("big")));
    }
}
