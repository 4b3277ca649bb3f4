//! The XFRM netlink requests sixgate sends, built field for field as
//! iproute2 builds them for the equivalent `ip xfrm` command, so a capture
//! of `ip` is a byte-exact reference (see `dataplane/tests/xfrm_bytes.rs`).
//!
//! States are tunnel mode with an unspecified selector family
//! (`XFRM_STATE_AF_UNSPEC`): one IPv4 SA carries IPv6 inside, and the
//! policies, not the state's selector, decide what goes into it.

use std::net::IpAddr;

use netlink_packet_xfrm::{
    policy, state, Address, Alg, AlgAead, AlgAuth, EncapTmpl, Id, LifetimeConfig, Replay,
    ReplayEsn, Selector, UserPolicyId, UserPolicyInfo, UserSaId, UserSaInfo, UserTemplate,
    XfrmAttrs, XfrmMessage, XFRM_INF,
};
use sixgate_proto::crypto::{EspKeys, Integrity};

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;
const IPPROTO_ESP: u8 = 50;
const XFRM_MODE_TUNNEL: u8 = 1;
const XFRM_STATE_ESN: u8 = 128;
const XFRM_STATE_AF_UNSPEC: u8 = 32;
const UDP_ENCAP_ESPINUDP: u16 = 2;

/// Byte and time limits of an SA (`limit` in `ip xfrm state`). The kernel
/// sends a soft expire when a soft limit is crossed and deletes the SA at
/// a hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes before a soft expire (`u64::MAX`: none).
    pub soft_bytes: u64,
    /// Bytes before the SA is deleted.
    pub hard_bytes: u64,
    /// Seconds after adding before a soft expire (0: none).
    pub soft_secs: u64,
    /// Seconds after adding before the SA is deleted (0: none).
    pub hard_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            soft_bytes: XFRM_INF,
            hard_bytes: XFRM_INF,
            soft_secs: 0,
            hard_secs: 0,
        }
    }
}

/// One direction of a Child SA, as the kernel's SAD holds it.
#[derive(Debug, Clone, Copy)]
pub struct SaSpec<'a> {
    /// Outer source.
    pub src: IpAddr,
    /// Outer destination.
    pub dst: IpAddr,
    /// SPI, as on the wire.
    pub spi: u32,
    /// Ties the SA to its policies' templates.
    pub reqid: u32,
    /// The keys of this direction.
    pub keys: &'a EspKeys,
    /// 64-bit sequence numbers.
    pub esn: bool,
    /// Anti-replay window in packets (inbound; 0 for outbound).
    pub replay_window: u32,
    /// ESP in UDP (RFC 3948) with these source and destination ports.
    pub encap: Option<(u16, u16)>,
    /// The XFRM interface the SA belongs to (route-based mode).
    pub if_id: Option<u32>,
    /// Lifetime limits.
    pub limits: Limits,
}

fn family(ip: &IpAddr) -> u16 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn name<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

fn key_bits(key: &[u8]) -> u32 {
    (key.len() * 8) as u32
}

/// The algorithm attributes for `keys`, under the kernel's crypto API names.
fn algorithms(keys: &EspKeys) -> Vec<XfrmAttrs> {
    let aead = |alg: &str, key: &[u8], salt: &[u8; 4]| {
        let mut k = key.to_vec();
        k.extend_from_slice(salt);
        XfrmAttrs::EncryptionAlgAead(AlgAead {
            alg_name: name(alg),
            alg_key_len: key_bits(&k),
            alg_icv_len: 128,
            alg_key: k,
        })
    };
    match keys {
        EspKeys::AesGcm16 { key, salt } => vec![aead("rfc4106(gcm(aes))", key, salt)],
        EspKeys::ChaCha20Poly1305 { key, salt } => {
            vec![aead("rfc7539esp(chacha20,poly1305)", key, salt)]
        }
        EspKeys::AesCbcHmac {
            enc_key,
            integ,
            auth_key,
        } => {
            let hmac = match integ {
                Integrity::HmacSha256_128 => "hmac(sha256)",
                Integrity::HmacSha384_192 => "hmac(sha384)",
                Integrity::HmacSha512_256 => "hmac(sha512)",
                Integrity::HmacSha1_96 => "hmac(sha1)",
            };
            vec![
                XfrmAttrs::EncryptionAlg(Alg {
                    alg_name: name("cbc(aes)"),
                    alg_key_len: key_bits(enc_key),
                    alg_key: enc_key.clone(),
                }),
                XfrmAttrs::AuthenticationAlgTrunc(AlgAuth {
                    alg_name: name(hmac),
                    alg_key_len: key_bits(auth_key),
                    alg_trunc_len: (integ.icv_len() * 8) as u32,
                    alg_key: auth_key.clone(),
                }),
            ]
        }
    }
}

/// `XFRM_MSG_NEWSA`: `ip xfrm state add src S dst D proto esp spi SPI
/// reqid R mode tunnel flag af-unspec [flag esn] [replay-window W]
/// ALGORITHMS [encap espinudp SPORT DPORT 0.0.0.0] [limit ...] [if_id N]`.
pub fn new_sa(spec: &SaSpec) -> XfrmMessage {
    let mut info = UserSaInfo {
        id: Id {
            daddr: Address::from_ip(&spec.dst),
            spi: spec.spi,
            proto: IPPROTO_ESP,
        },
        saddr: Address::from_ip(&spec.src),
        reqid: spec.reqid,
        family: family(&spec.dst),
        mode: XFRM_MODE_TUNNEL,
        flags: XFRM_STATE_AF_UNSPEC,
        ..Default::default()
    };
    info.lifetime_cfg = LifetimeConfig {
        soft_byte_limit: spec.limits.soft_bytes,
        hard_byte_limit: spec.limits.hard_bytes,
        soft_add_expires_seconds: spec.limits.soft_secs,
        hard_add_expires_seconds: spec.limits.hard_secs,
        ..Default::default()
    };
    let mut nlas = algorithms(spec.keys);
    if let Some((sport, dport)) = spec.encap {
        nlas.push(XfrmAttrs::EncapsulationTemplate(EncapTmpl {
            encap_type: UDP_ENCAP_ESPINUDP,
            encap_sport: sport,
            encap_dport: dport,
            encap_oa: Address::default(),
        }));
    }
    // Windows wider than the legacy 32-packet bitmap, and ESN, need the
    // ESN replay state; the bitmap itself is the kernel's to allocate.
    if spec.esn || spec.replay_window > 32 {
        // Kernels before 6.10 refuse an ESN SA with a window of 0, even
        // an outbound one, where the window is never used.
        let window = if spec.esn {
            info.flags |= XFRM_STATE_ESN;
            spec.replay_window.max(1)
        } else {
            spec.replay_window
        };
        nlas.push(XfrmAttrs::ReplayStateEsn(ReplayEsn {
            bmp_len: window.div_ceil(32),
            oseq: 0,
            seq: 0,
            oseq_hi: 0,
            seq_hi: 0,
            replay_window: window,
            bmp: Vec::new(),
        }));
    } else {
        info.replay_window = spec.replay_window as u8;
    }
    if let Some(id) = spec.if_id {
        nlas.push(XfrmAttrs::IfId(id));
    }
    XfrmMessage::AddSa(state::ModifyMessage {
        user_sa_info: info,
        nlas,
    })
}

/// The sequence numbers and replay window of a state, as the kernel
/// reports them, to carry into the state that replaces it at other
/// addresses: the same keys must never count from zero again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequence {
    /// `XFRMA_REPLAY_VAL`: 32-bit counters and the legacy bitmap.
    Legacy(Replay),
    /// `XFRMA_REPLAY_ESN_VAL`: the extended counters and the bitmap.
    Extended(ReplayEsn),
}

impl Sequence {
    /// Moves the outbound counter `by` ahead, past whatever the old state
    /// may still send between being read and being deleted; `None` if the
    /// counter (32 bits without `esn`) would run out.
    pub fn skip_ahead(&mut self, by: u32, esn: bool) -> Option<()> {
        match self {
            Sequence::Legacy(r) => r.oseq = r.oseq.checked_add(by)?,
            Sequence::Extended(r) if esn => {
                let next = ((u64::from(r.oseq_hi) << 32) | u64::from(r.oseq))
                    .checked_add(u64::from(by))?;
                r.oseq = next as u32;
                r.oseq_hi = (next >> 32) as u32;
            }
            Sequence::Extended(r) => r.oseq = r.oseq.checked_add(by)?,
        }
        Some(())
    }
}

/// The sequence state in a `XFRM_MSG_GETSA` answer.
pub fn sequence_of(answer: &XfrmMessage) -> Option<Sequence> {
    let XfrmMessage::AddSa(m) = answer else {
        return None;
    };
    m.nlas.iter().find_map(|a| match a {
        XfrmAttrs::ReplayStateEsn(r) => Some(Sequence::Extended(r.clone())),
        XfrmAttrs::ReplayState(r) => Some(Sequence::Legacy(*r)),
        _ => None,
    })
}

/// `XFRM_MSG_NEWSA` for a state that goes on from `sequence` (a state
/// moved to other addresses): as [`new_sa`], with the counters and
/// window given.
pub fn new_sa_continuing(spec: &SaSpec, sequence: &Sequence) -> XfrmMessage {
    let mut message = new_sa(spec);
    if let XfrmMessage::AddSa(m) = &mut message {
        m.nlas
            .retain(|a| !matches!(a, XfrmAttrs::ReplayState(_) | XfrmAttrs::ReplayStateEsn(_)));
        m.nlas.push(match sequence {
            Sequence::Legacy(r) => XfrmAttrs::ReplayState(*r),
            Sequence::Extended(r) => XfrmAttrs::ReplayStateEsn(r.clone()),
        });
    }
    message
}

/// `XFRM_MSG_UPDSA`: `ip xfrm state update ...` with the arguments of
/// [`new_sa`]. The kernel keeps the state (and its counters) and takes the
/// new encapsulation ports and lifetimes.
pub fn update_sa(spec: &SaSpec) -> XfrmMessage {
    match new_sa(spec) {
        XfrmMessage::AddSa(m) => XfrmMessage::UpdateSa(m),
        other => other,
    }
}

fn sa_id(dst: IpAddr, spi: u32) -> UserSaId {
    UserSaId {
        daddr: Address::from_ip(&dst),
        spi,
        family: family(&dst),
        proto: IPPROTO_ESP,
    }
}

/// `XFRM_MSG_DELSA`: `ip xfrm state delete src S dst D proto esp spi SPI`.
pub fn delete_sa(src: IpAddr, dst: IpAddr, spi: u32) -> XfrmMessage {
    XfrmMessage::DeleteSa(state::DelGetMessage {
        user_sa_id: sa_id(dst, spi),
        nlas: vec![XfrmAttrs::SrcAddr(Address::from_ip(&src))],
    })
}

/// `XFRM_MSG_GETSA` for one SA (its counters).
pub fn get_sa(src: IpAddr, dst: IpAddr, spi: u32) -> XfrmMessage {
    XfrmMessage::GetSa(state::DelGetMessage {
        user_sa_id: sa_id(dst, spi),
        nlas: vec![XfrmAttrs::SrcAddr(Address::from_ip(&src))],
    })
}

/// A dump of every SA.
pub fn dump_sas() -> XfrmMessage {
    XfrmMessage::GetDumpSa(state::GetDumpMessage::default())
}

/// A dump of every policy.
pub fn dump_policies() -> XfrmMessage {
    XfrmMessage::GetPolicy(policy::DelGetMessage::default())
}

/// The direction of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Decapsulated traffic for this host.
    In = 0,
    /// Traffic this host sends or forwards into the tunnel.
    Out = 1,
    /// Decapsulated traffic this host forwards.
    Fwd = 2,
}

/// An IPv6 prefix (the inner side of a policy).
pub type Prefix = (IpAddr, u8);

/// A policy's selector and its template's tunnel end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicySpec {
    /// Inner source.
    pub src: Prefix,
    /// Inner destination.
    pub dst: Prefix,
    /// Direction.
    pub dir: Direction,
    /// Lower is tried first.
    pub priority: u32,
    /// Outer source of the tunnel.
    pub tmpl_src: IpAddr,
    /// Outer destination of the tunnel.
    pub tmpl_dst: IpAddr,
    /// Which SAs may carry it.
    pub reqid: u32,
    /// The XFRM interface (route-based mode).
    pub if_id: Option<u32>,
}

fn selector(src: Prefix, dst: Prefix) -> Selector {
    Selector {
        daddr: Address::from_ip(&dst.0),
        saddr: Address::from_ip(&src.0),
        family: family(&dst.0),
        prefixlen_d: dst.1,
        prefixlen_s: src.1,
        ..Default::default()
    }
}

/// `XFRM_MSG_UPDPOLICY` (create or replace): `ip xfrm policy update src
/// S dst D dir DIR priority P tmpl src TS dst TD proto esp reqid R mode
/// tunnel [if_id N]`.
pub fn update_policy(spec: &PolicySpec) -> XfrmMessage {
    let info = UserPolicyInfo {
        selector: selector(spec.src, spec.dst),
        lifetime_cfg: LifetimeConfig::default(),
        priority: spec.priority,
        direction: spec.dir as u8,
        ..Default::default()
    };
    let tmpl = UserTemplate {
        id: Id {
            daddr: Address::from_ip(&spec.tmpl_dst),
            spi: 0,
            proto: IPPROTO_ESP,
        },
        family: family(&spec.tmpl_dst),
        saddr: Address::from_ip(&spec.tmpl_src),
        reqid: spec.reqid,
        mode: XFRM_MODE_TUNNEL,
        ..Default::default()
    };
    let mut nlas = vec![XfrmAttrs::Template(vec![tmpl])];
    if let Some(id) = spec.if_id {
        nlas.push(XfrmAttrs::IfId(id));
    }
    XfrmMessage::UpdatePolicy(policy::ModifyMessage {
        user_policy_info: info,
        nlas,
    })
}

/// `XFRM_MSG_DELPOLICY`: `ip xfrm policy delete src S dst D dir DIR
/// [if_id N]`.
pub fn delete_policy(src: Prefix, dst: Prefix, dir: u8, if_id: Option<u32>) -> XfrmMessage {
    XfrmMessage::DeletePolicy(policy::DelGetMessage {
        user_policy_id: UserPolicyId {
            selector: selector(src, dst),
            index: 0,
            direction: dir,
        },
        nlas: if_id.map(XfrmAttrs::IfId).into_iter().collect(),
    })
}
