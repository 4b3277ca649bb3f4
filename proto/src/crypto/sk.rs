//! The Encrypted payload (SK, RFC 7296 3.14) and Encrypted Fragment payload
//! (SKF, RFC 7383): sealing inner payloads into a message, opening a
//! received message, and putting fragments back together.
//!
//! With an AEAD (RFC 5282) the associated data is everything in the
//! message before the IV: the IKE header, any cleartext payloads, and the
//! SK/SKF payload header (for SKF including the fragment number and total).
//! With CBC the ICV is an HMAC over the whole message up to the ICV. Since
//! SK/SKF is always the last payload, both are a prefix of the datagram, so
//! sealing first emits the message with a placeholder of the final length
//! and then fills it in.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::encr::CipherKey;
use super::integ::IntegrityKey;
use super::{Encryption, Integrity};
use crate::error::{Error, InvalidMessage, PeerMisbehaved};
use crate::wire::{
    emit_chain, Encrypted, EncryptedFragment, Header, Message, Payload, PayloadBody, PayloadType,
    HEADER_LEN,
};

/// The keys protecting one direction of an IKE SA.
#[derive(Debug)]
pub struct SkCipher {
    encr: Encryption,
    cipher: CipherKey,
    integ: Option<IntegrityKey>,
}

/// A decrypted SK or SKF payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The message header.
    pub header: Header,
    /// Cleartext payloads before the encrypted one (normally none).
    pub cleartext: Vec<Payload>,
    /// The type of the first inner payload (NONE in SKF fragments after the first).
    pub first_payload: PayloadType,
    /// For SKF: fragment number and total.
    pub fragment: Option<(u16, u16)>,
    /// The inner payload chain (padding removed).
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl SkCipher {
    /// Keys for one direction: `sk_e` is SK_ei or SK_er (with salt for an
    /// AEAD), `sk_a` SK_ai or SK_ar (empty for an AEAD).
    pub fn new(
        encr: Encryption,
        integ: Option<Integrity>,
        sk_e: &[u8],
        sk_a: &[u8],
    ) -> Option<SkCipher> {
        if encr.is_aead() == integ.is_some() || integ.map_or(0, Integrity::key_len) != sk_a.len() {
            return None;
        }
        Some(SkCipher {
            encr,
            cipher: encr.key(sk_e)?,
            integ: integ.map(|i| i.key(sk_a)),
        })
    }

    fn icv_len(&self) -> usize {
        self.encr.tag_len() + self.integ.as_ref().map_or(0, |k| k.algorithm().icv_len())
    }

    /// The length of the encrypted payload body (IV, ciphertext, ICV) for
    /// `plaintext_len` octets of inner payloads.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        let block = self.encr.block_len();
        // Inner payloads, then padding, then the pad length octet.
        let padded = (plaintext_len + 1).div_ceil(block) * block;
        self.encr.iv_len() + padded + self.icv_len()
    }

    /// The most inner-payload octets that fit in a message of `max_len`
    /// octets with `overhead` octets of header and payload headers.
    pub fn max_plaintext(&self, max_len: usize, overhead: usize) -> usize {
        let room = max_len.saturating_sub(overhead + self.encr.iv_len() + self.icv_len());
        let block = self.encr.block_len();
        (room / block * block).saturating_sub(1)
    }

    /// Builds the message `header | cleartext | SK{inner}` and encrypts it.
    pub fn seal(
        &self,
        header: &Header,
        cleartext: &[Payload],
        inner: &[Payload],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<u8>, Error> {
        let mut plaintext = Zeroizing::new(Vec::new());
        let first = emit_chain(inner, &mut plaintext)
            .map_err(|_| InvalidMessage::BadLength("inner payloads"))?;
        let body = PayloadBody::Encrypted(Encrypted {
            first_payload: first,
            data: vec![0; self.sealed_len(plaintext.len())],
        });
        self.seal_body(header, cleartext, body, &plaintext, rng)
    }

    /// Splits `inner` into SKF fragments that each fit in `max_len` octets of
    /// IKE message (RFC 7383 2.5), and seals each.
    pub fn seal_fragments(
        &self,
        header: &Header,
        inner: &[Payload],
        max_len: usize,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut plaintext = Zeroizing::new(Vec::new());
        let first = emit_chain(inner, &mut plaintext)
            .map_err(|_| InvalidMessage::BadLength("inner payloads"))?;
        // IKE header, SKF generic header, fragment number and total.
        let chunk = self.max_plaintext(max_len, HEADER_LEN + 8);
        if chunk == 0 {
            return Err(InvalidMessage::BadLength("fragment size").into());
        }
        let chunks: Vec<&[u8]> = plaintext.chunks(chunk).collect();
        let total =
            u16::try_from(chunks.len()).map_err(|_| InvalidMessage::BadLength("fragment count"))?;
        chunks
            .iter()
            .zip(1u16..)
            .map(|(piece, number)| {
                let body = PayloadBody::EncryptedFragment(EncryptedFragment {
                    first_payload: if number == 1 {
                        first
                    } else {
                        PayloadType::NONE
                    },
                    number,
                    total,
                    data: vec![0; self.sealed_len(piece.len())],
                });
                self.seal_body(header, &[], body, piece, rng)
            })
            .collect()
    }

    fn seal_body(
        &self,
        header: &Header,
        cleartext: &[Payload],
        body: PayloadBody,
        plaintext: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<u8>, Error> {
        let sealed_len = match &body {
            PayloadBody::Encrypted(e) => e.data.len(),
            PayloadBody::EncryptedFragment(f) => f.data.len(),
            _ => return Err(InvalidMessage::InvalidValue("encrypted payload").into()),
        };
        let mut payloads = cleartext.to_vec();
        payloads.push(body.into());
        let mut msg = Message {
            header: header.clone(),
            payloads,
        }
        .emit()
        .map_err(|_| InvalidMessage::BadLength("IKE message"))?;

        let aad_len = msg.len() - sealed_len;
        let (aad, sealed) = msg.split_at_mut(aad_len);
        let iv_len = self.encr.iv_len();
        let icv_len = self.icv_len();
        let (iv, rest) = sealed.split_at_mut(iv_len);
        let (ct, icv) = rest.split_at_mut(rest.len() - icv_len);
        rng.fill_bytes(iv);
        // Padding content is arbitrary (RFC 7296 3.14); zeros it is.
        ct[..plaintext.len()].copy_from_slice(plaintext);
        let pad_len = ct.len() - plaintext.len() - 1;
        ct[plaintext.len()..].fill(0);
        ct[ct.len() - 1] = pad_len as u8;
        let tag_len = self.encr.tag_len();
        self.cipher.seal(iv, aad, ct, &mut icv[..tag_len])?;
        if let Some(integ) = &self.integ {
            let signed = msg.len() - icv_len;
            let (covered, icv) = msg.split_at_mut(signed);
            integ.sign_into(&[covered], icv);
        }
        Ok(msg)
    }

    /// Authenticates and decrypts the SK or SKF payload of a datagram.
    pub fn open(&self, datagram: &[u8]) -> Result<Opened, Error> {
        let Message {
            header,
            mut payloads,
        } = Message::parse(datagram)?;
        let last = payloads.pop().map(|p| p.body);
        let (first_payload, fragment, data) = match last {
            Some(PayloadBody::Encrypted(e)) => (e.first_payload, None, e.data),
            Some(PayloadBody::EncryptedFragment(f)) => {
                (f.first_payload, Some((f.number, f.total)), f.data)
            }
            _ => {
                return Err(
                    InvalidMessage::InvalidValue("message without encrypted payload").into(),
                )
            }
        };
        let iv_len = self.encr.iv_len();
        let icv_len = self.icv_len();
        let block = self.encr.block_len();
        if data.len() < iv_len + icv_len + 1
            || !(data.len() - iv_len - icv_len).is_multiple_of(block)
        {
            return Err(InvalidMessage::BadLength("encrypted payload").into());
        }
        let aad = &datagram[..datagram.len() - data.len()];
        if let Some(integ) = &self.integ {
            let (covered, icv) = datagram.split_at(datagram.len() - icv_len);
            if !integ.verify(&[covered], icv) {
                return Err(PeerMisbehaved::IntegrityCheckFailed.into());
            }
        }
        let (iv, rest) = data.split_at(iv_len);
        let (ct, icv) = rest.split_at(rest.len() - icv_len);
        let mut plaintext = Zeroizing::new(ct.to_vec());
        let tag = &icv[..self.encr.tag_len()];
        let len = self.cipher.open(iv, aad, &mut plaintext, tag)?;
        plaintext.truncate(len);
        let pad_len = usize::from(*plaintext.last().ok_or(PeerMisbehaved::BadPadding)?);
        let inner_len = plaintext
            .len()
            .checked_sub(pad_len + 1)
            .ok_or(PeerMisbehaved::BadPadding)?;
        plaintext.truncate(inner_len);
        Ok(Opened {
            header,
            cleartext: payloads,
            first_payload,
            fragment,
            plaintext,
        })
    }
}

/// The most fragments one message may be split into, and the most
/// reassembled octets, so a peer cannot make us hold unbounded memory.
pub const MAX_FRAGMENTS: u16 = 64;
/// See [`MAX_FRAGMENTS`].
pub const MAX_REASSEMBLED: usize = 64 * 1024;

/// A reassembled message: the first inner payload type and the inner chain.
pub type Reassembled = (PayloadType, Zeroizing<Vec<u8>>);

/// Collects the decrypted fragments of one message (RFC 7383 2.6). A
/// fragment of another message (another message ID) starts over: one
/// buffer serves one direction, where the window holds one message.
#[derive(Debug, Default)]
pub struct Reassembly {
    message_id: u32,
    total: u16,
    first_payload: PayloadType,
    pieces: Vec<Option<Zeroizing<Vec<u8>>>>,
    bytes: usize,
}

impl Reassembly {
    /// Adds an opened fragment. Returns the first inner payload type and
    /// the whole inner payload chain once every fragment has arrived.
    pub fn add(
        &mut self,
        message_id: u32,
        opened: Opened,
    ) -> Result<Option<Reassembled>, PeerMisbehaved> {
        let Some((number, total)) = opened.fragment else {
            return Err(PeerMisbehaved::BadFragment("not a fragment"));
        };
        if total > MAX_FRAGMENTS {
            return Err(PeerMisbehaved::BadFragment("too many fragments"));
        }
        if message_id != self.message_id || self.total == 0 {
            *self = Reassembly {
                message_id,
                ..Reassembly::default()
            };
        }
        if total < self.total {
            // An older, coarser fragmentation of the same message (2.6):
            // keep what we have.
            return Ok(None);
        }
        if total > self.total {
            // The sender re-fragmented with a smaller size: start over.
            *self = Reassembly {
                message_id,
                total,
                first_payload: PayloadType::NONE,
                pieces: vec![None; usize::from(total)],
                bytes: 0,
            };
        }
        let index = usize::from(number - 1);
        if self.pieces.get(index).is_some_and(Option::is_some) {
            return Ok(None);
        }
        if number == 1 {
            self.first_payload = opened.first_payload;
        }
        self.bytes += opened.plaintext.len();
        if self.bytes > MAX_REASSEMBLED {
            *self = Reassembly::default();
            return Err(PeerMisbehaved::BadFragment("reassembled message too large"));
        }
        if let Some(slot) = self.pieces.get_mut(index) {
            *slot = Some(opened.plaintext);
        }
        if self.pieces.iter().any(Option::is_none) {
            return Ok(None);
        }
        let mut whole = Zeroizing::new(Vec::with_capacity(self.bytes));
        for piece in self.pieces.iter().flatten() {
            whole.extend_from_slice(piece);
        }
        let first = self.first_payload;
        *self = Reassembly::default();
        Ok(Some((first, whole)))
    }
}
