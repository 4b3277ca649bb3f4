//! Errors, split by whose fault they are, each knowing the notify it puts on
//! the wire.
//!
//! The split follows what the receiver of an error has to do: an
//! [`InvalidMessage`] could not even be parsed; a [`PeerMisbehaved`] parsed
//! but broke the protocol (or was forged); a [`PeerIncompatible`] is a
//! well-behaved peer we simply cannot agree with; a [`LocalPolicy`] refusal
//! is our own configuration saying no. [`Error::notify`] gives the RFC 7296
//! error notify for each; `None` means the RFC asks for silence (an integrity
//! check failure must not be answered, or an attacker learns from it).

use crate::wire::{NotifyType, PayloadType, TransformId};

/// Bytes that do not form a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// A structure ended before its fields did.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// A structure's length field left bytes unaccounted for.
    #[error("unexpected bytes after {0}")]
    TrailingData(&'static str),
    /// A length field is smaller than the header it is part of, or disagrees
    /// with the datagram.
    #[error("{0} has an impossible length")]
    BadLength(&'static str),
    /// The IKE header's major version is not 2.
    #[error("IKE major version {0} is not supported")]
    UnsupportedMajorVersion(u8),
    /// A payload we do not know has the critical bit set (RFC 7296 2.5).
    #[error("unsupported critical payload {0:?}")]
    UnsupportedCriticalPayload(PayloadType),
    /// An SK or SKF payload that is not the last payload of its message.
    #[error("{0:?} must be the last payload")]
    EncryptedNotLast(PayloadType),
    /// A field holds a value its definition rules out.
    #[error("invalid {0}")]
    InvalidValue(&'static str),
}

/// Well-formed input that breaks the protocol or fails a cryptographic check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The ICV or AEAD tag of an SK/SKF payload or ESP packet did not verify.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// Decryption worked but the padding is malformed.
    #[error("invalid padding in decrypted payload")]
    BadPadding,
    /// A key exchange public value is not a valid group element
    /// (off the curve, or outside 1 < y < p-1).
    #[error("invalid key exchange public value for {0:?}")]
    InvalidPublicValue(TransformId),
    /// The AUTH payload does not verify against the peer's certificate.
    #[error("AUTH payload does not verify")]
    AuthenticationFailed,
    /// An SKF fragment that contradicts the ones before it.
    #[error("inconsistent IKE fragment: {0}")]
    BadFragment(&'static str),
}

/// A correct peer we cannot agree with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIncompatible {
    /// None of the offered proposals is acceptable.
    #[error("no acceptable proposal")]
    NoProposalChosen,
    /// The KE payload uses another group than the one chosen; the initiator
    /// should retry with `0`.
    #[error("KE payload uses the wrong group; {0:?} wanted")]
    InvalidKePayload(TransformId),
    /// An authentication method or signature algorithm we do not implement.
    #[error("unsupported authentication: {0}")]
    UnsupportedAuthentication(&'static str),
}

/// Our own configuration refuses the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPolicy {
    /// The peer's certificate chain or identity is not acceptable.
    #[error("peer certificate refused: {0}")]
    CertificateRefused(#[from] crate::cert::CertError),
    /// The requested traffic selectors are not acceptable.
    #[error("traffic selectors not acceptable")]
    TsUnacceptable,
    /// No internal address can be assigned.
    #[error("no internal address available")]
    InternalAddressFailure,
}

/// Any error from the protocol crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`InvalidMessage`].
    #[error(transparent)]
    InvalidMessage(#[from] InvalidMessage),
    /// See [`PeerMisbehaved`].
    #[error(transparent)]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// See [`PeerIncompatible`].
    #[error(transparent)]
    PeerIncompatible(#[from] PeerIncompatible),
    /// See [`LocalPolicy`].
    #[error(transparent)]
    LocalPolicy(#[from] LocalPolicy),
}

impl Error {
    /// The error notify RFC 7296 asks for, or `None` where it asks for silence.
    pub fn notify(&self) -> Option<NotifyType> {
        Some(match self {
            Error::InvalidMessage(InvalidMessage::UnsupportedMajorVersion(_)) => {
                NotifyType::INVALID_MAJOR_VERSION
            }
            Error::InvalidMessage(InvalidMessage::UnsupportedCriticalPayload(_)) => {
                NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD
            }
            Error::InvalidMessage(_) => NotifyType::INVALID_SYNTAX,
            Error::PeerMisbehaved(PeerMisbehaved::IntegrityCheckFailed)
            | Error::PeerMisbehaved(PeerMisbehaved::BadPadding) => return None,
            Error::PeerMisbehaved(PeerMisbehaved::InvalidPublicValue(_))
            | Error::PeerMisbehaved(PeerMisbehaved::BadFragment(_)) => NotifyType::INVALID_SYNTAX,
            Error::PeerMisbehaved(PeerMisbehaved::AuthenticationFailed) => {
                NotifyType::AUTHENTICATION_FAILED
            }
            Error::PeerIncompatible(PeerIncompatible::NoProposalChosen) => {
                NotifyType::NO_PROPOSAL_CHOSEN
            }
            Error::PeerIncompatible(PeerIncompatible::InvalidKePayload(_)) => {
                NotifyType::INVALID_KE_PAYLOAD
            }
            Error::PeerIncompatible(PeerIncompatible::UnsupportedAuthentication(_)) => {
                NotifyType::AUTHENTICATION_FAILED
            }
            Error::LocalPolicy(LocalPolicy::CertificateRefused(_)) => {
                NotifyType::AUTHENTICATION_FAILED
            }
            Error::LocalPolicy(LocalPolicy::TsUnacceptable) => NotifyType::TS_UNACCEPTABLE,
            Error::LocalPolicy(LocalPolicy::InternalAddressFailure) => {
                NotifyType::INTERNAL_ADDRESS_FAILURE
            }
        })
    }
}

/// A structure too large for its length field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The named structure does not fit its length field.
    #[error("{0} is too long for its length field")]
    TooLong(&'static str),
}
