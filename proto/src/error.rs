//! Errors, split by whose fault they are, each knowing the notify it puts on
//! the wire.
//!
//! The split follows what the receiver of an error has to do: an
//! [`InvalidMessage`] could not even be parsed; a [`PeerMisbehaved`] parsed
//! but broke the protocol (or was forged); a [`PeerIncompatible`] is a
//! well-behaved peer we simply cannot agree with; a [`LocalPolicy`] refusal
//! is our own configuration saying no. [`Error::notify`] is the one place
//! that says which RFC 7296 error notify each one puts on the wire (`None`
//! where the RFC asks for silence: an integrity failure must not be
//! answered, or an attacker learns from it), and [`Error::ends_ike_sa`]
//! whether it ends the IKE SA or only the exchange; the engine raises its
//! events from these two answers and nothing else.

use crate::cert::CertError;
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
    /// A payload the exchange needs is not there.
    #[error("{0} is missing")]
    MissingPayload(&'static str),
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
    /// A response that does not answer what we asked (a proposal we did
    /// not offer, a zero SPI, a group we did not use).
    #[error("the response does not match the request: {0}")]
    BadResponse(&'static str),
    /// A rekey or delete names a Child SA we do not have.
    #[error("no Child SA with SPI {0:08x}")]
    ChildSaNotFound(u32),
}

/// A correct peer we cannot agree with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIncompatible {
    /// None of the offered proposals is acceptable.
    #[error("no acceptable proposal")]
    NoProposalChosen,
    /// The only acceptable proposals need MODP-1024 or SHA-1.
    #[error(
        "no acceptable proposal: only MODP-1024 or SHA-1 ones, which `legacy = true` would accept"
    )]
    OnlyLegacyProposals,
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
    CertificateRefused(#[from] CertError),
    /// The peer is not (or asked for) the identity we expect.
    #[error("wrong identity: {0}")]
    WrongIdentity(String),
    /// The requested traffic selectors are not acceptable.
    #[error("traffic selectors not acceptable")]
    TsUnacceptable,
    /// No internal address can be assigned.
    #[error("no internal address available")]
    InternalAddressFailure,
    /// A road warrior must ask for an address.
    #[error("the Child SA needs an address request (CP)")]
    FailedCpRequired,
    /// We create Child SAs only in IKE_AUTH and by rekeying, up to the
    /// limit per IKE SA.
    #[error("no additional Child SAs")]
    NoAdditionalSas,
    /// The identity is connected, and `unique = "keep"` keeps that one.
    #[error("the identity is connected already (`[limits] unique = \"keep\"`)")]
    IdentityConnected,
    /// The identity holds as many IKE SAs as it may.
    #[error("the identity already holds {0} IKE SAs (`[limits] ike_sas_per_identity`)")]
    TooManyIkeSas(usize),
    /// More traffic selectors than a Child SA may have.
    #[error("{0} traffic selectors; at most {1} are accepted (`[limits] traffic_selectors_per_child_sa`)")]
    TooManyTrafficSelectors(usize, usize),
    /// An exchange collides with one of ours, or arrives before the SA can
    /// take it: the peer should try again later.
    #[error("busy; try again")]
    TemporaryFailure,
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

impl From<CertError> for Error {
    fn from(e: CertError) -> Error {
        Error::LocalPolicy(LocalPolicy::CertificateRefused(e))
    }
}

impl From<crate::auth::AuthError> for Error {
    fn from(e: crate::auth::AuthError) -> Error {
        match e {
            crate::auth::AuthError::Unsupported(e) => Error::PeerIncompatible(e),
            crate::auth::AuthError::Bad(e) => Error::PeerMisbehaved(e),
        }
    }
}

impl Error {
    /// The error notify RFC 7296 asks for, or `None` where it asks for silence.
    pub fn notify(&self) -> Option<NotifyType> {
        use Error::*;
        Some(match self {
            InvalidMessage(self::InvalidMessage::UnsupportedMajorVersion(_)) => {
                NotifyType::INVALID_MAJOR_VERSION
            }
            InvalidMessage(self::InvalidMessage::UnsupportedCriticalPayload(_)) => {
                NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD
            }
            InvalidMessage(_) => NotifyType::INVALID_SYNTAX,
            PeerMisbehaved(self::PeerMisbehaved::IntegrityCheckFailed)
            | PeerMisbehaved(self::PeerMisbehaved::BadPadding) => return None,
            PeerMisbehaved(self::PeerMisbehaved::AuthenticationFailed) => {
                NotifyType::AUTHENTICATION_FAILED
            }
            PeerMisbehaved(self::PeerMisbehaved::ChildSaNotFound(_)) => {
                NotifyType::CHILD_SA_NOT_FOUND
            }
            PeerMisbehaved(_) => NotifyType::INVALID_SYNTAX,
            PeerIncompatible(self::PeerIncompatible::NoProposalChosen)
            | PeerIncompatible(self::PeerIncompatible::OnlyLegacyProposals) => {
                NotifyType::NO_PROPOSAL_CHOSEN
            }
            PeerIncompatible(self::PeerIncompatible::InvalidKePayload(_)) => {
                NotifyType::INVALID_KE_PAYLOAD
            }
            PeerIncompatible(self::PeerIncompatible::UnsupportedAuthentication(_)) => {
                NotifyType::AUTHENTICATION_FAILED
            }
            LocalPolicy(self::LocalPolicy::CertificateRefused(_))
            | LocalPolicy(self::LocalPolicy::WrongIdentity(_))
            | LocalPolicy(self::LocalPolicy::TooManyIkeSas(_))
            | LocalPolicy(self::LocalPolicy::IdentityConnected) => {
                NotifyType::AUTHENTICATION_FAILED
            }
            LocalPolicy(self::LocalPolicy::TsUnacceptable)
            | LocalPolicy(self::LocalPolicy::TooManyTrafficSelectors(..)) => {
                NotifyType::TS_UNACCEPTABLE
            }
            LocalPolicy(self::LocalPolicy::InternalAddressFailure) => {
                NotifyType::INTERNAL_ADDRESS_FAILURE
            }
            LocalPolicy(self::LocalPolicy::FailedCpRequired) => NotifyType::FAILED_CP_REQUIRED,
            LocalPolicy(self::LocalPolicy::NoAdditionalSas) => NotifyType::NO_ADDITIONAL_SAS,
            LocalPolicy(self::LocalPolicy::TemporaryFailure) => NotifyType::TEMPORARY_FAILURE,
        })
    }

    /// The notify's data: the group wanted, for INVALID_KE_PAYLOAD; the
    /// SPI, for CHILD_SA_NOT_FOUND (which goes in the notify's SPI field
    /// instead, see [`Error::notify_spi`]).
    pub fn notify_data(&self) -> Vec<u8> {
        match self {
            Error::PeerIncompatible(PeerIncompatible::InvalidKePayload(group)) => {
                group.0.to_be_bytes().to_vec()
            }
            _ => Vec::new(),
        }
    }

    /// The ESP SPI a notify names (CHILD_SA_NOT_FOUND).
    pub fn notify_spi(&self) -> Option<u32> {
        match self {
            Error::PeerMisbehaved(PeerMisbehaved::ChildSaNotFound(spi)) => Some(*spi),
            _ => None,
        }
    }

    /// Whether the error, met in IKE_AUTH, ends the IKE SA (the peer is not
    /// who it must be, or cannot be understood); otherwise only the Child
    /// SA it asked for is refused and the IKE SA stays.
    pub fn ends_ike_sa(&self) -> bool {
        !matches!(
            self,
            Error::PeerIncompatible(
                PeerIncompatible::NoProposalChosen | PeerIncompatible::OnlyLegacyProposals
            ) | Error::LocalPolicy(
                LocalPolicy::TsUnacceptable
                    | LocalPolicy::TooManyTrafficSelectors(..)
                    | LocalPolicy::InternalAddressFailure
                    | LocalPolicy::FailedCpRequired
                    | LocalPolicy::NoAdditionalSas
                    | LocalPolicy::TemporaryFailure
            )
        )
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
