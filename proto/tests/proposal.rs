//! Proposal selection by local policy.

use sixgate_proto::crypto::{Encryption, Integrity, KeGroup, Legacy, Prf};
use sixgate_proto::error::PeerIncompatible;
use sixgate_proto::proposal::{EspPolicy, IkePolicy};
use sixgate_proto::wire::*;

fn t(ty: TransformType, id: u16) -> Transform {
    Transform::new(ty, TransformId(id))
}
fn aes(id: TransformId, bits: u16) -> Transform {
    Transform::with_key_length(TransformType::ENCR, id, bits)
}
fn ike(number: u8, transforms: Vec<Transform>) -> Proposal {
    Proposal::new(number, ProtocolId::IKE, vec![], transforms)
}
use TransformType as T;

/// strongSwan 5.9's default IKE proposals: AES-CBC with SHA-2 first, then
/// the AEADs; groups with Curve25519 and ECP first.
fn strongswan_default() -> Vec<Proposal> {
    let groups = [31, 19, 20, 21, 15, 16, 14];
    let mut p1 = vec![
        aes(encr_id::AES_CBC, 128),
        aes(encr_id::AES_CBC, 192),
        aes(encr_id::AES_CBC, 256),
    ];
    p1.extend([12, 13, 14, 2].map(|i| t(T::INTEG, i)));
    p1.extend([5, 6, 7, 2].map(|i| t(T::PRF, i)));
    p1.extend(groups.map(|g| t(T::KE, g)));
    let mut p2 = vec![
        aes(encr_id::AES_GCM_16, 128),
        aes(encr_id::AES_GCM_16, 256),
        t(T::ENCR, 28),
    ];
    p2.extend([5, 6, 7, 2].map(|i| t(T::PRF, i)));
    p2.extend(groups.map(|g| t(T::KE, g)));
    vec![ike(1, p1), ike(2, p2)]
}

#[test]
fn prefers_aead_and_ecc_and_keeps_the_initiators_ke_group() {
    let c = IkePolicy::default()
        .select(&strongswan_default(), Some(ke_id::CURVE25519))
        .unwrap();
    assert_eq!(c.suite.encr, Encryption::AesGcm16 { key_bits: 128 });
    assert_eq!(c.suite.integ, None);
    assert_eq!(c.suite.prf, Prf::HmacSha256);
    assert_eq!(c.suite.ke, KeGroup::Curve25519);
    assert_eq!(c.reply.number, 2);
    assert_eq!(
        c.reply.transforms.len(),
        3,
        "one transform per type, no INTEG with an AEAD"
    );

    // KE for ECP-384 in the initiator's message: kept, no retry needed.
    let c = IkePolicy::default()
        .select(&strongswan_default(), Some(ke_id::ECP_384))
        .unwrap();
    assert_eq!(c.suite.ke, KeGroup::Ecp384);
    // A KE group we refuse (ECP-521) is not kept: our best is chosen, and
    // the initiator will get INVALID_KE_PAYLOAD.
    let c = IkePolicy::default()
        .select(&strongswan_default(), Some(ke_id::ECP_521))
        .unwrap();
    assert_eq!(c.suite.ke, KeGroup::Curve25519);
}

#[test]
fn explicit_cbc_modp_proposal_is_accepted() {
    // aes256-sha256-modp2048
    let offer = vec![ike(
        1,
        vec![
            aes(encr_id::AES_CBC, 256),
            t(T::INTEG, 12),
            t(T::PRF, 5),
            t(T::KE, 14),
        ],
    )];
    let c = IkePolicy::default()
        .select(&offer, Some(ke_id::MODP_2048))
        .unwrap();
    assert_eq!(c.suite.encr, Encryption::AesCbc { key_bits: 256 });
    assert_eq!(c.suite.integ, Some(Integrity::HmacSha256_128));
    assert_eq!(c.suite.ke, KeGroup::Modp2048);
    assert_eq!(c.reply.transforms, offer[0].transforms);
}

#[test]
fn legacy_algorithms_need_the_switch() {
    // Windows' default: 3DES/AES-CBC, SHA-1, MODP-1024.
    let offer = vec![ike(
        1,
        vec![
            aes(encr_id::AES_CBC, 256),
            t(T::INTEG, 2),
            t(T::PRF, 2),
            t(T::KE, 2),
        ],
    )];
    // Refused, with the reason the operator can act on.
    assert_eq!(
        IkePolicy::default().select(&offer, None),
        Err(PeerIncompatible::OnlyLegacyProposals)
    );
    let mut legacy = IkePolicy {
        legacy: Legacy::Allow,
        ..IkePolicy::default()
    };
    legacy.integ.push(Integrity::HmacSha1_96);
    legacy.prf.push(Prf::HmacSha1);
    legacy.ke.push(KeGroup::Modp1024);
    let c = legacy.select(&offer, None).unwrap();
    assert_eq!(c.suite.ke, KeGroup::Modp1024);
    assert_eq!(c.suite.prf, Prf::HmacSha1);
}

#[test]
fn incomplete_or_mixed_proposals_are_refused() {
    let no_ke = vec![ike(1, vec![aes(encr_id::AES_GCM_16, 128), t(T::PRF, 5)])];
    let cbc_without_integ = vec![ike(
        1,
        vec![aes(encr_id::AES_CBC, 128), t(T::PRF, 5), t(T::KE, 19)],
    )];
    let aead_with_integ = vec![ike(
        1,
        vec![
            aes(encr_id::AES_GCM_16, 128),
            t(T::INTEG, 12),
            t(T::PRF, 5),
            t(T::KE, 19),
        ],
    )];
    let odd_key = vec![ike(
        1,
        vec![aes(encr_id::AES_GCM_16, 100), t(T::PRF, 5), t(T::KE, 19)],
    )];
    for offer in [no_ke, cbc_without_integ, aead_with_integ, odd_key, vec![]] {
        assert_eq!(
            IkePolicy::default().select(&offer, None),
            Err(PeerIncompatible::NoProposalChosen),
            "{offer:?}"
        );
    }
}

#[test]
fn initiator_accepts_only_what_it_offered() {
    let policy = IkePolicy::default();
    let offer = policy.proposals();
    assert_eq!(offer.len(), 2);
    let choice = policy.select(&offer, None).unwrap();
    assert_eq!(
        policy.accept_reply(std::slice::from_ref(&choice.reply)),
        Ok(choice.suite)
    );
    let mut foreign = choice.reply.clone();
    foreign.transforms[0] = aes(encr_id::AES_GCM_16, 192);
    assert!(policy.accept_reply(&[foreign]).is_err());
    let mut two_groups = choice.reply.clone();
    two_groups.transforms.push(t(T::KE, 19));
    assert!(policy.accept_reply(&[two_groups]).is_err());
    assert!(policy
        .accept_reply(&[choice.reply.clone(), choice.reply])
        .is_err());
}

#[test]
fn esp_selection_with_and_without_pfs() {
    let policy = EspPolicy::default();
    let offer = policy.proposals([1, 2, 3, 4], false);
    let c = policy.select(&offer, None).unwrap();
    assert_eq!(c.encr, Encryption::AesGcm16 { key_bits: 128 });
    assert_eq!(c.pfs, None);
    assert!(!c.esn, "ESN off when the peer also accepts it off");
    assert_eq!(c.peer_spi, vec![1, 2, 3, 4]);

    let pfs = EspPolicy {
        pfs: vec![KeGroup::Curve25519, KeGroup::Modp2048],
        ..EspPolicy::default()
    };
    let offer = pfs.proposals([5, 6, 7, 8], true);
    let c = pfs.select(&offer, Some(ke_id::MODP_2048)).unwrap();
    assert_eq!(c.pfs, Some(KeGroup::Modp2048));
    // A responder without a PFS preference still serves a PFS request.
    let c = EspPolicy::default()
        .select(&offer, Some(ke_id::CURVE25519))
        .unwrap();
    assert_eq!(c.pfs, Some(KeGroup::Curve25519));

    // aes256-sha256 ESP, strongSwan style (ESN no).
    let cbc = vec![Proposal::new(
        1,
        ProtocolId::ESP,
        vec![9, 9, 9, 9],
        vec![aes(encr_id::AES_CBC, 256), t(T::INTEG, 12), t(T::ESN, 0)],
    )];
    let c = EspPolicy::default().select(&cbc, None).unwrap();
    assert_eq!(
        (c.encr, c.integ),
        (
            Encryption::AesCbc { key_bits: 256 },
            Some(Integrity::HmacSha256_128)
        )
    );
    let mut only_esn = cbc.clone();
    only_esn[0].transforms[2] = t(T::ESN, 1);
    assert!(EspPolicy::default().select(&only_esn, None).unwrap().esn);
    let no_esn = EspPolicy {
        esn: false,
        ..EspPolicy::default()
    };
    assert_eq!(
        no_esn.select(&only_esn, None),
        Err(PeerIncompatible::NoProposalChosen)
    );
}
