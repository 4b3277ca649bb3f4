//! The XFRM requests sixgate sends, byte for byte against what iproute2
//! sends for the same `ip xfrm` command, and the kernel's dumps of those
//! states and policies parsed back. The captures (in `data/xfrm/`, made
//! by `tests/lab/capture-xfrm.sh` inside the test VM, Debian's 6.1 kernel)
//! hold the command on the first line and one datagram per line after it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_xfrm::{XfrmAttrs, XfrmMessage};
use sixgate_dataplane::netlink::serialize;
use sixgate_dataplane::xfrm::msg::{self, Direction, Limits, PolicySpec, SaSpec};
use sixgate_dataplane::xfrm::{policy_is_ours, sa_is_ours, Owner};
use sixgate_proto::crypto::{EspKeys, Integrity};

fn capture(name: &str) -> (String, Vec<Vec<u8>>) {
    let path = format!("{}/tests/data/xfrm/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let command = lines.next().unwrap().trim_start_matches("# ").to_string();
    let datagrams = lines.map(|l| hex::decode(l).unwrap()).collect();
    (command, datagrams)
}

/// Our bytes for `message`, with the sequence number iproute2 used.
fn ours(message: XfrmMessage, reference: &[u8]) -> Vec<u8> {
    let seq = u32::from_le_bytes(reference[8..12].try_into().unwrap());
    serialize(message, NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// iproute2 leaves the two padding octets after the ports of
/// `xfrm_encap_tmpl` uninitialised (its captures hold stack garbage
/// there); the kernel ignores them and we send zeros. Zero them in the
/// reference, and nothing else.
fn zero_encap_padding(request: &mut [u8]) {
    const XFRMA_ENCAP: u16 = 4;
    // After the netlink header and struct xfrm_usersa_info.
    let mut at = 16 + 224;
    while at + 4 <= request.len() {
        let len = u16::from_le_bytes([request[at], request[at + 1]]) as usize;
        let kind = u16::from_le_bytes([request[at + 2], request[at + 3]]);
        if kind == XFRMA_ENCAP {
            request[at + 4 + 6..at + 4 + 8].fill(0);
        }
        at += (len + 3) & !3;
    }
}

fn assert_same(name: &str, message: XfrmMessage) {
    let (command, mut datagrams) = capture(name);
    let reference = &mut datagrams[0];
    if matches!(message, XfrmMessage::AddSa(_)) {
        zero_encap_padding(reference);
    }
    let mine = ours(message, reference);
    assert_eq!(
        hex::encode(&mine),
        hex::encode(reference),
        "{name}: our request differs from `{command}`"
    );
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn key(from: u8, len: usize) -> Vec<u8> {
    (0..len as u8).map(|i| from + i).collect()
}

fn salt(from: u8) -> [u8; 4] {
    [from, from + 1, from + 2, from + 3]
}

fn gcm_keys() -> EspKeys {
    EspKeys::AesGcm16 {
        key: key(0, 16),
        salt: salt(16),
    }
}

fn chacha_keys() -> EspKeys {
    EspKeys::ChaCha20Poly1305 {
        key: key(0x20, 32),
        salt: salt(0x40),
    }
}

fn cbc_keys() -> EspKeys {
    EspKeys::AesCbcHmac {
        enc_key: key(0x50, 32),
        integ: Integrity::HmacSha256_128,
        auth_key: key(0x70, 32),
    }
}

fn gcm_spec(keys: &EspKeys) -> SaSpec<'_> {
    SaSpec {
        src: v4(192, 0, 2, 1),
        dst: v4(192, 0, 2, 2),
        spi: 0xc0ffee01,
        reqid: 0x5a600001,
        keys,
        esn: true,
        replay_window: 1024,
        encap: Some((4500, 4500)),
        if_id: Some(0x5a6),
        limits: Limits {
            soft_bytes: 1_000_000,
            hard_bytes: 2_000_000,
            soft_secs: 3000,
            hard_secs: 7200,
        },
    }
}

fn client() -> IpAddr {
    IpAddr::V6("2001:db8:5::2".parse::<Ipv6Addr>().unwrap())
}

fn any6() -> IpAddr {
    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

fn out_policy() -> PolicySpec {
    PolicySpec {
        src: (any6(), 0),
        dst: (client(), 128),
        dir: Direction::Out,
        priority: 199808,
        tmpl_src: v4(192, 0, 2, 1),
        tmpl_dst: v4(192, 0, 2, 2),
        reqid: 0x5a600001,
        if_id: Some(0x5a6),
    }
}

#[test]
fn aes_gcm_state_with_udp_encapsulation_esn_limits_and_if_id() {
    let keys = gcm_keys();
    assert_same("state-gcm-encap", msg::new_sa(&gcm_spec(&keys)));
}

/// An outbound ESN SA still gets a one-packet window: kernels before 6.10
/// refuse ESN with a window of 0 (strongSwan asks for ESN with `-esn`).
#[test]
fn an_outbound_esn_state_has_a_window() {
    let keys = gcm_keys();
    let spec = SaSpec {
        replay_window: 0,
        ..gcm_spec(&keys)
    };
    let XfrmMessage::AddSa(m) = msg::new_sa(&spec) else {
        panic!("not a NEWSA");
    };
    assert_eq!(m.user_sa_info.flags & 128, 128, "XFRM_STATE_ESN");
    assert!(m.nlas.iter().any(|a| matches!(a,
        XfrmAttrs::ReplayStateEsn(r) if r.replay_window == 1 && r.bmp_len == 1)));
}

#[test]
fn chacha20_poly1305_state() {
    let keys = chacha_keys();
    let spec = SaSpec {
        src: v4(192, 0, 2, 2),
        dst: v4(192, 0, 2, 1),
        spi: 0xc0ffee02,
        esn: false,
        replay_window: 0,
        encap: None,
        if_id: None,
        limits: Limits::default(),
        ..gcm_spec(&keys)
    };
    assert_same("state-chacha", msg::new_sa(&spec));
}

#[test]
fn aes_cbc_hmac_sha256_state() {
    let keys = cbc_keys();
    let spec = SaSpec {
        dst: v4(192, 0, 2, 3),
        spi: 0xc0ffee03,
        reqid: 0x5a600002,
        esn: false,
        replay_window: 32,
        if_id: None,
        limits: Limits::default(),
        ..gcm_spec(&keys)
    };
    assert_same("state-cbc", msg::new_sa(&spec));
}

#[test]
fn policies() {
    assert_same("policy-out", msg::update_policy(&out_policy()));
    let fwd = PolicySpec {
        src: (client(), 128),
        dst: (any6(), 0),
        dir: Direction::Fwd,
        tmpl_src: v4(192, 0, 2, 2),
        tmpl_dst: v4(192, 0, 2, 1),
        if_id: None,
        ..out_policy()
    };
    assert_same("policy-fwd", msg::update_policy(&fwd));
}

#[test]
fn deletes() {
    assert_same(
        "state-delete",
        msg::delete_sa(v4(192, 0, 2, 1), v4(192, 0, 2, 3), 0xc0ffee03),
    );
    assert_same(
        "policy-delete",
        msg::delete_policy((client(), 128), (any6(), 0), Direction::Fwd as u8, None),
    );
}

fn dump(name: &str) -> Vec<XfrmMessage> {
    let (_, datagrams) = capture(name);
    let mut out = Vec::new();
    for d in datagrams {
        let mut at = 0;
        while at < d.len() {
            let m = NetlinkMessage::<XfrmMessage>::deserialize(&d[at..]).unwrap();
            at += (m.header.length as usize + 3) & !3;
            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                out.push(inner);
            }
        }
    }
    out
}

#[test]
fn the_kernels_state_dump_parses_back() {
    let states: Vec<_> = dump("state-dump")
        .into_iter()
        .map(|m| match m {
            XfrmMessage::AddSa(s) => s,
            other => panic!("not a state: {other:?}"),
        })
        .collect();
    assert_eq!(states.len(), 3);
    let by_spi = |spi: u32| {
        states
            .iter()
            .find(|s| s.user_sa_info.id.spi == spi)
            .unwrap_or_else(|| panic!("no SA {spi:08x} in the dump"))
    };
    let gcm = by_spi(0xc0ffee01);
    assert!(sa_is_ours(gcm, Owner::Broker));
    assert!(
        !sa_is_ours(gcm, Owner::Client),
        "the client leaves the broker's SAs alone"
    );
    assert_eq!(gcm.user_sa_info.reqid, Owner::Broker.reqid_tag() | 1);
    assert_eq!(gcm.user_sa_info.lifetime_cfg.soft_byte_limit, 1_000_000);
    assert_eq!(gcm.user_sa_info.lifetime_cfg.hard_add_expires_seconds, 7200);
    let mut aead_key = key(0, 16);
    aead_key.extend_from_slice(&salt(16));
    assert!(gcm.nlas.iter().any(|a| matches!(a,
        XfrmAttrs::EncryptionAlgAead(alg) if alg.alg_key == aead_key && alg.alg_icv_len == 128)));
    assert!(gcm.nlas.iter().any(|a| matches!(a,
        XfrmAttrs::EncapsulationTemplate(e) if e.encap_type == 2 && e.encap_sport == 4500 && e.encap_dport == 4500)));
    assert!(gcm.nlas.iter().any(|a| matches!(a,
        XfrmAttrs::ReplayStateEsn(r) if r.replay_window == 1024)));
    assert!(gcm.nlas.contains(&XfrmAttrs::IfId(0x5a6)));

    let chacha = by_spi(0xc0ffee02);
    assert!(!chacha
        .nlas
        .iter()
        .any(|a| matches!(a, XfrmAttrs::EncapsulationTemplate(_))));
    let cbc = by_spi(0xc0ffee03);
    assert_eq!(cbc.user_sa_info.reqid, Owner::Broker.reqid_tag() | 2);
    assert!(cbc.nlas.iter().any(|a| matches!(a,
        XfrmAttrs::AuthenticationAlgTrunc(alg) if alg.alg_trunc_len == 128 && alg.alg_key == key(0x70, 32))));
}

#[test]
fn the_kernels_policy_dump_parses_back() {
    let policies: Vec<_> = dump("policy-dump")
        .into_iter()
        .map(|m| match m {
            XfrmMessage::AddPolicy(p) => p,
            other => panic!("not a policy: {other:?}"),
        })
        .collect();
    assert_eq!(policies.len(), 2);
    for p in &policies {
        assert!(policy_is_ours(p, Owner::Broker), "{p:?}");
        assert_eq!(p.user_policy_info.priority, 199808);
    }
    let out = policies
        .iter()
        .find(|p| p.user_policy_info.direction == Direction::Out as u8)
        .unwrap();
    assert_eq!(out.user_policy_info.selector.prefixlen_d, 128);
    assert_eq!(out.user_policy_info.selector.daddr.to_ipv6(), client_v6());
    assert!(out.nlas.contains(&XfrmAttrs::IfId(0x5a6)));
    // Someone else's policy (another reqid, no if_id of ours) is not ours.
    let mut theirs = out.clone();
    theirs.nlas.retain(|a| !matches!(a, XfrmAttrs::IfId(_)));
    for a in &mut theirs.nlas {
        if let XfrmAttrs::Template(t) = a {
            t[0].reqid = 7;
        }
    }
    assert!(!policy_is_ours(&theirs, Owner::Broker));
    assert!(!policy_is_ours(&theirs, Owner::Client));
    assert!(policy_is_ours(out, Owner::Broker));
}

fn client_v6() -> Ipv6Addr {
    "2001:db8:5::2".parse().unwrap()
}
