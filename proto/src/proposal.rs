//! Choosing algorithms: the local policy, the proposals an initiator sends
//! from it, the responder's pick among the initiator's proposals, and the
//! initiator's check of the responder's answer (RFC 7296 2.7, 3.3.6).
//!
//! The responder ranks every acceptable combination it can form from each
//! offered proposal: AEAD before encryption-plus-HMAC, elliptic-curve key
//! exchange before MODP, then its own order of preference. One exception
//! saves a round trip: when the group of the initiator's KE payload is
//! acceptable within the chosen proposal it is kept, even if the policy
//! ranks another group of that proposal higher (an INVALID_KE_PAYLOAD
//! retry costs more than the difference between two acceptable groups).

mod syntax;

pub use syntax::ProposalSyntaxError;

use crate::crypto::{Encryption, Integrity, KeGroup, Legacy, Prf, Suite};
use crate::error::PeerIncompatible;
use crate::wire::{
    esn_id, integ_id, ke_id, Proposal, ProtocolId, Transform, TransformId, TransformType,
};

/// Acceptable IKE SA algorithms, each list in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkePolicy {
    /// Encryption algorithms.
    pub encr: Vec<Encryption>,
    /// Integrity algorithms (for non-AEAD encryption).
    pub integ: Vec<Integrity>,
    /// PRFs.
    pub prf: Vec<Prf>,
    /// Key exchange methods.
    pub ke: Vec<KeGroup>,
    /// Whether SHA-1 and MODP-1024 may be chosen.
    pub legacy: Legacy,
}

/// Acceptable Child SA (ESP) algorithms, each list in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspPolicy {
    /// Encryption algorithms.
    pub encr: Vec<Encryption>,
    /// Integrity algorithms (for non-AEAD encryption).
    pub integ: Vec<Integrity>,
    /// Key exchange methods for PFS; empty means no PFS is requested, but a
    /// peer asking for PFS with one of [`IkePolicy::default`]'s groups is
    /// still served.
    pub pfs: Vec<KeGroup>,
    /// Whether extended sequence numbers may be used.
    pub esn: bool,
    /// Whether MODP-1024 may be chosen for PFS. HMAC-SHA1-96 is chosen
    /// when `integ` lists it, as by default: RFC 8221 keeps it for ESP,
    /// and Windows offers nothing else there.
    pub legacy: Legacy,
}

// AES-128 first, as strongSwan orders its defaults: 128-bit keys are
// strength enough, and the fewer rounds matter on the data path.
const AEADS_AND_CBC: [Encryption; 5] = [
    Encryption::AesGcm16 { key_bits: 128 },
    Encryption::AesGcm16 { key_bits: 256 },
    Encryption::ChaCha20Poly1305,
    Encryption::AesCbc { key_bits: 256 },
    Encryption::AesCbc { key_bits: 128 },
];
const SHA2_INTEG: [Integrity; 3] = [
    Integrity::HmacSha256_128,
    Integrity::HmacSha384_192,
    Integrity::HmacSha512_256,
];
const DEFAULT_GROUPS: [KeGroup; 5] = [
    KeGroup::Curve25519,
    KeGroup::Ecp256,
    KeGroup::Ecp384,
    KeGroup::Modp2048,
    KeGroup::Modp3072,
];

impl Default for IkePolicy {
    /// What strongSwan 5.9, iOS/macOS and Android offer by default.
    fn default() -> Self {
        IkePolicy {
            encr: AEADS_AND_CBC.to_vec(),
            integ: SHA2_INTEG.to_vec(),
            prf: vec![Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512],
            ke: DEFAULT_GROUPS.to_vec(),
            legacy: Legacy::Refuse,
        }
    }
}

impl Default for EspPolicy {
    fn default() -> Self {
        EspPolicy {
            encr: AEADS_AND_CBC.to_vec(),
            integ: [&SHA2_INTEG[..], &[Integrity::HmacSha1_96]].concat(),
            pfs: Vec::new(),
            esn: true,
            legacy: Legacy::Refuse,
        }
    }
}

/// The outcome of IKE proposal selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeChoice {
    /// The proposal to send back: the chosen number, one transform per type.
    pub reply: Proposal,
    /// The algorithms.
    pub suite: Suite,
}

/// The outcome of ESP proposal selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspChoice {
    /// The proposal to send back (its SPI is the peer's; replace it with ours).
    pub reply: Proposal,
    /// The SPI the peer proposed: it receives with it, so we send with it.
    pub peer_spi: Vec<u8>,
    /// Encryption.
    pub encr: Encryption,
    /// Integrity (`None` with an AEAD).
    pub integ: Option<Integrity>,
    /// The PFS group, if any.
    pub pfs: Option<KeGroup>,
    /// Whether extended sequence numbers are used.
    pub esn: bool,
}

/// Position of `x` in `list`, if there.
fn rank<T: PartialEq>(list: &[T], x: &T) -> Option<usize> {
    list.iter().position(|y| y == x)
}

/// The best transform of type `ty` in `p` by our ranking `pick`.
fn best<T: Copy>(
    p: &Proposal,
    ty: TransformType,
    pick: impl Fn(&Transform) -> Option<(usize, T)>,
) -> Option<(usize, T)> {
    p.transforms
        .iter()
        .filter(|t| t.ty == ty)
        .filter_map(pick)
        .min_by_key(|(r, _)| *r)
}

fn offers(p: &Proposal, ty: TransformType) -> bool {
    p.transforms.iter().any(|t| t.ty == ty)
}

/// The encryption choices of a proposal: the best AEAD and the best
/// non-AEAD, each ranked.
fn encr_candidates(p: &Proposal, policy: &[Encryption]) -> [Option<(usize, Encryption)>; 2] {
    let pick = |aead: bool| {
        best(p, TransformType::ENCR, |t| {
            let e = Encryption::from_transform(t)?;
            (e.is_aead() == aead).then_some(())?;
            Some((rank(policy, &e)?, e))
        })
    };
    [pick(true), pick(false)]
}

/// The integrity algorithm for `encr`: none for an AEAD (the proposal may
/// only say NONE), the best acceptable one otherwise.
fn integ_for(
    p: &Proposal,
    encr: Encryption,
    policy: &[Integrity],
    legacy: Legacy,
) -> Option<Option<Integrity>> {
    if encr.is_aead() {
        let only_none = p
            .transforms
            .iter()
            .filter(|t| t.ty == TransformType::INTEG)
            .all(|t| t.id == integ_id::NONE);
        return only_none.then_some(None);
    }
    best(p, TransformType::INTEG, |t| {
        let i = Integrity::from_id(t.id, legacy)?;
        Some((rank(policy, &i)?, i))
    })
    .map(|(_, i)| Some(i))
}

/// The key exchange group of a proposal: the hinted one if the proposal
/// offers it and we accept it, else our best.
fn ke_for(
    p: &Proposal,
    policy: &[KeGroup],
    legacy: Legacy,
    hint: Option<TransformId>,
) -> Option<(usize, KeGroup)> {
    let pick = |t: &Transform| {
        let g = KeGroup::from_id(t.id, legacy)?;
        Some((rank(policy, &g)?, g))
    };
    if let Some(hint) = hint {
        let hinted = p
            .transforms
            .iter()
            .find(|t| t.ty == TransformType::KE && t.id == hint)
            .and_then(pick);
        if hinted.is_some() {
            return hinted;
        }
    }
    best(p, TransformType::KE, pick)
}

/// Sort key across proposals: AEAD first, then ECC, then our ranks.
type Score = (bool, bool, usize, usize, usize);

impl IkePolicy {
    /// The cheapest key exchange we accept among those the initiator
    /// offers, if it is cheaper than `chosen`: what a responder under
    /// load asks for (INVALID_KE_PAYLOAD) before it computes an
    /// expensive exchange for a peer that has not authenticated.
    pub fn cheaper_group(&self, offered: &[Proposal], chosen: KeGroup) -> Option<KeGroup> {
        offered
            .iter()
            .filter(|p| p.protocol == ProtocolId::IKE)
            .flat_map(|p| p.transforms.iter())
            .filter(|t| t.ty == TransformType::KE)
            .filter_map(|t| KeGroup::from_id(t.id, self.legacy))
            .filter(|g| self.ke.contains(g))
            .min_by_key(|g| g.cost())
            .filter(|g| g.cost() < chosen.cost())
    }

    /// Picks from the initiator's proposals. `ke_hint` is the group of the
    /// KE payload that came with them.
    pub fn select(
        &self,
        offered: &[Proposal],
        ke_hint: Option<TransformId>,
    ) -> Result<IkeChoice, PeerIncompatible> {
        let mut best_choice: Option<(Score, IkeChoice)> = None;
        for p in offered.iter().filter(|p| p.protocol == ProtocolId::IKE) {
            let Some((prf_rank, prf)) = best(p, TransformType::PRF, |t| {
                let f = Prf::from_id(t.id, self.legacy)?;
                Some((rank(&self.prf, &f)?, f))
            }) else {
                continue;
            };
            let Some((ke_rank, ke)) = ke_for(p, &self.ke, self.legacy, ke_hint) else {
                continue;
            };
            for (encr_rank, encr) in encr_candidates(p, &self.encr).into_iter().flatten() {
                let Some(integ) = integ_for(p, encr, &self.integ, self.legacy) else {
                    continue;
                };
                let score = (!encr.is_aead(), !ke.is_ecc(), encr_rank, ke_rank, prf_rank);
                if best_choice.as_ref().is_some_and(|(s, _)| *s <= score) {
                    continue;
                }
                let suite = Suite {
                    encr,
                    integ,
                    prf,
                    ke,
                };
                best_choice = Some((
                    score,
                    IkeChoice {
                        reply: suite_proposal(p.number, &suite),
                        suite,
                    },
                ));
            }
        }
        best_choice.map(|(_, c)| c).ok_or_else(|| {
            // Say so when `legacy` is what stands in the way (Windows'
            // default MODP-1024): the operator's fix is one line.
            if self.legacy == Legacy::Refuse && self.with_legacy().select(offered, ke_hint).is_ok()
            {
                PeerIncompatible::OnlyLegacyProposals
            } else {
                PeerIncompatible::NoProposalChosen
            }
        })
    }

    /// This policy with SHA-1 and MODP-1024 allowed as well.
    pub(crate) fn with_legacy(&self) -> IkePolicy {
        let mut p = self.clone();
        p.legacy = Legacy::Allow;
        p.integ.push(Integrity::HmacSha1_96);
        p.prf.push(Prf::HmacSha1);
        p.ke.push(KeGroup::Modp1024);
        p
    }

    /// The proposals an initiator sends: one with the AEADs, one with the
    /// others and their integrity algorithms (the split strongSwan makes,
    /// since RFC 5282 forbids mixing them in one proposal).
    pub fn proposals(&self) -> Vec<Proposal> {
        let mut rest: Vec<Transform> = self
            .prf
            .iter()
            .map(|f| Transform::new(TransformType::PRF, f.id()))
            .collect();
        rest.extend(
            self.ke
                .iter()
                .map(|g| Transform::new(TransformType::KE, g.id())),
        );
        split_proposals(ProtocolId::IKE, &[], &self.encr, &self.integ, &rest)
    }

    /// The initiator's check of the responder's choice: exactly one
    /// proposal, one transform of each needed type, each one we offered.
    pub fn accept_reply(&self, reply: &[Proposal]) -> Result<Suite, PeerIncompatible> {
        let [p] = reply else {
            return Err(PeerIncompatible::NoProposalChosen);
        };
        let ours = self.proposals();
        let offered = ours
            .iter()
            .find(|o| o.number == p.number)
            .ok_or(PeerIncompatible::NoProposalChosen)?;
        if p.protocol != ProtocolId::IKE
            || !p.transforms.iter().all(|t| offered.transforms.contains(t))
        {
            return Err(PeerIncompatible::NoProposalChosen);
        }
        let choice = self.select(std::slice::from_ref(p), None)?;
        if choice.reply.transforms.len() != p.transforms.len() {
            return Err(PeerIncompatible::NoProposalChosen);
        }
        Ok(choice.suite)
    }
}

fn suite_proposal(number: u8, suite: &Suite) -> Proposal {
    let mut transforms = vec![suite.encr.transform()];
    if let Some(i) = suite.integ {
        transforms.push(Transform::new(TransformType::INTEG, i.id()));
    }
    transforms.push(Transform::new(TransformType::PRF, suite.prf.id()));
    transforms.push(Transform::new(TransformType::KE, suite.ke.id()));
    Proposal::new(number, ProtocolId::IKE, Vec::new(), transforms)
}

impl EspPolicy {
    /// Picks from the initiator's ESP proposals. `ke_hint` is the group of
    /// the KE payload of a CREATE_CHILD_SA request (PFS), if any.
    pub fn select(
        &self,
        offered: &[Proposal],
        ke_hint: Option<TransformId>,
    ) -> Result<EspChoice, PeerIncompatible> {
        let pfs_groups: &[KeGroup] = if self.pfs.is_empty() {
            &DEFAULT_GROUPS
        } else {
            &self.pfs
        };
        let mut best_choice: Option<(Score, EspChoice)> = None;
        for p in offered
            .iter()
            .filter(|p| p.protocol == ProtocolId::ESP && p.spi.len() == 4)
        {
            // ESN: "no" unless only "yes" is offered and we allow it.
            let esn = match (
                p.transforms
                    .iter()
                    .any(|t| t.ty == TransformType::ESN && t.id == esn_id::NO),
                p.transforms
                    .iter()
                    .any(|t| t.ty == TransformType::ESN && t.id == esn_id::YES),
            ) {
                (true, _) => false,
                (false, true) if self.esn => true,
                (false, false) if !offers(p, TransformType::ESN) => false,
                _ => continue,
            };
            // PFS: none if not offered or NONE offered and we do not want it.
            let offers_none = !offers(p, TransformType::KE)
                || p.transforms
                    .iter()
                    .any(|t| t.ty == TransformType::KE && t.id == ke_id::NONE);
            let pfs = if offers_none && (self.pfs.is_empty() || ke_hint.is_none()) {
                None
            } else {
                match ke_for(p, pfs_groups, self.legacy, ke_hint) {
                    Some((_, g)) => Some(g),
                    None if offers_none => None,
                    None => continue,
                }
            };
            for (encr_rank, encr) in encr_candidates(p, &self.encr).into_iter().flatten() {
                let Some(integ) = integ_for(p, encr, &self.integ, Legacy::Allow) else {
                    continue;
                };
                let score = (!encr.is_aead(), false, encr_rank, 0, 0);
                if best_choice.as_ref().is_some_and(|(s, _)| *s <= score) {
                    continue;
                }
                let mut transforms = vec![encr.transform()];
                if let Some(i) = integ {
                    transforms.push(Transform::new(TransformType::INTEG, i.id()));
                }
                if let Some(g) = pfs {
                    transforms.push(Transform::new(TransformType::KE, g.id()));
                }
                transforms.push(Transform::new(
                    TransformType::ESN,
                    if esn { esn_id::YES } else { esn_id::NO },
                ));
                best_choice = Some((
                    score,
                    EspChoice {
                        reply: Proposal::new(p.number, ProtocolId::ESP, p.spi.clone(), transforms),
                        peer_spi: p.spi.clone(),
                        encr,
                        integ,
                        pfs,
                        esn,
                    },
                ));
            }
        }
        best_choice
            .map(|(_, c)| c)
            .ok_or(PeerIncompatible::NoProposalChosen)
    }

    /// The ESP proposals an initiator sends with its inbound `spi`, AEADs
    /// and the others apart; with PFS groups when `pfs` is set.
    pub fn proposals(&self, spi: [u8; 4], pfs: bool) -> Vec<Proposal> {
        let mut rest = Vec::new();
        if pfs {
            rest.extend(
                self.pfs
                    .iter()
                    .map(|g| Transform::new(TransformType::KE, g.id())),
            );
        }
        rest.push(Transform::new(TransformType::ESN, esn_id::NO));
        if self.esn {
            rest.push(Transform::new(TransformType::ESN, esn_id::YES));
        }
        split_proposals(ProtocolId::ESP, &spi, &self.encr, &self.integ, &rest)
    }
}

/// Proposals with the AEADs in one and the other ciphers with their
/// integrity algorithms in another (RFC 5282 forbids mixing them in one
/// proposal), each followed by the `rest` transforms.
fn split_proposals(
    protocol: ProtocolId,
    spi: &[u8],
    encr: &[Encryption],
    integ: &[Integrity],
    rest: &[Transform],
) -> Vec<Proposal> {
    let (aead, cbc): (Vec<Encryption>, Vec<Encryption>) = encr.iter().partition(|e| e.is_aead());
    let mut out = Vec::new();
    for (encrs, integ) in [(aead, &[][..]), (cbc, integ)] {
        if encrs.is_empty() {
            continue;
        }
        let mut transforms: Vec<Transform> = encrs.iter().map(|e| e.transform()).collect();
        transforms.extend(
            integ
                .iter()
                .map(|i| Transform::new(TransformType::INTEG, i.id())),
        );
        transforms.extend_from_slice(rest);
        out.push(Proposal::new(
            out.len() as u8 + 1,
            protocol,
            spi.to_vec(),
            transforms,
        ));
    }
    out
}
