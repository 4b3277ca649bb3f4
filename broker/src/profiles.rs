//! Client profiles, one per kind of client people have: sixgate-client's
//! `client.toml`, strongSwan's `swanctl.conf`, Apple's `.mobileconfig`, a
//! Windows PowerShell script and the Android strongSwan app's `.sswan`.
//! Each is rendered from one [`Profile`] (the broker's name, identity,
//! policy and lifetimes, the client's identity and credentials), so what
//! a client proposes is always something the broker accepts.
//!
//! strongSwan and sixgate take the broker's whole policy. Apple and Windows
//! configure one suite per SA: the first in the broker's order of
//! preference that the platform offers ([`apple_suite`],
//! [`windows_suite`]). Windows routes nothing through an IKEv2 tunnel by
//! itself, and a `::/0` route would not win over the LAN's default, so its
//! script adds `::/1` and `8000::/1`.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use sixgate_proto::crypto::{Encryption, Integrity, KeGroup, Prf};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::proposal::{EspPolicy, IkePolicy};

/// The name every profile gives the connection.
pub const CONNECTION: &str = "sixgate";

/// What every profile is made of.
pub struct Profile<'a> {
    /// The broker's host name or address, as clients reach it.
    pub broker_host: &'a str,
    /// The broker's IKE identity.
    pub broker_identity: &'a CanonicalIdentity,
    /// The client's IKE identity.
    pub identity: &'a CanonicalIdentity,
    /// What the broker accepts for IKE SAs.
    pub ike: &'a IkePolicy,
    /// What it accepts for Child SAs.
    pub esp: &'a EspPolicy,
    /// The broker's IKE SA lifetime.
    pub ike_lifetime: Duration,
    /// Its Child SA lifetime.
    pub child_lifetime: Duration,
    /// The CA certificate that vouches for the broker, DER.
    pub ca_der: &'a [u8],
    /// The client's certificate, DER.
    pub certificate_der: &'a [u8],
    /// Whether the client's key is RSA (else ECDSA P-256).
    pub rsa: bool,
    /// The client's certificate and key as PKCS#12.
    pub pkcs12: &'a [u8],
    /// The PKCS#12's password.
    pub pkcs12_password: &'a str,
    /// A random seed for the profile's UUIDs (Apple's, Android's).
    pub uuid_seed: [u8; 16],
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A version-4 UUID from 16 random bytes, varied by `n`.
fn uuid(seed: [u8; 16], n: u8) -> String {
    let mut b = seed;
    b[15] ^= n;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `client.toml` for sixgate-client, beside `client.pem`, `client.key` and
/// `ca.pem` (paths are relative to the file).
pub fn client_toml(p: &Profile<'_>) -> String {
    format!(
        "# sixgate-client configuration for {id}: sixgate-client up --config client.toml\n\
         broker = {broker}\n\
         broker_identity = {broker_id}\n\
         identity = {id_value}\n\
         certificate = \"client.pem\"\n\
         private_key = \"client.key\"\n\
         ca = [\"ca.pem\"]\n",
        id = p.identity,
        broker = toml_string(p.broker_host),
        broker_id = toml_string(p.broker_identity.as_str()),
        id_value = toml_string(p.identity.as_str()),
    )
}

/// `swanctl.conf` for strongSwan, with `x509/client.pem`,
/// `private/client.key` and `x509ca/ca.pem` beside it (swanctl's own
/// directory layout): the whole directory goes to /etc/swanctl.
pub fn swanctl_conf(p: &Profile<'_>) -> String {
    format!(
        "# strongSwan configuration for {id}: copy this directory's contents to\n\
         # /etc/swanctl, then `swanctl --load-all` (the tunnel starts at once).\n\
         connections {{\n\
         \x20   {CONNECTION} {{\n\
         \x20       version = 2\n\
         \x20       remote_addrs = {broker}\n\
         \x20       vips = ::\n\
         \x20       proposals = {ike}\n\
         \x20       rekey_time = {ike_life}s\n\
         \x20       dpd_delay = 30s\n\
         \x20       local {{\n\
         \x20           auth = pubkey\n\
         \x20           certs = client.pem\n\
         \x20           id = {id}\n\
         \x20       }}\n\
         \x20       remote {{\n\
         \x20           auth = pubkey\n\
         \x20           id = {broker_id}\n\
         \x20       }}\n\
         \x20       children {{\n\
         \x20           {CONNECTION} {{\n\
         \x20               remote_ts = ::/0\n\
         \x20               esp_proposals = {esp}\n\
         \x20               rekey_time = {child_life}s\n\
         \x20               dpd_action = restart\n\
         \x20               start_action = start\n\
         \x20           }}\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        id = p.identity,
        broker = p.broker_host,
        broker_id = p.broker_identity,
        ike = p.ike.to_strongswan().join(", "),
        esp = p.esp.to_strongswan().join(", "),
        ike_life = p.ike_lifetime.as_secs(),
        child_life = p.child_lifetime.as_secs(),
    )
}

/// One IKE SA suite and one Child SA suite, as a platform that configures
/// exactly one of each wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// IKE encryption.
    pub ike_encr: Encryption,
    /// IKE integrity (with a non-AEAD cipher) and the PRF of the same hash.
    pub ike_integ: Option<Integrity>,
    /// The IKE PRF.
    pub prf: Prf,
    /// The key exchange group.
    pub ke: KeGroup,
    /// ESP encryption.
    pub esp_encr: Encryption,
    /// ESP integrity (with a non-AEAD cipher).
    pub esp_integ: Option<Integrity>,
    /// The PFS group, when the broker asks for PFS.
    pub pfs: Option<KeGroup>,
}

/// What a platform offers, each list in no particular order.
struct Offers<'a> {
    encr: &'a [Encryption],
    integ: &'a [Integrity],
    ke: &'a [KeGroup],
    /// Whether its IKE SAs may use an AEAD cipher.
    ike_aead: bool,
}

/// The broker's most preferred suite within what the platform offers.
fn choose(ike: &IkePolicy, esp: &EspPolicy, offers: &Offers<'_>) -> Option<Suite> {
    let offered_encr = |e: &&Encryption| offers.encr.contains(e);
    let offered_integ = |i: &&Integrity| offers.integ.contains(i);
    // IKE: a cipher, then (for CBC) an integrity algorithm whose hash the
    // broker takes as PRF too (these platforms derive one from the other);
    // for an AEAD a PRF whose hash the platform names as "integrity".
    let (ike_encr, ike_integ, prf) = ike
        .encr
        .iter()
        .filter(offered_encr)
        .filter(|e| offers.ike_aead || !e.is_aead())
        .find_map(|e| {
            if e.is_aead() {
                ike.prf
                    .iter()
                    .find(|p| offers.integ.contains(&Integrity::of_same_hash(**p)))
                    .map(|p| (*e, None, *p))
            } else {
                ike.integ
                    .iter()
                    .filter(offered_integ)
                    .find(|i| ike.prf.contains(&Integrity::same_hash_prf(**i)))
                    .map(|i| (*e, Some(*i), Integrity::same_hash_prf(*i)))
            }
        })?;
    let ke = *ike.ke.iter().find(|g| offers.ke.contains(g))?;
    let (esp_encr, esp_integ) = esp.encr.iter().filter(offered_encr).find_map(|e| {
        if e.is_aead() {
            Some((*e, None))
        } else {
            esp.integ.iter().find(offered_integ).map(|i| (*e, Some(*i)))
        }
    })?;
    let pfs = match esp.pfs.as_slice() {
        [] => None,
        groups => Some(*groups.iter().find(|g| offers.ke.contains(g))?),
    };
    Some(Suite {
        ike_encr,
        ike_integ,
        prf,
        ke,
        esp_encr,
        esp_integ,
        pfs,
    })
}

const AES_CBC_128: Encryption = Encryption::AesCbc { key_bits: 128 };
const AES_CBC_256: Encryption = Encryption::AesCbc { key_bits: 256 };
const AES_GCM_128: Encryption = Encryption::AesGcm16 { key_bits: 128 };
const AES_GCM_256: Encryption = Encryption::AesGcm16 { key_bits: 256 };

/// The suite an Apple device (iOS 13, macOS 10.15 and later) is given.
pub fn apple_suite(ike: &IkePolicy, esp: &EspPolicy) -> Option<Suite> {
    choose(
        ike,
        esp,
        &Offers {
            encr: &[
                AES_CBC_128,
                AES_CBC_256,
                AES_GCM_128,
                AES_GCM_256,
                Encryption::ChaCha20Poly1305,
            ],
            integ: &[
                Integrity::HmacSha1_96,
                Integrity::HmacSha256_128,
                Integrity::HmacSha384_192,
                Integrity::HmacSha512_256,
            ],
            ke: &[
                KeGroup::Modp1024,
                KeGroup::Modp2048,
                KeGroup::Modp3072,
                KeGroup::Ecp256,
                KeGroup::Ecp384,
                KeGroup::Curve25519,
            ],
            ike_aead: true,
        },
    )
}

/// The suite Windows' built-in client (10 and later) is given. Its IKE SAs
/// are kept to CBC ciphers: GCM there came late and not to every build.
pub fn windows_suite(ike: &IkePolicy, esp: &EspPolicy) -> Option<Suite> {
    choose(
        ike,
        esp,
        &Offers {
            encr: &[AES_CBC_128, AES_CBC_256, AES_GCM_128, AES_GCM_256],
            integ: &[
                Integrity::HmacSha1_96,
                Integrity::HmacSha256_128,
                Integrity::HmacSha384_192,
            ],
            ke: &[
                KeGroup::Modp1024,
                KeGroup::Modp2048,
                KeGroup::Ecp256,
                KeGroup::Ecp384,
            ],
            ike_aead: false,
        },
    )
}

fn apple_encryption(e: Encryption) -> &'static str {
    match e {
        Encryption::AesCbc { key_bits: 128 } => "AES-128",
        Encryption::AesCbc { .. } => "AES-256",
        Encryption::AesGcm16 { key_bits: 128 } => "AES-128-GCM",
        Encryption::AesGcm16 { .. } => "AES-256-GCM",
        Encryption::ChaCha20Poly1305 => "ChaCha20Poly1305",
    }
}

fn apple_integrity(i: Integrity) -> &'static str {
    match i {
        Integrity::HmacSha1_96 => "SHA1-96",
        Integrity::HmacSha256_128 => "SHA2-256",
        Integrity::HmacSha384_192 => "SHA2-384",
        Integrity::HmacSha512_256 => "SHA2-512",
    }
}

/// The IANA group number (RFC 7296 3.3.2), which Apple's profiles use.
fn group_number(g: KeGroup) -> u16 {
    match g {
        KeGroup::Modp1024 => 2,
        KeGroup::Modp2048 => 14,
        KeGroup::Modp3072 => 15,
        KeGroup::Ecp256 => 19,
        KeGroup::Ecp384 => 20,
        KeGroup::Curve25519 => 31,
    }
}

/// Text for a plist `<string>`.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes a plist dictionary's entries, one `<key>` and value per line.
struct PlistDict(String);

impl PlistDict {
    fn string(&mut self, key: &str, value: &str) -> &mut Self {
        let _ = writeln!(
            self.0,
            "<key>{key}</key><string>{}</string>",
            xml_escape(value)
        );
        self
    }
    fn integer(&mut self, key: &str, value: u64) -> &mut Self {
        let _ = writeln!(self.0, "<key>{key}</key><integer>{value}</integer>");
        self
    }
    fn data(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        let _ = writeln!(self.0, "<key>{key}</key><data>{}</data>", base64(bytes));
        self
    }
    fn dict(&mut self, key: &str, inner: &PlistDict) -> &mut Self {
        let _ = writeln!(self.0, "<key>{key}</key>\n<dict>\n{}</dict>", inner.0);
        self
    }
}

/// Apple's SA parameters dictionary for one suite half.
fn apple_sa(encr: Encryption, integ: Integrity, group: KeGroup, lifetime: Duration) -> PlistDict {
    let mut d = PlistDict(String::new());
    d.string("EncryptionAlgorithm", apple_encryption(encr))
        .string("IntegrityAlgorithm", apple_integrity(integ))
        .integer("DiffieHellmanGroup", u64::from(group_number(group)))
        // Apple takes 10 minutes to a day.
        .integer(
            "LifeTimeInMinutes",
            (lifetime.as_secs() / 60).clamp(10, 1440),
        );
    d
}

/// An Apple configuration profile (iOS, iPadOS, macOS): the IKEv2 VPN with
/// certificate authentication, the client's PKCS#12 and the CA. `None`
/// when the broker's policy has no suite Apple offers.
pub fn mobileconfig(p: &Profile<'_>) -> Option<String> {
    let suite = apple_suite(p.ike, p.esp)?;
    let pkcs12_uuid = uuid(p.uuid_seed, 1);
    let ike = apple_sa(
        suite.ike_encr,
        suite
            .ike_integ
            .unwrap_or(Integrity::of_same_hash(suite.prf)),
        suite.ke,
        p.ike_lifetime,
    );
    // Apple's Child SA group is the PFS group (used when EnablePFS is on).
    let child = apple_sa(
        suite.esp_encr,
        suite.esp_integ.unwrap_or(Integrity::HmacSha256_128),
        suite.pfs.unwrap_or(suite.ke),
        p.child_lifetime,
    );
    let mut ikev2 = PlistDict(String::new());
    ikev2
        .string("RemoteAddress", p.broker_host)
        .string("RemoteIdentifier", p.broker_identity.as_str())
        .string("LocalIdentifier", p.identity.as_str())
        .string("AuthenticationMethod", "Certificate")
        .string("CertificateType", if p.rsa { "RSA" } else { "ECDSA256" })
        .string("PayloadCertificateUUID", &pkcs12_uuid)
        .integer("ExtendedAuthEnabled", 0)
        .integer("EnablePFS", u64::from(suite.pfs.is_some()))
        .integer("DisableMOBIKE", 0)
        .integer("DisableRedirect", 0)
        .integer("EnableCertificateRevocationCheck", 0)
        .string("DeadPeerDetectionRate", "Medium")
        .dict("IKESecurityAssociationParameters", &ike)
        .dict("ChildSecurityAssociationParameters", &child);
    let mut vpn = PlistDict(String::new());
    vpn.string("PayloadType", "com.apple.vpn.managed")
        .string(
            "PayloadIdentifier",
            &format!("net.sixgate.vpn.{}", p.identity),
        )
        .string("PayloadUUID", &uuid(p.uuid_seed, 2))
        .integer("PayloadVersion", 1)
        .string("PayloadDisplayName", "sixgate VPN")
        .string("UserDefinedName", &format!("sixgate ({})", p.broker_host))
        .string("VPNType", "IKEv2")
        .dict("IKEv2", &ikev2);
    let mut pkcs12 = PlistDict(String::new());
    pkcs12
        .string("PayloadType", "com.apple.security.pkcs12")
        .string(
            "PayloadIdentifier",
            &format!("net.sixgate.identity.{}", p.identity),
        )
        .string("PayloadUUID", &pkcs12_uuid)
        .integer("PayloadVersion", 1)
        .string("PayloadDisplayName", p.identity.as_str())
        .string("PayloadCertificateFileName", "client.p12")
        .string("Password", p.pkcs12_password)
        .data("PayloadContent", p.pkcs12);
    let mut root = PlistDict(String::new());
    root.string("PayloadType", "com.apple.security.root")
        .string("PayloadIdentifier", "net.sixgate.ca")
        .string("PayloadUUID", &uuid(p.uuid_seed, 3))
        .integer("PayloadVersion", 1)
        .string("PayloadDisplayName", "sixgate CA")
        .string("PayloadCertificateFileName", "ca.cer")
        .data("PayloadContent", p.ca_der);
    let mut top = PlistDict(String::new());
    top.string("PayloadType", "Configuration")
        .string(
            "PayloadIdentifier",
            &format!("net.sixgate.profile.{}", p.identity),
        )
        .string("PayloadUUID", &uuid(p.uuid_seed, 4))
        .integer("PayloadVersion", 1)
        .string(
            "PayloadDisplayName",
            &format!("sixgate VPN for {}", p.identity),
        );
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
         \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n{}<key>PayloadContent</key>\n<array>\n\
         <dict>\n{}</dict>\n<dict>\n{}</dict>\n<dict>\n{}</dict>\n</array>\n</dict>\n</plist>\n",
        top.0, vpn.0, pkcs12.0, root.0
    ))
}

fn windows_cipher(e: Encryption) -> &'static str {
    match e {
        Encryption::AesCbc { key_bits: 128 } => "AES128",
        Encryption::AesCbc { .. } => "AES256",
        Encryption::AesGcm16 { key_bits: 128 } => "GCMAES128",
        Encryption::AesGcm16 { .. } => "GCMAES256",
        // Not among Windows' offers (windows_suite never picks it).
        Encryption::ChaCha20Poly1305 => "None",
    }
}

fn windows_ike_integrity(i: Integrity) -> &'static str {
    match i {
        Integrity::HmacSha1_96 => "SHA1",
        Integrity::HmacSha256_128 => "SHA256",
        Integrity::HmacSha384_192 => "SHA384",
        Integrity::HmacSha512_256 => "None",
    }
}

/// ESP integrity; with GCM, Windows names the cipher again.
fn windows_esp_integrity(encr: Encryption, integ: Option<Integrity>) -> &'static str {
    match (encr, integ) {
        (Encryption::AesGcm16 { .. }, _) => windows_cipher(encr),
        (_, Some(Integrity::HmacSha1_96)) => "SHA196",
        (_, Some(Integrity::HmacSha256_128)) => "SHA256128",
        _ => "None",
    }
}

fn windows_dh(g: KeGroup) -> &'static str {
    match g {
        KeGroup::Modp1024 => "Group2",
        KeGroup::Modp2048 => "Group14",
        KeGroup::Ecp256 => "ECP256",
        KeGroup::Ecp384 => "ECP384",
        KeGroup::Modp3072 | KeGroup::Curve25519 => "None",
    }
}

fn windows_pfs(g: Option<KeGroup>) -> &'static str {
    match g {
        None => "None",
        Some(KeGroup::Modp1024) => "PFS2",
        Some(KeGroup::Modp2048) => "PFS2048",
        Some(KeGroup::Ecp256) => "ECP256",
        Some(KeGroup::Ecp384) => "ECP384",
        Some(KeGroup::Modp3072 | KeGroup::Curve25519) => "None",
    }
}

/// A PowerShell script for Windows' built-in IKEv2 client: it imports the
/// CA and the client's PKCS#12 (beside it as `client.p12`) into the
/// machine's stores, adds the connection with the broker's suite, and the
/// two routes that send all IPv6 through it. `None` when the broker's
/// policy has no suite Windows offers.
pub fn windows_ps1(p: &Profile<'_>) -> Option<String> {
    let s = windows_suite(p.ike, p.esp)?;
    let integrity = windows_ike_integrity(s.ike_integ.unwrap_or(Integrity::of_same_hash(s.prf)));
    Some(format!(
        "# sixgate VPN for {id}: run in an elevated PowerShell, in this directory.\r\n\
         $ErrorActionPreference = 'Stop'\r\n\
         $password = ConvertTo-SecureString -String '{password}' -AsPlainText -Force\r\n\
         Import-Certificate -FilePath \"$PSScriptRoot\\ca.cer\" -CertStoreLocation Cert:\\LocalMachine\\Root | Out-Null\r\n\
         Import-PfxCertificate -FilePath \"$PSScriptRoot\\client.p12\" -CertStoreLocation Cert:\\LocalMachine\\My -Password $password | Out-Null\r\n\
         Add-VpnConnection -Name '{name}' -ServerAddress '{broker}' -TunnelType Ikev2 \
         -AuthenticationMethod MachineCertificate -EncryptionLevel Required -SplitTunneling -Force\r\n\
         Set-VpnConnectionIPsecConfiguration -ConnectionName '{name}' \
         -EncryptionMethod {ike_encr} -IntegrityCheckMethod {integrity} -DHGroup {dh} \
         -CipherTransformConstants {esp_encr} -AuthenticationTransformConstants {esp_integ} \
         -PfsGroup {pfs} -Force\r\n\
         # Windows routes nothing through the tunnel by itself, and ::/0 would\r\n\
         # not win over the LAN's default route: two halves do.\r\n\
         Add-VpnConnectionRoute -ConnectionName '{name}' -DestinationPrefix '::/1'\r\n\
         Add-VpnConnectionRoute -ConnectionName '{name}' -DestinationPrefix '8000::/1'\r\n\
         Write-Output \"Added '{name}': connect with rasdial '{name}' or from the network menu.\"\r\n",
        id = p.identity,
        name = CONNECTION,
        broker = p.broker_host.replace('\'', "''"),
        password = p.pkcs12_password,
        ike_encr = windows_cipher(s.ike_encr),
        dh = windows_dh(s.ke),
        esp_encr = windows_cipher(s.esp_encr),
        esp_integ = windows_esp_integrity(s.esp_encr, s.esp_integ),
        pfs = windows_pfs(s.pfs),
    ))
}

/// A profile for the strongSwan app on Android (`.sswan`, JSON): the
/// broker, the CA, the client's PKCS#12 (the app asks for its password on
/// import) and the broker's proposals.
pub fn sswan(p: &Profile<'_>) -> String {
    let profile = serde_json::json!({
        "uuid": uuid(p.uuid_seed, 5).to_lowercase(),
        "name": format!("sixgate ({})", p.broker_host),
        "type": "ikev2-cert",
        "remote": {
            "addr": p.broker_host,
            "id": p.broker_identity.as_str(),
            "cert": base64(p.ca_der),
        },
        "local": {
            "id": p.identity.as_str(),
            "p12": base64(p.pkcs12),
        },
        "ike-proposal": p.ike.to_strongswan().join(","),
        "esp-proposal": p.esp.to_strongswan().join(","),
    });
    format!("{profile:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sixgate_proto::crypto::Legacy;

    #[test]
    fn platform_suites_follow_the_broker_s_preference_within_what_the_platform_offers() {
        let d = (IkePolicy::default(), EspPolicy::default());
        let apple = apple_suite(&d.0, &d.1).unwrap();
        assert_eq!(apple.ike_encr, AES_GCM_128);
        assert_eq!((apple.ike_integ, apple.prf), (None, Prf::HmacSha256));
        assert_eq!(apple.ke, KeGroup::Curve25519);
        assert_eq!((apple.esp_encr, apple.pfs), (AES_GCM_128, None));
        let windows = windows_suite(&d.0, &d.1).unwrap();
        assert_eq!(
            (windows.ike_encr, windows.ike_integ, windows.prf),
            (
                AES_CBC_256,
                Some(Integrity::HmacSha256_128),
                Prf::HmacSha256
            )
        );
        assert_eq!(windows.ke, KeGroup::Ecp256, "no Curve25519 on Windows");
        // A broker that only takes what Windows lacks gets no script.
        let x25519 = IkePolicy::from_strongswan(&["aes256-sha256-x25519"], Legacy::Refuse).unwrap();
        assert_eq!(windows_suite(&x25519, &d.1), None);
        // A legacy-only broker: Windows gets its old defaults, with PFS.
        let old = IkePolicy::from_strongswan(&["aes256-sha1-modp1024"], Legacy::Allow).unwrap();
        let esp = EspPolicy::from_strongswan(&["aes256-sha1-modp1024"], Legacy::Allow).unwrap();
        let w = windows_suite(&old, &esp).unwrap();
        assert_eq!(
            (w.ike_integ, w.prf, w.ke, w.esp_integ, w.pfs),
            (
                Some(Integrity::HmacSha1_96),
                Prf::HmacSha1,
                KeGroup::Modp1024,
                Some(Integrity::HmacSha1_96),
                Some(KeGroup::Modp1024)
            )
        );
    }

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let seed = [0xab; 16];
        let a = uuid(seed, 1);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, uuid(seed, 2));
    }
}
