//! The IANA registries IKEv2 and ESP draw their numbers from.
//!
//! Each registry is a newtype over the wire integer with the registered
//! values as associated constants, not a Rust `enum`: a number nobody
//! registered yet is still a value of the type, so it parses, is carried
//! around, and is emitted again unchanged (RFC 7296 asks receivers to skip
//! unknown non-critical payloads and transforms, not to choke on them).

macro_rules! registry {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$vmeta])* #[allow(missing_docs)] pub const $variant: $name = $name($value);)*

            /// The registered name of this number, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($variant)),)*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                $name(v)
            }
        }
    };
}

registry! {
    /// IKEv2 payload types (RFC 7296 3.2, RFC 7383).
    PayloadType(u8) {
        NONE = 0,
        SA = 33,
        KE = 34,
        IDI = 35,
        IDR = 36,
        CERT = 37,
        CERTREQ = 38,
        AUTH = 39,
        NONCE = 40,
        NOTIFY = 41,
        DELETE = 42,
        VENDOR_ID = 43,
        TSI = 44,
        TSR = 45,
        SK = 46,
        CP = 47,
        EAP = 48,
        SKF = 53,
    }
}

registry! {
    /// IKEv2 exchange types (RFC 7296 3.1).
    ExchangeType(u8) {
        IKE_SA_INIT = 34,
        IKE_AUTH = 35,
        CREATE_CHILD_SA = 36,
        INFORMATIONAL = 37,
        IKE_SESSION_RESUME = 38,
        IKE_INTERMEDIATE = 43,
    }
}

registry! {
    /// Notify message types (RFC 7296 3.10.1 and later RFCs).
    NotifyType(u16) {
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        INVALID_IKE_SPI = 4,
        INVALID_MAJOR_VERSION = 5,
        INVALID_SYNTAX = 7,
        INVALID_MESSAGE_ID = 9,
        INVALID_SPI = 11,
        NO_PROPOSAL_CHOSEN = 14,
        INVALID_KE_PAYLOAD = 17,
        AUTHENTICATION_FAILED = 24,
        SINGLE_PAIR_REQUIRED = 34,
        NO_ADDITIONAL_SAS = 35,
        INTERNAL_ADDRESS_FAILURE = 36,
        FAILED_CP_REQUIRED = 37,
        TS_UNACCEPTABLE = 38,
        INVALID_SELECTORS = 39,
        UNEXPECTED_NAT_DETECTED = 41,
        TEMPORARY_FAILURE = 43,
        CHILD_SA_NOT_FOUND = 44,
        INITIAL_CONTACT = 16384,
        SET_WINDOW_SIZE = 16385,
        ADDITIONAL_TS_POSSIBLE = 16386,
        IPCOMP_SUPPORTED = 16387,
        NAT_DETECTION_SOURCE_IP = 16388,
        NAT_DETECTION_DESTINATION_IP = 16389,
        COOKIE = 16390,
        USE_TRANSPORT_MODE = 16391,
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        REKEY_SA = 16393,
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        MOBIKE_SUPPORTED = 16396,
        ADDITIONAL_IP4_ADDRESS = 16397,
        ADDITIONAL_IP6_ADDRESS = 16398,
        NO_ADDITIONAL_ADDRESSES = 16399,
        UPDATE_SA_ADDRESSES = 16400,
        COOKIE2 = 16401,
        NO_NATS_ALLOWED = 16402,
        EAP_ONLY_AUTHENTICATION = 16417,
        FRAGMENTATION_SUPPORTED = 16430,
        SIGNATURE_HASH_ALGORITHMS = 16431,
        /// Private use (RFC 7296 3.10.1: 40960-65535): sent with the
        /// Delete of an IKE SA that a newer connection of the same identity
        /// replaced, so that a sixgate client knows not to fight it.
        SIXGATE_REPLACED = 42406,
    }
}

impl NotifyType {
    /// Types below 16384 report errors (RFC 7296 3.10.1).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }

    /// The notify in words, for logs and status a person reads: what it
    /// means, then its registered name.
    pub fn describe(self) -> String {
        let meaning = match self {
            NotifyType::AUTHENTICATION_FAILED => "authentication failed",
            NotifyType::NO_PROPOSAL_CHOSEN => "no acceptable algorithms",
            NotifyType::TS_UNACCEPTABLE => "traffic selectors not acceptable",
            NotifyType::INTERNAL_ADDRESS_FAILURE => "no address available",
            NotifyType::FAILED_CP_REQUIRED => "an address request was required",
            NotifyType::INVALID_KE_PAYLOAD => "another key exchange group wanted",
            NotifyType::INVALID_SYNTAX => "malformed message",
            NotifyType::TEMPORARY_FAILURE => "temporary failure, try again",
            NotifyType::NO_ADDITIONAL_SAS => "no further SAs accepted",
            NotifyType::CHILD_SA_NOT_FOUND => "no such Child SA",
            _ => {
                return match self.name() {
                    Some(name) => name.to_string(),
                    None => format!("notify {}", self.0),
                }
            }
        };
        match self.name() {
            Some(name) => format!("{meaning} ({name})"),
            None => meaning.to_string(),
        }
    }
}

registry! {
    /// Security protocol identifiers (RFC 7296 3.3.1).
    ProtocolId(u8) {
        NONE = 0,
        IKE = 1,
        AH = 2,
        ESP = 3,
    }
}

registry! {
    /// Transform types (RFC 7296 3.3.2).
    TransformType(u8) {
        ENCR = 1,
        PRF = 2,
        INTEG = 3,
        KE = 4,
        ESN = 5,
    }
}

/// A transform ID. Its meaning depends on the [`TransformType`] it goes
/// with, so the registered values live in one module per type
/// ([`encr_id`], [`prf_id`], [`integ_id`], [`ke_id`], [`esn_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransformId(pub u16);

/// Encryption transform IDs (RFC 7296 3.3.2, RFC 5282, RFC 7634).
#[allow(missing_docs)]
pub mod encr_id {
    use super::TransformId;
    pub const TRIPLE_DES: TransformId = TransformId(3);
    pub const NULL: TransformId = TransformId(11);
    pub const AES_CBC: TransformId = TransformId(12);
    pub const AES_CTR: TransformId = TransformId(13);
    pub const AES_GCM_8: TransformId = TransformId(18);
    pub const AES_GCM_12: TransformId = TransformId(19);
    pub const AES_GCM_16: TransformId = TransformId(20);
    pub const CHACHA20_POLY1305: TransformId = TransformId(28);
}

/// PRF transform IDs (RFC 7296 3.3.2, RFC 4868).
#[allow(missing_docs)]
pub mod prf_id {
    use super::TransformId;
    pub const HMAC_MD5: TransformId = TransformId(1);
    pub const HMAC_SHA1: TransformId = TransformId(2);
    pub const AES128_XCBC: TransformId = TransformId(4);
    pub const HMAC_SHA2_256: TransformId = TransformId(5);
    pub const HMAC_SHA2_384: TransformId = TransformId(6);
    pub const HMAC_SHA2_512: TransformId = TransformId(7);
}

/// Integrity transform IDs (RFC 7296 3.3.2, RFC 4868).
#[allow(missing_docs)]
pub mod integ_id {
    use super::TransformId;
    pub const NONE: TransformId = TransformId(0);
    pub const HMAC_MD5_96: TransformId = TransformId(1);
    pub const HMAC_SHA1_96: TransformId = TransformId(2);
    pub const AES_XCBC_96: TransformId = TransformId(5);
    pub const HMAC_SHA2_256_128: TransformId = TransformId(12);
    pub const HMAC_SHA2_384_192: TransformId = TransformId(13);
    pub const HMAC_SHA2_512_256: TransformId = TransformId(14);
}

/// Key exchange (Diffie-Hellman group) transform IDs (RFC 7296, 3526, 5903, 8031).
#[allow(missing_docs)]
pub mod ke_id {
    use super::TransformId;
    pub const NONE: TransformId = TransformId(0);
    pub const MODP_768: TransformId = TransformId(1);
    pub const MODP_1024: TransformId = TransformId(2);
    pub const MODP_1536: TransformId = TransformId(5);
    pub const MODP_2048: TransformId = TransformId(14);
    pub const MODP_3072: TransformId = TransformId(15);
    pub const MODP_4096: TransformId = TransformId(16);
    pub const ECP_256: TransformId = TransformId(19);
    pub const ECP_384: TransformId = TransformId(20);
    pub const ECP_521: TransformId = TransformId(21);
    pub const CURVE25519: TransformId = TransformId(31);
    pub const CURVE448: TransformId = TransformId(32);
}

/// Extended sequence number transform IDs (RFC 7296 3.3.2).
#[allow(missing_docs)]
pub mod esn_id {
    use super::TransformId;
    pub const NO: TransformId = TransformId(0);
    pub const YES: TransformId = TransformId(1);
}

registry! {
    /// Transform attribute types (RFC 7296 3.3.5).
    AttributeType(u16) {
        KEY_LENGTH = 14,
    }
}

registry! {
    /// Authentication methods (RFC 7296 3.8, RFC 4754, RFC 7427).
    AuthMethod(u8) {
        RSA_SIG = 1,
        SHARED_KEY = 2,
        DSS_SIG = 3,
        ECDSA_SHA256_P256 = 9,
        ECDSA_SHA384_P384 = 10,
        ECDSA_SHA512_P521 = 11,
        GENERIC_SECURE_PASSWORD = 12,
        NULL = 13,
        DIGITAL_SIGNATURE = 14,
    }
}

registry! {
    /// Identification types (RFC 7296 3.5).
    IdType(u8) {
        IPV4_ADDR = 1,
        FQDN = 2,
        RFC822_ADDR = 3,
        IPV6_ADDR = 5,
        DER_ASN1_DN = 9,
        DER_ASN1_GN = 10,
        KEY_ID = 11,
    }
}

registry! {
    /// Certificate encodings (RFC 7296 3.6).
    CertEncoding(u8) {
        PKCS7_WRAPPED_X509 = 1,
        PGP = 2,
        DNS_SIGNED_KEY = 3,
        X509_SIGNATURE = 4,
        KERBEROS = 6,
        CRL = 7,
        ARL = 8,
        SPKI = 9,
        X509_ATTRIBUTE = 10,
        RAW_RSA = 11,
        HASH_URL_X509 = 12,
        HASH_URL_X509_BUNDLE = 13,
        OCSP_CONTENT = 14,
        RAW_PUBLIC_KEY = 15,
    }
}

registry! {
    /// Traffic selector types (RFC 7296 3.13.1).
    TsType(u8) {
        IPV4_ADDR_RANGE = 7,
        IPV6_ADDR_RANGE = 8,
    }
}

registry! {
    /// Configuration payload types (RFC 7296 3.15).
    CfgType(u8) {
        REQUEST = 1,
        REPLY = 2,
        SET = 3,
        ACK = 4,
    }
}

registry! {
    /// Configuration attribute types (RFC 7296 3.15.1, RFC 8598).
    CfgAttributeType(u16) {
        INTERNAL_IP4_ADDRESS = 1,
        INTERNAL_IP4_NETMASK = 2,
        INTERNAL_IP4_DNS = 3,
        INTERNAL_IP4_NBNS = 4,
        INTERNAL_IP4_DHCP = 6,
        APPLICATION_VERSION = 7,
        INTERNAL_IP6_ADDRESS = 8,
        INTERNAL_IP6_DNS = 10,
        INTERNAL_IP6_DHCP = 12,
        INTERNAL_IP4_SUBNET = 13,
        SUPPORTED_ATTRIBUTES = 14,
        INTERNAL_IP6_SUBNET = 15,
        INTERNAL_DNS_DOMAIN = 25,
    }
}

registry! {
    /// Hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 7).
    HashAlgorithm(u16) {
        SHA1 = 1,
        SHA2_256 = 2,
        SHA2_384 = 3,
        SHA2_512 = 4,
        IDENTITY = 5,
    }
}
