//! One IKE SA: its keys, its message-ID windows, its Child SAs, and the
//! exchanges that build, maintain and end them (RFC 7296 1.2-1.4, 2.1-2.25).
//!
//! The SA is in one [`State`] at a time, and each state holds exactly the
//! data that is valid in it: an initiator waiting for the IKE_SA_INIT
//! response has its nonce and key exchange but no keys; once keys exist
//! ([`Keyed`]) the SA is in a [`Phase`] of authentication (the IKE_AUTH
//! request in flight, awaited, or waiting for an address) or established
//! ([`Session`]: the peer, the address, the Child SAs); a closed SA keeps
//! only what answers retransmissions.
//!
//! The message-ID window is 1 in both directions: we keep at most one
//! request of our own in flight (later work waits in `tasks`), and we answer
//! the peer's requests strictly in order, keeping the last response to send
//! again, byte for byte, when the request is retransmitted.
//!
//! Handlers return `Result<_, Error>`; [`IkeSa::handle_request`] is the one
//! place that turns an error into the notify the peer gets and the event
//! the embedder sees ([`Error::notify`], [`Error::ends_ike_sa`]).

mod create_child;
mod ike_auth;
mod informational;
mod init;
mod mobility;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::nat::{nat_hash, NatDetection};
use super::ts::{contains, ipv6_host, narrow};
use super::{
    ChildSa, ConnectRequest, DownReason, Effects, Event, SaId, SameDevice, Shared, Stats, Unique,
};
use crate::auth::{self, hash_algorithms_notify, signed_octets, SignMode};
use crate::cert::{match_identity, CertId, Purpose};
use crate::crypto::sk::{Reassembly, SkCipher};
use crate::crypto::{
    child_keymat, skeyseed, skeyseed_rekey, ChildSaKeys, IkeSaKeys, KeGroup, KeyExchangeSecret,
    Suite,
};
use crate::error::{Error, InvalidMessage, LocalPolicy, PeerIncompatible, PeerMisbehaved};
use crate::identity::CanonicalIdentity;
use crate::proposal::EspChoice;
use crate::wire::*;

use ike_auth::PendingAuth;
pub(crate) use init::InitRequest;

/// How long a closed SA stays around to answer retransmissions of the
/// request that closed it.
const LINGER: Duration = Duration::from_secs(20);
/// How many times an initiator follows COOKIE or INVALID_KE_PAYLOAD.
const MAX_INIT_RETRIES: u32 = 4;
/// Our nonce length: twice the strength of the strongest PRF we use.
const NONCE_LEN: usize = 32;
/// A retransmitted request is answered at most this often (a peer's own
/// retransmission timer is seconds; a burst of copies is a replay).
const RETRANSMIT_ANSWER_INTERVAL: Duration = Duration::from_millis(500);
/// A Child SA whose rekey is under way is not rekeyed again before this.
const REKEY_PENDING: Duration = Duration::from_secs(3600 * 24 * 365);

/// Where a datagram came from and arrived at.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    remote: SocketAddr,
    local: SocketAddr,
}

/// The addresses an IKE SA uses (they move with the peer's NAT mapping).
#[derive(Debug, Clone, Copy)]
struct Path {
    local: SocketAddr,
    remote: SocketAddr,
    /// IKE travels on the NAT-T port, with the non-ESP marker.
    on_nat_t_port: bool,
}

/// Where an IKE SA is, with what is valid there.
enum State {
    /// Initiator: our IKE_SA_INIT is in flight; no keys yet.
    InitSent(Box<InitiatorInit>),
    /// Keys exist: authenticating, or established.
    Keyed(Box<Keyed>),
    /// Over; kept until `until` to answer retransmissions of the request
    /// that closed it, with the keys that do so.
    Closed {
        until: Instant,
        gen: Option<Box<Generation>>,
    },
}

/// An IKE SA with keys.
struct Keyed {
    gen: Generation,
    /// The previous generation after an IKE rekey, until its delete.
    retired: Option<(Generation, Instant)>,
    /// The peer takes RFC 7383 fragments.
    peer_fragmentation: bool,
    outstanding: Option<Outstanding>,
    /// Work waiting for the request window.
    tasks: VecDeque<Task>,
    phase: Phase,
}

/// How far authentication has come.
enum Phase {
    /// Initiator: IKE_AUTH in flight.
    AuthSent {
        request: ConnectRequest,
        exchange: InitExchange,
        child_spi: u32,
    },
    /// Responder: IKE_SA_INIT answered, IKE_AUTH awaited until `deadline`.
    HalfOpen {
        exchange: InitExchange,
        deadline: Instant,
    },
    /// Responder: the peer authenticated; our IKE_AUTH answer waits for
    /// its address (see [`Event::AddressRequested`]).
    Admitting(Box<PendingAuth>),
    /// Authenticated.
    Established(Session),
}

/// What a peer proved in IKE_AUTH.
#[derive(Clone)]
struct Credentials {
    identity: CanonicalIdentity,
    /// Its certificate path below the trust anchor, for revocations that
    /// come later.
    path: Vec<CertId>,
}

/// An authenticated IKE SA.
struct Session {
    /// The identity the peer proved, canonical.
    peer: CanonicalIdentity,
    /// The certificates it proved it with.
    path: Vec<CertId>,
    /// The address it holds (responder).
    address: Option<Ipv6Addr>,
    children: Vec<Child>,
    ike_rekey_at: Option<Instant>,
    /// Our delete of the IKE SA is in flight.
    deleting: bool,
    /// Peer rekeys of a Child SA that collided with ours.
    collisions: Vec<Collision>,
}

/// A peer rekey of a Child SA that collided with our own rekey of it.
struct Collision {
    old_inbound_spi: u32,
    /// The peer exchange's nonces.
    nonces: [Vec<u8>; 2],
}

/// The cryptographic state of one generation of the IKE SA (it is replaced
/// on rekey) and its message-ID windows.
struct Generation {
    spi_i: u64,
    spi_r: u64,
    /// Whether we are the original initiator of this generation.
    initiator: bool,
    suite: Suite,
    keys: IkeSaKeys,
    sk_in: SkCipher,
    sk_out: SkCipher,
    next_request_id: u32,
    expected_peer_id: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    /// When we last sent `last_response` again for a retransmission.
    last_answered: Option<Instant>,
    /// Fragments of the peer's request, and of the response to ours, kept
    /// apart (RFC 7383 2.6: reassembly is per message).
    requests_in: Reassembly,
    responses_in: Reassembly,
}

impl Generation {
    /// The keys of a new generation of IKE SA `sa`; SKEYSEED goes to the
    /// key log, if there is one, and is then forgotten.
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared: &Shared,
        sa: SaId,
        suite: Suite,
        skeyseed: zeroize::Zeroizing<Vec<u8>>,
        keys: IkeSaKeys,
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
    ) -> Result<Generation, Error> {
        if let Some(log) = &shared.config.key_log {
            log.log(sa, spi_i, spi_r, &skeyseed, &keys);
        }
        let (ein, ain, eout, aout) = if initiator {
            (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai)
        } else {
            (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar)
        };
        let bad = || Error::PeerIncompatible(PeerIncompatible::NoProposalChosen);
        let sk_in = SkCipher::new(suite.encr, suite.integ, ein, ain).ok_or_else(bad)?;
        let sk_out = SkCipher::new(suite.encr, suite.integ, eout, aout).ok_or_else(bad)?;
        Ok(Generation {
            spi_i,
            spi_r,
            initiator,
            suite,
            keys,
            sk_in,
            sk_out,
            next_request_id: 0,
            expected_peer_id: 0,
            last_response: None,
            last_answered: None,
            requests_in: Reassembly::default(),
            responses_in: Reassembly::default(),
        })
    }

    /// The cached response, to send again for a retransmitted request; at
    /// most one per [`RETRANSMIT_ANSWER_INTERVAL`], so that replayed
    /// requests cannot turn us into a loudspeaker. Counted either way.
    fn answer_retransmission(&mut self, now: Instant, stats: &mut Stats) -> Option<Vec<Vec<u8>>> {
        let (_, cached) = self.last_response.as_ref()?;
        if self
            .last_answered
            .is_some_and(|t| now < t + RETRANSMIT_ANSWER_INTERVAL)
        {
            stats.retransmits_rate_limited += 1;
            return None;
        }
        self.last_answered = Some(now);
        stats.retransmits_answered += 1;
        Some(cached.clone())
    }

    fn local_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            minor_version: 0,
            exchange,
            flags: Flags::new(self.initiator, response),
            message_id,
        }
    }
}

/// A request of ours in flight.
struct Outstanding {
    id: u32,
    datagrams: Vec<Vec<u8>>,
    tries: u32,
    next_at: Instant,
    kind: Request,
}

/// What a request in flight was for, with what its response needs.
enum Request {
    Init,
    Auth,
    Dpd,
    DeleteIke,
    DeleteChild {
        inbound_spi: u32,
    },
    RekeyChild(Box<ChildRekey>),
    RekeyIke(Box<IkeRekey>),
    /// MOBIKE: our UPDATE_SA_ADDRESSES, with the COOKIE2 the answer must
    /// return.
    UpdateAddresses {
        cookie2: Vec<u8>,
    },
}

struct ChildRekey {
    old_inbound_spi: u32,
    new_inbound_spi: u32,
    ni: Vec<u8>,
    ke: Option<KeyExchangeSecret>,
}

struct IkeRekey {
    new_spi: u64,
    ni: Vec<u8>,
    ke: KeyExchangeSecret,
}

/// Work waiting for the request window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Dpd,
    DeleteIke,
    DeleteChild(u32),
    RekeyChild(u32),
    RekeyIke,
    UpdateAddresses,
}

/// Inputs of a Child SA's KEYMAT.
struct KeymatInput<'a> {
    pfs: Option<&'a [u8]>,
    ni: &'a [u8],
    nr: &'a [u8],
    we_initiated: bool,
}

struct Child {
    sa: ChildSa,
    rekey_at: Instant,
    /// Replaced by a rekey; waiting for its delete, which we send
    /// ourselves at this time if the peer has not.
    superseded: Option<Instant>,
}

/// The initiator's IKE_SA_INIT state, until the response arrives.
struct InitiatorInit {
    request: ConnectRequest,
    spi_i: u64,
    ni: Vec<u8>,
    ke: KeyExchangeSecret,
    cookie: Option<Vec<u8>>,
    retries: u32,
    outstanding: Outstanding,
}

/// Values of IKE_SA_INIT that IKE_AUTH signs and keys its first Child SA
/// with.
struct InitExchange {
    ni: Vec<u8>,
    nr: Vec<u8>,
    request: Vec<u8>,
    response: Vec<u8>,
    /// The peer's SIGNATURE_HASH_ALGORITHMS, if it sent the notify.
    peer_hashes: Option<Vec<HashAlgorithm>>,
}

impl InitExchange {
    /// How to sign our AUTH: RFC 7427 with a hash the peer announced, or
    /// the classic method of our key where it announced none.
    fn sign_mode(&self, legacy: crate::crypto::Legacy) -> SignMode<'_> {
        match &self.peer_hashes {
            Some(hashes) => SignMode::DigitalSignature(hashes),
            None => SignMode::Classic(legacy),
        }
    }
}

pub(crate) struct IkeSa {
    id: SaId,
    path: Path,
    /// What NAT detection found, if the peer took part in it.
    nat: Option<NatDetection>,
    /// Both sides announced MOBIKE_SUPPORTED (RFC 4555): the initiator
    /// moves the SA with UPDATE_SA_ADDRESSES.
    mobike: bool,
    /// Where the request being handled came from: its answer goes there.
    replying_to: Option<Arrived>,
    last_heard: Instant,
    /// (initiator's address, SPIi): how a retransmitted IKE_SA_INIT finds
    /// the SA while it is half-open (responder) or initiating.
    init_key: (SocketAddr, u64),
    down_reported: bool,
    /// The identity the peer claimed (IDi or IDr), before it proved it:
    /// what a refusal is logged under.
    claimed: Option<String>,
    /// Local SPIs of retired generations that are gone, for the endpoint
    /// to stop routing.
    forgotten_spis: Vec<u64>,
    state: State,
}

fn notify(ty: NotifyType, data: Vec<u8>) -> Payload {
    PayloadBody::Notify(Notify::new(ty, data)).into()
}

/// Our NAT_DETECTION_SOURCE_IP and _DESTINATION_IP for a message from
/// `local` to `remote` (RFC 7296 2.23; with the IKE SA's SPIs in MOBIKE's
/// UPDATE_SA_ADDRESSES, RFC 4555 3.5). A forced UDP encapsulation hashes
/// nothing as our source, so that the peer sees a NAT.
fn nat_detection(
    shared: &mut Shared,
    spis: (u64, u64),
    local: SocketAddr,
    remote: SocketAddr,
) -> [Payload; 2] {
    let (spi_i, spi_r) = spis;
    let source = if shared.config.force_udp_encapsulation {
        random_bytes(shared, 20)
    } else {
        nat_hash(spi_i, spi_r, local)
    };
    [
        notify(NotifyType::NAT_DETECTION_SOURCE_IP, source),
        notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_hash(spi_i, spi_r, remote),
        ),
    ]
}

/// The notify payload that reports `e` to the peer, if any.
fn error_notify(e: &Error) -> Option<Payload> {
    let ty = e.notify()?;
    let mut n = Notify::new(ty, e.notify_data());
    if let Some(spi) = e.notify_spi() {
        n.protocol = ProtocolId::ESP;
        n.spi = spi.to_be_bytes().to_vec();
    }
    Some(PayloadBody::Notify(n).into())
}

fn random_bytes(shared: &mut Shared, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    shared.rng.fill_bytes(&mut v);
    v
}

fn random_spi32(shared: &mut Shared) -> u32 {
    loop {
        let v = shared.rng.next_u32();
        // SPIs 1-255 are reserved (RFC 4303 2.1), and one in use by any
        // installed Child SA would make inbound lookups ambiguous.
        if v > 255 && !shared.inbound_spis.contains(&v) {
            return v;
        }
    }
}

/// When to retry a rekey the peer turned down (TEMPORARY_FAILURE, as in a
/// collision): a random point between one and four retransmission
/// timeouts, so two peers that collided do not collide again.
fn retry_delay(shared: &mut Shared) -> Duration {
    let base = shared.config.retransmit_timeout;
    let extra = shared.rng.next_u32() % 3000;
    base + base * extra / 1000
}

/// RFC 7296 2.5: a request of a higher major version is answered,
/// unprotected and in version 2, with INVALID_MAJOR_VERSION (whose data is
/// the version we speak); responses are not answered.
pub(crate) fn invalid_major_version(
    shared: &mut Shared,
    remote: SocketAddr,
    local: SocketAddr,
    datagram: &[u8],
) {
    let Some(h) = datagram.get(..HEADER_LEN) else {
        return;
    };
    if h[19] & Flags::RESPONSE != 0 {
        return;
    }
    let word = |r: std::ops::Range<usize>| {
        h.get(r)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    };
    let msg = Message {
        header: Header {
            spi_i: word(0..8),
            spi_r: word(8..16),
            minor_version: 0,
            exchange: ExchangeType(h[18]),
            flags: Flags::new(false, true),
            message_id: u32::from_be_bytes([h[20], h[21], h[22], h[23]]),
        },
        payloads: vec![notify(NotifyType::INVALID_MAJOR_VERSION, vec![0x20])],
    };
    if let Ok(bytes) = msg.emit() {
        push_datagram(shared, remote, local, &bytes);
    }
}

/// The CERTREQ payload naming our trust anchors, if we have any.
fn certreq(shared: &Shared) -> Option<Payload> {
    let hashes = shared.config.trust_anchors.certreq_hashes();
    (!hashes.is_empty()).then(|| {
        PayloadBody::CertReq(Certificate {
            encoding: CertEncoding::X509_SIGNATURE,
            data: hashes.to_vec(),
        })
        .into()
    })
}

/// SIGNATURE_HASH_ALGORITHMS: the RFC 7427 hashes we verify with (every
/// one we announce, with either curve and with RSA).
fn signature_hashes() -> Payload {
    notify(
        NotifyType::SIGNATURE_HASH_ALGORITHMS,
        hash_algorithms_notify(&auth::VERIFIED_HASHES),
    )
}

/// Sends an unprotected IKE_SA_INIT response carrying one notify.
fn init_error(
    shared: &mut Shared,
    header: &Header,
    remote: SocketAddr,
    local: SocketAddr,
    ty: NotifyType,
    data: Vec<u8>,
) {
    let msg = Message {
        header: Header {
            spi_i: header.spi_i,
            spi_r: 0,
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: Flags::new(false, true),
            message_id: 0,
        },
        payloads: vec![notify(ty, data)],
    };
    if let Ok(bytes) = msg.emit() {
        push_datagram(shared, remote, local, &bytes);
    }
}

/// Whether `datagram` is an unprotected INVALID_IKE_SPI notify (RFC 7296
/// 2.21.4): a peer that lost its state answering for an SA it forgot.
fn lost_state_answer(datagram: &[u8]) -> bool {
    Message::parse(datagram).is_ok_and(|m| {
        m.payloads.iter().any(
            |p| matches!(&p.body, PayloadBody::Notify(n) if n.ty == NotifyType::INVALID_IKE_SPI),
        )
    })
}

/// Answers a request for an IKE SA we do not have with an unprotected
/// INVALID_IKE_SPI, so that a peer of a previous run of ours learns at once
/// that its SA is gone. The caller rate-limits.
pub(crate) fn unknown_sa_answer(
    shared: &mut Shared,
    header: &Header,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let msg = Message {
        header: Header {
            flags: Flags::new(!header.flags.initiator(), true),
            minor_version: 0,
            ..*header
        },
        payloads: vec![notify(NotifyType::INVALID_IKE_SPI, Vec::new())],
    };
    if let Ok(bytes) = msg.emit() {
        push_datagram(shared, remote, local, &bytes);
    }
}

fn push_datagram(shared: &mut Shared, remote: SocketAddr, local: SocketAddr, bytes: &[u8]) {
    let marker =
        local.port() == shared.config.nat_t_port || remote.port() == shared.config.nat_t_port;
    let mut payload = Vec::with_capacity(bytes.len() + 4);
    if marker {
        payload.extend_from_slice(&NON_ESP_MARKER);
    }
    payload.extend_from_slice(bytes);
    shared.transmits.push_back(super::Transmit {
        remote,
        local,
        payload,
    });
}

/// The payloads of a message, sorted out.
#[derive(Default)]
struct Found<'a> {
    sa: Option<&'a SecurityAssociation>,
    ke: Option<&'a KeyExchange>,
    nonce: Option<&'a [u8]>,
    idi: Option<&'a Identification>,
    idr: Option<&'a Identification>,
    certs: Vec<Vec<u8>>,
    auth: Option<&'a Authentication>,
    tsi: Option<&'a TrafficSelectors>,
    tsr: Option<&'a TrafficSelectors>,
    cp: Option<&'a Configuration>,
    notifies: Vec<&'a Notify>,
    deletes: Vec<&'a Delete>,
}

impl<'a> Found<'a> {
    fn new(payloads: &'a [Payload]) -> Found<'a> {
        let mut f = Found::default();
        for p in payloads {
            match &p.body {
                PayloadBody::Sa(x) => f.sa = Some(x),
                PayloadBody::Ke(x) => f.ke = Some(x),
                PayloadBody::Nonce(x) => f.nonce = Some(x),
                PayloadBody::IdI(x) => f.idi = Some(x),
                PayloadBody::IdR(x) => f.idr = Some(x),
                PayloadBody::Cert(c) if c.encoding == CertEncoding::X509_SIGNATURE => {
                    f.certs.push(c.data.clone())
                }
                PayloadBody::Auth(x) => f.auth = Some(x),
                PayloadBody::TsI(x) => f.tsi = Some(x),
                PayloadBody::TsR(x) => f.tsr = Some(x),
                PayloadBody::Cp(x) => f.cp = Some(x),
                PayloadBody::Notify(n) => f.notifies.push(n),
                PayloadBody::Delete(d) => f.deletes.push(d),
                _ => {}
            }
        }
        f
    }

    fn notify(&self, ty: NotifyType) -> Option<&'a Notify> {
        self.notifies.iter().copied().find(|n| n.ty == ty)
    }

    fn error(&self) -> Option<NotifyType> {
        self.notifies.iter().map(|n| n.ty).find(|t| t.is_error())
    }

    /// NAT detection (RFC 7296 2.23): `None` if the peer sent no
    /// NAT_DETECTION payloads, else which side's address or port was
    /// translated on the way (its hash of its own address, or of ours,
    /// does not match what we see). `spi_r` is as the peer hashed it.
    fn nat_detected(
        &self,
        spi_i: u64,
        spi_r: u64,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> Option<NatDetection> {
        let mismatch = |ty: NotifyType, addr: SocketAddr| {
            let expected = nat_hash(spi_i, spi_r, addr);
            self.notifies
                .iter()
                .filter(|n| n.ty == ty)
                .all(|n| n.data != expected)
        };
        self.notify(NotifyType::NAT_DETECTION_SOURCE_IP)?;
        Some(NatDetection {
            peer_behind: mismatch(NotifyType::NAT_DETECTION_SOURCE_IP, remote),
            we_behind: mismatch(NotifyType::NAT_DETECTION_DESTINATION_IP, local),
        })
    }

    /// The hashes of the peer's SIGNATURE_HASH_ALGORITHMS, if it sent one
    /// (a malformed one counts as announcing nothing usable).
    fn signature_hashes(&self) -> Option<Vec<HashAlgorithm>> {
        self.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS)
            .map(|n| auth::parse_hash_algorithms(&n.data).unwrap_or_default())
    }

    /// The nonce, of a length RFC 7296 2.10 allows.
    fn nonce(&self) -> Result<&'a [u8], Error> {
        self.nonce
            .filter(|n| (16..=256).contains(&n.len()))
            .ok_or(Error::InvalidMessage(InvalidMessage::MissingPayload(
                "nonce",
            )))
    }
}

fn missing(what: &'static str) -> Error {
    Error::InvalidMessage(InvalidMessage::MissingPayload(what))
}

impl Keyed {
    fn new(gen: Generation, peer_fragmentation: bool, phase: Phase) -> Keyed {
        Keyed {
            gen,
            retired: None,
            peer_fragmentation,
            outstanding: None,
            tasks: VecDeque::new(),
            phase,
        }
    }

    fn session(&self) -> Option<&Session> {
        match &self.phase {
            Phase::Established(s) => Some(s),
            _ => None,
        }
    }

    fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Established(s) => Some(s),
            _ => None,
        }
    }
}

impl IkeSa {
    /// Its timers, for status: when the peer was last heard, when the IKE
    /// SA and each current Child SA (by inbound SPI) rekey.
    pub(crate) fn timers(&self) -> super::SaTimers {
        let session = self.keyed().and_then(Keyed::session);
        super::SaTimers {
            last_heard: self.last_heard,
            ike_rekey_at: session.and_then(|s| s.ike_rekey_at),
            child_rekey_at: session
                .map(|s| {
                    s.children
                        .iter()
                        .filter(|c| c.superseded.is_none())
                        .map(|c| (c.sa.inbound_spi, c.rekey_at))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn with_state(
        id: SaId,
        now: Instant,
        path: Path,
        init_key: (SocketAddr, u64),
        state: State,
    ) -> IkeSa {
        IkeSa {
            id,
            path,
            nat: None,
            mobike: false,
            replying_to: None,
            last_heard: now,
            init_key,
            down_reported: false,
            claimed: None,
            forgotten_spis: Vec::new(),
            state,
        }
    }

    fn keyed(&self) -> Option<&Keyed> {
        match &self.state {
            State::Keyed(k) => Some(k),
            _ => None,
        }
    }

    fn keyed_mut(&mut self) -> Option<&mut Keyed> {
        match &mut self.state {
            State::Keyed(k) => Some(k),
            _ => None,
        }
    }

    fn session_mut(&mut self) -> Option<&mut Session> {
        self.keyed_mut().and_then(Keyed::session_mut)
    }

    /// The first Child SA `which` picks, if the SA is established.
    fn child(&self, which: impl Fn(&Child) -> bool) -> Option<ChildSa> {
        self.keyed()
            .and_then(Keyed::session)
            .and_then(|s| s.children.iter().find(|c| which(c)))
            .map(|c| c.sa.clone())
    }

    /// The identity the peer proved, once it has.
    pub(crate) fn peer_identity(&self) -> Option<&CanonicalIdentity> {
        match &self.keyed()?.phase {
            Phase::Established(s) => Some(&s.peer),
            Phase::Admitting(p) => Some(&p.peer.identity),
            _ => None,
        }
    }

    /// Whether what the peer proved is now revoked.
    pub(crate) fn revoked(&self, revocations: &crate::cert::Revocations) -> bool {
        let (identity, path) = match &self.keyed().map(|k| &k.phase) {
            Some(Phase::Established(s)) => (&s.peer, &s.path),
            Some(Phase::Admitting(p)) => (&p.peer.identity, &p.peer.path),
            _ => return false,
        };
        revocations.check(path, identity).is_err()
    }

    /// The SPIs of the current generation, as in its headers.
    fn spis(&self) -> Option<(u64, u64)> {
        self.keyed().map(|k| (k.gen.spi_i, k.gen.spi_r))
    }

    /// ESP is carried in UDP: NAT detection found a translation, or we
    /// pretend one.
    fn esp_in_udp(&self, shared: &Shared) -> bool {
        self.nat
            .is_some_and(|n| n.any() || shared.config.force_udp_encapsulation)
    }

    /// The peer's address now.
    pub(crate) fn remote(&self) -> SocketAddr {
        self.path.remote
    }

    /// (initiator's address, SPIi): the key of the endpoint's half-open
    /// table, where a responder SA is filed until it leaves that state.
    pub(crate) fn init_key(&self) -> (SocketAddr, u64) {
        self.init_key
    }

    pub(crate) fn local_spis(&self) -> Vec<u64> {
        match &self.state {
            State::InitSent(i) => vec![i.spi_i],
            State::Keyed(k) => {
                let mut spis = vec![k.gen.local_spi()];
                spis.extend(k.retired.iter().map(|(g, _)| g.local_spi()));
                spis
            }
            State::Closed { gen, .. } => gen.iter().map(|g| g.local_spi()).collect(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    pub(crate) fn is_finished(&self, now: Instant) -> bool {
        matches!(self.state, State::Closed { until, .. } if now >= until)
    }

    fn nat_t_switch(&mut self, shared: &Shared) {
        let port = shared.config.nat_t_port;
        self.path.remote.set_port(port);
        self.path.local.set_port(port);
        self.path.on_nat_t_port = true;
    }

    fn send(&self, shared: &mut Shared, datagrams: &[Vec<u8>]) {
        self.send_to(shared, self.path.remote, self.path.local, datagrams);
    }

    fn send_to(
        &self,
        shared: &mut Shared,
        remote: SocketAddr,
        local: SocketAddr,
        datagrams: &[Vec<u8>],
    ) {
        for d in datagrams {
            push_datagram(shared, remote, local, d);
        }
    }

    /// The largest IKE message that fits `fragment_size` octets of IP packet.
    fn max_message_len(&self, shared: &Shared) -> usize {
        let ip_udp = if self.path.remote.is_ipv4() { 28 } else { 48 };
        let marker = if self.path.on_nat_t_port { 4 } else { 0 };
        shared.config.fragment_size.saturating_sub(ip_udp + marker)
    }

    /// Seals inner payloads for the current generation, fragmenting when
    /// the peer supports it and the message would not fit.
    fn seal(
        &self,
        shared: &mut Shared,
        exchange: ExchangeType,
        response: bool,
        id: u32,
        inner: &[Payload],
    ) -> Vec<Vec<u8>> {
        let limit = self.max_message_len(shared);
        let Some(k) = self.keyed() else {
            return Vec::new();
        };
        let header = k.gen.header(exchange, response, id);
        let whole = match k.gen.sk_out.seal(&header, &[], inner, &mut *shared.rng) {
            Ok(w) => w,
            Err(_) => return Vec::new(),
        };
        if whole.len() > limit && k.peer_fragmentation {
            if let Ok(fragments) =
                k.gen
                    .sk_out
                    .seal_fragments(&header, inner, limit, &mut *shared.rng)
            {
                return fragments;
            }
        }
        vec![whole]
    }

    fn send_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        exchange: ExchangeType,
        inner: &[Payload],
        kind: Request,
    ) {
        let Some(id) = self.keyed().map(|k| k.gen.next_request_id) else {
            return;
        };
        let datagrams = self.seal(shared, exchange, false, id, inner);
        self.send(shared, &datagrams);
        let next_at = now + shared.config.retransmit_timeout;
        if let Some(k) = self.keyed_mut() {
            k.gen.next_request_id = k.gen.next_request_id.wrapping_add(1);
            k.outstanding = Some(Outstanding {
                id,
                datagrams,
                tries: 0,
                next_at,
                kind,
            });
        }
    }

    fn send_response(
        &mut self,
        shared: &mut Shared,
        exchange: ExchangeType,
        id: u32,
        inner: &[Payload],
    ) {
        let datagrams = self.seal(shared, exchange, true, id, inner);
        match self.replying_to {
            Some(to) => self.send_to(shared, to.remote, to.local, &datagrams),
            None => self.send(shared, &datagrams),
        }
        if let Some(k) = self.keyed_mut() {
            k.gen.expected_peer_id = id.wrapping_add(1);
            k.gen.last_response = Some((id, datagrams));
        }
    }

    /// Answers request `id` with the notify of `e` (or nothing, where the
    /// RFC asks for silence, which still moves the window on).
    fn send_error_response(
        &mut self,
        shared: &mut Shared,
        exchange: ExchangeType,
        id: u32,
        e: &Error,
    ) {
        let inner: Vec<Payload> = error_notify(e).into_iter().collect();
        self.send_response(shared, exchange, id, &inner);
    }

    pub(crate) fn handle(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        datagram: &[u8],
        header: &Header,
    ) -> Effects {
        if header.exchange == ExchangeType::IKE_SA_INIT {
            if header.flags.response() {
                return self.handle_init_response(shared, now, datagram, header);
            }
            // A retransmitted IKE_SA_INIT request: the cached response.
            let cached = self
                .keyed_mut()
                .map(|k| &mut k.gen)
                .filter(|g| g.last_response.as_ref().is_some_and(|(id, _)| *id == 0))
                .and_then(|g| g.answer_retransmission(now, &mut shared.stats));
            if let Some(cached) = cached {
                self.send_to(shared, remote, local, &cached);
            }
            return Effects::default();
        }
        let retired = self
            .keyed()
            .and_then(|k| k.retired.as_ref())
            .is_some_and(|(old, _)| old.spi_i == header.spi_i && old.spi_r == header.spi_r);
        if retired {
            return self.handle_retired(shared, datagram, header);
        }
        let admitting = self
            .keyed()
            .is_some_and(|k| matches!(k.phase, Phase::Admitting(_)));
        if admitting && !header.flags.response() {
            // The IKE_AUTH request again (the peer's window is one): its
            // answer comes when the address does.
            shared.stats.retransmits_while_admitting += 1;
            return Effects::default();
        }
        let response = header.flags.response();
        let k = match &mut self.state {
            State::Keyed(k) => &mut **k,
            // A closed SA still answers a retransmission of the request
            // that closed it; responses to it are strays.
            State::Closed { gen: Some(_), .. } if response => {
                shared.stats.stray += 1;
                return Effects::default();
            }
            State::Closed { gen: Some(gen), .. } => {
                let gen = &mut **gen;
                if header.message_id.wrapping_add(1) == gen.expected_peer_id
                    && header.spi_i == gen.spi_i
                    && header.spi_r == gen.spi_r
                    && gen.sk_in.open(datagram).is_ok()
                {
                    if let Some(cached) = gen.answer_retransmission(now, &mut shared.stats) {
                        self.send_to(shared, remote, local, &cached);
                    }
                } else {
                    shared.stats.stray += 1;
                }
                return Effects::default();
            }
            _ => {
                shared.stats.stray += 1;
                return Effects::default();
            }
        };
        let gen = &mut k.gen;
        if header.spi_i != gen.spi_i || header.spi_r != gen.spi_r {
            shared.stats.unknown_spi += 1;
            return Effects::default();
        }
        let retransmission = !response && header.message_id.wrapping_add(1) == gen.expected_peer_id;
        let in_window = if response {
            k.outstanding
                .as_ref()
                .is_some_and(|o| o.id == header.message_id)
        } else {
            header.message_id == gen.expected_peer_id || retransmission
        };
        if !in_window {
            shared.stats.stray += 1;
            return Effects::default();
        }
        if response && lost_state_answer(datagram) {
            // The peer answered our request, unprotected, that it has no
            // such IKE SA (it restarted): no point waiting for a dead_after
            // or retransmissions. Only an answer to our own request in
            // flight, naming our SPIs, counts.
            self.close(shared, now, DownReason::PeerDead);
            return Effects::default();
        }
        let opened = match gen.sk_in.open(datagram) {
            Ok(o) => o,
            Err(Error::PeerMisbehaved(_)) => {
                shared.stats.integrity_failed += 1;
                return Effects::default();
            }
            Err(_) => {
                shared.stats.invalid += 1;
                return Effects::default();
            }
        };
        if retransmission {
            if opened.fragment.is_none_or(|(n, _)| n == 1) {
                if let Some(cached) = gen.answer_retransmission(now, &mut shared.stats) {
                    // Answered where it came from (RFC 7296 2.11).
                    self.send_to(shared, remote, local, &cached);
                }
            }
            return Effects::default();
        }
        let (first, plaintext) = if opened.fragment.is_some() {
            let buffer = if response {
                &mut gen.responses_in
            } else {
                &mut gen.requests_in
            };
            match buffer.add(header.message_id, opened) {
                Ok(Some(whole)) => whole,
                Ok(None) => return Effects::default(),
                Err(_) => {
                    shared.stats.invalid += 1;
                    return Effects::default();
                }
            }
        } else {
            (opened.first_payload, opened.plaintext)
        };
        self.last_heard = now;
        let arrived = Arrived { remote, local };
        let payloads = match parse_chain(first, &plaintext) {
            Ok(p) => p,
            Err(e) => {
                shared.stats.invalid += 1;
                if !response {
                    self.replying_to = Some(arrived);
                    self.send_error_response(shared, header.exchange, header.message_id, &e.into());
                    self.replying_to = None;
                }
                return Effects::default();
            }
        };
        // Authenticated and new: where a NAT may have moved the peer, this
        // is its address now; an address update moves it explicitly.
        let updates = !response
            && payloads.iter().any(|p| {
                matches!(&p.body, PayloadBody::Notify(n) if n.ty == NotifyType::UPDATE_SA_ADDRESSES)
            });
        if !updates {
            self.follow_peer(shared, remote, local);
        }
        if response {
            self.handle_response(shared, now, &payloads, arrived)
        } else {
            // Answers go back the way the request came (RFC 7296 2.11),
            // whether or not the SA follows.
            self.replying_to = Some(arrived);
            let effects = self.handle_request(shared, now, header, &payloads, arrived);
            self.replying_to = None;
            effects
        }
    }

    /// Dispatches a request by exchange and phase; the one place where an
    /// error becomes the notify the peer gets and the event we raise.
    fn handle_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        header: &Header,
        payloads: &[Payload],
        arrived: Arrived,
    ) -> Effects {
        let id = header.message_id;
        let exchange = header.exchange;
        let (half_open, established) = match self.keyed().map(|k| &k.phase) {
            Some(Phase::HalfOpen { .. }) => (true, false),
            Some(Phase::Established(_)) => (false, true),
            _ => (false, false),
        };
        let initiator_in_auth = self
            .keyed()
            .is_some_and(|k| matches!(k.phase, Phase::AuthSent { .. }));
        let result = match exchange {
            ExchangeType::IKE_AUTH if half_open => {
                self.handle_auth_request(shared, now, id, payloads)
            }
            ExchangeType::INFORMATIONAL if established || initiator_in_auth => {
                self.handle_informational(shared, now, id, payloads, arrived);
                Ok(Effects::default())
            }
            ExchangeType::CREATE_CHILD_SA if established => {
                self.handle_create_child_request(shared, now, id, payloads)
            }
            ExchangeType::CREATE_CHILD_SA | ExchangeType::IKE_AUTH => {
                Err(Error::LocalPolicy(LocalPolicy::TemporaryFailure))
            }
            _ => {
                // An exchange we do not implement: answer it empty so the
                // peer's window moves on.
                self.send_response(shared, exchange, id, &[]);
                Ok(Effects::default())
            }
        };
        match result {
            Ok(effects) => effects,
            Err(e) => {
                self.send_error_response(shared, exchange, id, &e);
                let mut effects = Effects::default();
                if exchange == ExchangeType::IKE_AUTH && half_open {
                    // Refused before it was established: the SA is over.
                    effects.left_half_open = true;
                    let reason = match e.notify() {
                        Some(ty) => DownReason::RefusedPeer(ty, e.to_string()),
                        None => DownReason::RefusedPeer(NotifyType::INVALID_SYNTAX, e.to_string()),
                    };
                    self.close(shared, now, reason);
                }
                effects
            }
        }
    }

    fn handle_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        payloads: &[Payload],
        arrived: Arrived,
    ) -> Effects {
        let Some(outstanding) = self.keyed_mut().and_then(|k| k.outstanding.take()) else {
            return Effects::default();
        };
        let mut effects = Effects::default();
        match outstanding.kind {
            Request::Init => {}
            Request::Auth => self.handle_auth_response(shared, now, payloads),
            Request::Dpd => {}
            Request::DeleteIke => self.close(shared, now, DownReason::DeletedLocally),
            Request::DeleteChild { inbound_spi } => self.remove_child(shared, inbound_spi),
            Request::RekeyChild(rekey) => {
                self.handle_child_rekey_response(shared, now, *rekey, payloads)
            }
            Request::RekeyIke(rekey) => {
                effects = self.handle_ike_rekey_response(shared, now, *rekey, payloads)
            }
            Request::UpdateAddresses { cookie2 } => {
                self.handle_update_response(shared, now, &cookie2, payloads, arrived)
            }
        }
        self.kick(shared, now);
        effects
    }

    // ----- life cycle --------------------------------------------------

    fn rekey_delay(&self, shared: &mut Shared, lifetime: Duration) -> Duration {
        let jitter = shared.config.rekey_jitter.min(lifetime / 2);
        let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX).max(1);
        lifetime - Duration::from_millis(shared.rng.next_u64() % jitter_ms)
    }

    /// The SA is authenticated (and, on the responder, has its address):
    /// it becomes a session with the peer. Returns the phase it leaves.
    fn establish(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        peer: Credentials,
        address: Option<Ipv6Addr>,
    ) -> Option<Phase> {
        let rekey_at = now + self.rekey_delay(shared, shared.config.ike_lifetime);
        let remote = self.path.remote;
        let id = self.id;
        let k = self.keyed_mut()?;
        let Credentials {
            identity: peer,
            path,
        } = peer;
        let session = Session {
            peer: peer.clone(),
            path,
            address,
            children: Vec::new(),
            ike_rekey_at: Some(rekey_at),
            deleting: false,
            collisions: Vec::new(),
        };
        let left = std::mem::replace(&mut k.phase, Phase::Established(session));
        shared.push_event(Event::IkeSaUp {
            sa: id,
            peer_identity: peer,
            suite: k.gen.suite,
            remote,
            initiator: k.gen.initiator,
        });
        Some(left)
    }

    fn child_up(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        child: ChildSa,
        replaces: Option<u32>,
    ) {
        let rekey_at = now + self.rekey_delay(shared, shared.config.child_lifetime);
        let Some(s) = self.session_mut() else { return };
        match replaces {
            Some(old) => {
                if let Some(c) = s.children.iter_mut().find(|c| c.sa.inbound_spi == old) {
                    c.superseded = Some(now + shared.config.rekey_grace);
                }
                shared.push_event(Event::ChildSaRekeyed {
                    old_inbound_spi: old,
                    new: child.clone(),
                });
            }
            None => shared.push_event(Event::ChildSaUp(child.clone())),
        }
        s.children.push(Child {
            sa: child,
            rekey_at,
            superseded: None,
        });
    }

    fn remove_child(&mut self, shared: &mut Shared, inbound_spi: u32) {
        let id = self.id;
        let Some(s) = self.session_mut() else { return };
        if let Some(i) = s
            .children
            .iter()
            .position(|c| c.sa.inbound_spi == inbound_spi)
        {
            let c = s.children.remove(i);
            shared.push_event(Event::ChildSaDown {
                ike_sa: id,
                inbound_spi: c.sa.inbound_spi,
                outbound_spi: c.sa.outbound_spi,
            });
        }
    }

    /// Ends the SA: every Child SA goes down, the address goes back, and
    /// the SA lingers (with its keys) to answer retransmissions of the
    /// request it answered last.
    pub(crate) fn close(&mut self, shared: &mut Shared, now: Instant, reason: DownReason) {
        let mut peer_identity = None;
        let state = std::mem::replace(
            &mut self.state,
            State::Closed {
                until: now,
                gen: None,
            },
        );
        let gen = match state {
            State::Closed { until, gen } => {
                self.state = State::Closed { until, gen };
                return;
            }
            State::InitSent(_) => None,
            State::Keyed(k) => {
                let Keyed { gen, phase, .. } = *k;
                if let Phase::Established(s) = &phase {
                    peer_identity = Some(s.peer.to_string());
                }
                if let Phase::Established(s) = phase {
                    for c in s.children {
                        shared.push_event(Event::ChildSaDown {
                            ike_sa: self.id,
                            inbound_spi: c.sa.inbound_spi,
                            outbound_spi: c.sa.outbound_spi,
                        });
                    }
                    if let Some(address) = s.address {
                        shared.push_event(Event::AddressReleased {
                            sa: self.id,
                            identity: s.peer,
                            address,
                        });
                    }
                }
                Some(gen)
            }
        };
        if !self.down_reported {
            self.down_reported = true;
            shared.push_event(Event::IkeSaDown {
                sa: self.id,
                remote: self.path.remote,
                peer: peer_identity.or_else(|| self.claimed.take()),
                reason,
            });
        }
        let answered = gen.as_ref().is_some_and(|g| g.last_response.is_some());
        self.state = State::Closed {
            until: now + if answered { LINGER } else { Duration::ZERO },
            gen: gen.filter(|_| answered).map(Box::new),
        };
    }

    /// Sends `payloads` in one INFORMATIONAL request, never retransmitted,
    /// and closes the SA without waiting for an answer: for when the SA
    /// is over whether the peer hears it or not.
    fn tell_and_close(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        payloads: &[Payload],
        reason: DownReason,
    ) {
        if let Some(id) = self.keyed().map(|k| k.gen.next_request_id) {
            let bytes = self.seal(shared, ExchangeType::INFORMATIONAL, false, id, payloads);
            self.send(shared, &bytes);
        }
        self.close(shared, now, reason);
    }

    /// Ends an IKE SA that a newer one of the same identity replaces: a
    /// Delete that says why, and gone at once (the newcomer has the
    /// address).
    pub(crate) fn replace(&mut self, shared: &mut Shared, now: Instant) {
        if matches!(self.state, State::Closed { .. }) {
            return;
        }
        let payloads = [
            notify(NotifyType::SIXGATE_REPLACED, Vec::new()),
            PayloadBody::Delete(Delete {
                protocol: ProtocolId::IKE,
                spi_size: 0,
                spis: Vec::new(),
            })
            .into(),
        ];
        self.tell_and_close(shared, now, &payloads, DownReason::Replaced);
    }

    /// Ends an IKE SA whose peer's credentials were revoked: a Delete, and
    /// gone at once, since revocation must not wait on the peer.
    pub(crate) fn revoke(&mut self, shared: &mut Shared, now: Instant) {
        if matches!(self.state, State::Closed { .. }) {
            return;
        }
        let delete: Payload = PayloadBody::Delete(Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: Vec::new(),
        })
        .into();
        let established = self.keyed().and_then(Keyed::session).is_some();
        if established {
            self.tell_and_close(shared, now, &[delete], DownReason::Revoked);
        } else {
            self.close(shared, now, DownReason::Revoked);
        }
    }

    pub(crate) fn start_delete(&mut self, shared: &mut Shared, now: Instant) {
        let deleting = self.session_mut().map(|s| s.deleting);
        match deleting {
            Some(false) => {
                self.queue(Task::DeleteIke);
                self.kick(shared, now);
            }
            Some(true) => {}
            None if matches!(self.state, State::Closed { .. }) => {}
            None => self.close(shared, now, DownReason::DeletedLocally),
        }
    }

    fn queue(&mut self, task: Task) {
        if let Some(k) = self.keyed_mut() {
            if !k.tasks.contains(&task) {
                k.tasks.push_back(task);
            }
        }
    }

    pub(crate) fn queue_child_rekey(&mut self, inbound_spi: u32) {
        self.queue(Task::RekeyChild(inbound_spi));
    }

    pub(crate) fn queue_child_delete(&mut self, inbound_spi: u32) {
        self.queue(Task::DeleteChild(inbound_spi));
    }

    pub(crate) fn queue_ike_rekey(&mut self) {
        self.queue(Task::RekeyIke);
    }

    /// Starts the next queued request if the window is free.
    pub(crate) fn kick(&mut self, shared: &mut Shared, now: Instant) {
        loop {
            let Some(k) = self.keyed_mut() else { return };
            let established = k.session().is_some_and(|s| !s.deleting);
            if k.outstanding.is_some() || !established {
                return;
            }
            let Some(task) = k.tasks.pop_front() else {
                return;
            };
            match task {
                Task::Dpd => {
                    self.send_request(shared, now, ExchangeType::INFORMATIONAL, &[], Request::Dpd)
                }
                Task::DeleteIke => {
                    let delete: Payload = PayloadBody::Delete(Delete {
                        protocol: ProtocolId::IKE,
                        spi_size: 0,
                        spis: Vec::new(),
                    })
                    .into();
                    self.send_request(
                        shared,
                        now,
                        ExchangeType::INFORMATIONAL,
                        &[delete],
                        Request::DeleteIke,
                    );
                    if let Some(s) = self.session_mut() {
                        s.deleting = true;
                    }
                }
                Task::DeleteChild(inbound_spi) => {
                    if self.child(|c| c.sa.inbound_spi == inbound_spi).is_none() {
                        continue;
                    }
                    let delete: Payload = PayloadBody::Delete(Delete {
                        protocol: ProtocolId::ESP,
                        spi_size: 4,
                        spis: vec![inbound_spi.to_be_bytes().to_vec()],
                    })
                    .into();
                    self.send_request(
                        shared,
                        now,
                        ExchangeType::INFORMATIONAL,
                        &[delete],
                        Request::DeleteChild { inbound_spi },
                    );
                }
                Task::RekeyChild(inbound_spi) => self.start_child_rekey(shared, now, inbound_spi),
                Task::RekeyIke => self.start_ike_rekey(shared, now),
                Task::UpdateAddresses => self.send_update_addresses(shared, now),
            }
        }
    }

    // ----- timers --------------------------------------------------------

    /// When this SA needs [`IkeSa::handle_timeout`] next.
    pub(crate) fn next_timeout(&self, shared: &Shared) -> Option<Instant> {
        let k = match &self.state {
            State::Closed { until, .. } => return Some(*until),
            State::InitSent(i) => return Some(i.outstanding.next_at),
            State::Keyed(k) => k,
        };
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        at(k.outstanding.as_ref().map(|o| o.next_at));
        // A request in flight and nothing heard for `dead_after`: dead,
        // whatever retransmissions remain.
        if k.outstanding.is_some() {
            at(shared.config.dead_after.map(|d| self.last_heard + d));
        }
        at(k.retired.as_ref().map(|(_, until)| *until));
        match &k.phase {
            Phase::HalfOpen { deadline, .. } => at(Some(*deadline)),
            Phase::Admitting(p) => at(Some(p.deadline)),
            Phase::AuthSent { .. } => {}
            Phase::Established(s) if !s.deleting => {
                if k.outstanding.is_none() {
                    at(Some(self.last_heard + shared.config.dpd_interval));
                }
                at(s.ike_rekey_at);
                at(s.children
                    .iter()
                    .map(|c| c.superseded.unwrap_or(c.rekey_at))
                    .min());
            }
            Phase::Established(_) => {}
        }
        next
    }

    pub(crate) fn handle_timeout(&mut self, shared: &mut Shared, now: Instant) -> Effects {
        let mut effects = Effects::default();
        let k = match &mut self.state {
            State::Closed { .. } => return effects,
            State::InitSent(i) => {
                if i.outstanding.next_at <= now {
                    if i.outstanding.tries >= shared.config.retransmit_tries {
                        self.close(shared, now, DownReason::PeerDead);
                        return effects;
                    }
                    retransmit(shared, &mut i.outstanding, now);
                    let datagrams = i.outstanding.datagrams.clone();
                    self.send(shared, &datagrams);
                }
                return effects;
            }
            State::Keyed(k) => k,
        };
        if k.retired.as_ref().is_some_and(|(_, until)| *until <= now) {
            if let Some((old, _)) = k.retired.take() {
                self.forgotten_spis.push(old.local_spi());
            }
        }
        let Some(k) = self.keyed_mut() else {
            return effects;
        };
        match &k.phase {
            Phase::HalfOpen { deadline, .. } if *deadline <= now => {
                effects.left_half_open = true;
                self.close(shared, now, DownReason::HalfOpenTimeout);
                return effects;
            }
            Phase::Admitting(p) if p.deadline <= now => {
                // The store never answered: refuse the Child SA, keep the
                // IKE SA.
                self.address_assigned(shared, now, None);
            }
            _ => {}
        }
        let last_heard = self.last_heard;
        let silent_too_long = shared
            .config
            .dead_after
            .is_some_and(|d| last_heard + d <= now);
        let Some(k) = self.keyed_mut() else {
            return effects;
        };
        if let Some(o) = &mut k.outstanding {
            if o.next_at <= now || silent_too_long {
                if o.tries >= shared.config.retransmit_tries || silent_too_long {
                    self.close(shared, now, DownReason::PeerDead);
                    return effects;
                }
                retransmit(shared, o, now);
                let datagrams = o.datagrams.clone();
                self.send(shared, &datagrams);
            }
        }
        let Some(k) = self.keyed_mut() else {
            return effects;
        };
        let idle = k.outstanding.is_none();
        let Phase::Established(s) = &mut k.phase else {
            return effects;
        };
        if s.deleting {
            return effects;
        }
        let mut due = Vec::new();
        if idle && last_heard + shared.config.dpd_interval <= now {
            due.push(Task::Dpd);
        }
        if s.ike_rekey_at.is_some_and(|t| t <= now) {
            s.ike_rekey_at = None;
            due.push(Task::RekeyIke);
        }
        for c in &mut s.children {
            match c.superseded {
                None if c.rekey_at <= now => {
                    // Not again until this rekey had its chance.
                    c.rekey_at = now + REKEY_PENDING;
                    due.push(Task::RekeyChild(c.sa.inbound_spi));
                }
                Some(at) if at <= now => {
                    // The peer rekeyed it and never deleted it.
                    c.superseded = Some(now + REKEY_PENDING);
                    due.push(Task::DeleteChild(c.sa.inbound_spi));
                }
                _ => {}
            }
        }
        for task in due {
            self.queue(task);
        }
        self.kick(shared, now);
        effects
    }
}

/// Counts a retransmission of `o` and schedules the next (the timeout
/// doubles each time).
fn retransmit(shared: &mut Shared, o: &mut Outstanding, now: Instant) {
    o.tries += 1;
    o.next_at = now + shared.config.retransmit_timeout * 2u32.saturating_pow(o.tries);
    shared.stats.retransmits_sent += 1;
}
