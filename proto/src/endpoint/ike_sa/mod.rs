//! One IKE SA: its keys, its message-ID windows, its Child SAs, and the
//! exchanges that build, maintain and end them (RFC 7296 1.2-1.4, 2.1-2.25).
//!
//! The message-ID window is 1 in both directions: we keep at most one
//! request of our own in flight (later work waits in `tasks`), and we answer
//! the peer's requests strictly in order, keeping the last response to send
//! again, byte for byte, when the request is retransmitted.

mod create_child;
mod ike_auth;
mod informational;
mod init;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::nat::nat_hash;
use super::ts::{contains, ipv6_host, narrow};
use super::{ChildSa, ConnectRequest, DownReason, Effects, Event, SaId, Shared};
use crate::auth::{self, hash_algorithms_notify, signed_octets, SignMode};
use crate::cert::{match_identity, CertError};
use crate::crypto::sk::{Reassembly, SkCipher};
use crate::crypto::{
    child_keymat, skeyseed, skeyseed_rekey, ChildSaKeys, IkeSaKeys, KeGroup, KeyExchangeSecret,
    Suite,
};
use crate::error::Error;
use crate::identity::CanonicalIdentity;
use crate::proposal::EspChoice;
use crate::wire::*;

/// How long a closed SA stays around to answer retransmissions of the
/// request that closed it.
const LINGER: Duration = Duration::from_secs(20);
/// How many times an initiator follows COOKIE or INVALID_KE_PAYLOAD.
const MAX_INIT_RETRIES: u32 = 4;
/// Our nonce length: twice the strength of the strongest PRF we use.
const NONCE_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, IKE_AUTH awaited.
    HalfOpen,
    /// Responder: authenticated; the IKE_AUTH response waits for the
    /// address (see [`Event::AddressRequested`]).
    Admitting,
    /// Authenticated.
    Established,
    /// Our delete of the IKE SA is in flight.
    Deleting,
    /// Over; kept until `until` to answer retransmissions.
    Closed { until: Instant },
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
    reassembly: Reassembly,
}

impl Generation {
    /// The keys of a new generation of IKE SA `sa`; SKEYSEED goes to the
    /// key log, if there is one, and is then forgotten.
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared: &Shared,
        sa: SaId,
        suite: Suite,
        skeyseed: Zeroizing<Vec<u8>>,
        keys: IkeSaKeys,
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
    ) -> Option<Generation> {
        if let Some(log) = &shared.config.key_log {
            log.log(sa, spi_i, spi_r, &skeyseed, &keys);
        }
        let (ein, ain, eout, aout) = if initiator {
            (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai)
        } else {
            (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar)
        };
        let sk_in = SkCipher::new(suite.encr, suite.integ, ein, ain)?;
        let sk_out = SkCipher::new(suite.encr, suite.integ, eout, aout)?;
        Some(Generation {
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
            reassembly: Reassembly::default(),
        })
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
    Auth {
        child_spi: u32,
    },
    Dpd,
    DeleteIke,
    DeleteChild {
        inbound_spi: u32,
    },
    RekeyChild(Box<ChildRekey>),
    RekeyIke(Box<IkeRekey>),
    /// An INFORMATIONAL carrying an error notify; the SA closes after it.
    Notify(DownReason),
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
    /// Replaced by a rekey; waiting for its delete.
    superseded: bool,
}

/// The initiator's IKE_SA_INIT state, until the response arrives.
struct InitiatorInit {
    request: ConnectRequest,
    ni: Vec<u8>,
    ke: KeyExchangeSecret,
    cookie: Option<Vec<u8>>,
    retries: u32,
}

/// Values of IKE_SA_INIT that IKE_AUTH signs.
struct InitExchange {
    ni: Vec<u8>,
    nr: Vec<u8>,
    request: Vec<u8>,
    response: Vec<u8>,
    peer_fragmentation: bool,
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
    state: State,
    local: SocketAddr,
    remote: SocketAddr,
    /// IKE travels on the NAT-T port, with the non-ESP marker.
    on_nat_t_port: bool,
    /// ESP must be carried in UDP.
    nat: bool,
    gen: Option<Generation>,
    /// The previous generation after an IKE rekey, until its delete.
    retired: Option<(Generation, Instant)>,
    init: Option<InitiatorInit>,
    exchange: Option<InitExchange>,
    init_key: Option<(SocketAddr, u64)>,
    half_open_deadline: Option<Instant>,
    outstanding: Option<Outstanding>,
    tasks: VecDeque<Task>,
    children: Vec<Child>,
    /// The identity the peer proved, canonical.
    peer_identity: Option<CanonicalIdentity>,
    assigned_address: Option<Ipv6Addr>,
    /// The IKE_AUTH request that waits for its address (state Admitting).
    pending_auth: Option<ike_auth::PendingAuth>,
    last_heard: Instant,
    dpd_interval: Duration,
    ike_rekey_at: Option<Instant>,
    down_reported: bool,
    /// Peer rekeys of a Child SA that collided with ours: the old SA's
    /// inbound SPI, the peer exchange's nonces, and our exchange's Ni.
    collisions: Vec<(u32, [Vec<u8>; 2], Vec<u8>)>,
    /// Local SPIs of retired generations that are gone, for the endpoint
    /// to stop routing.
    forgotten_spis: Vec<u64>,
}

fn notify(ty: NotifyType, data: Vec<u8>) -> Payload {
    PayloadBody::Notify(Notify::new(ty, data)).into()
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
    /// NAT_DETECTION payloads, else whether an address or port was
    /// translated on the way (its hash of our address, or of its own, does
    /// not match what we see). `spi_r` is as in the message's header.
    fn nat_detected(
        &self,
        spi_i: u64,
        spi_r: u64,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> Option<bool> {
        let mismatch = |ty: NotifyType, addr: SocketAddr| {
            let expected = nat_hash(spi_i, spi_r, addr);
            self.notifies
                .iter()
                .filter(|n| n.ty == ty)
                .all(|n| n.data != expected)
        };
        self.notify(NotifyType::NAT_DETECTION_SOURCE_IP)?;
        Some(
            mismatch(NotifyType::NAT_DETECTION_SOURCE_IP, remote)
                || mismatch(NotifyType::NAT_DETECTION_DESTINATION_IP, local),
        )
    }

    /// The hashes of the peer's SIGNATURE_HASH_ALGORITHMS, if it sent one
    /// (a malformed one counts as announcing nothing usable).
    fn signature_hashes(&self) -> Option<Vec<HashAlgorithm>> {
        self.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS)
            .map(|n| auth::parse_hash_algorithms(&n.data).unwrap_or_default())
    }

    fn nonce_ok(&self) -> Option<&'a [u8]> {
        self.nonce.filter(|n| (16..=256).contains(&n.len()))
    }
}

impl IkeSa {
    fn blank(id: SaId, now: Instant, local: SocketAddr, remote: SocketAddr, state: State) -> IkeSa {
        IkeSa {
            id,
            state,
            local,
            remote,
            on_nat_t_port: false,
            nat: false,
            gen: None,
            retired: None,
            init: None,
            exchange: None,
            init_key: None,
            half_open_deadline: None,
            outstanding: None,
            tasks: VecDeque::new(),
            children: Vec::new(),
            peer_identity: None,
            assigned_address: None,
            pending_auth: None,
            last_heard: now,
            dpd_interval: Duration::from_secs(30),
            ike_rekey_at: None,
            down_reported: false,
            collisions: Vec::new(),
            forgotten_spis: Vec::new(),
        }
    }

    pub(crate) fn peer_identity(&self) -> Option<&CanonicalIdentity> {
        self.peer_identity.as_ref()
    }

    pub(crate) fn init_key(&self) -> Option<(SocketAddr, u64)> {
        self.init_key
    }

    pub(crate) fn local_spis(&self) -> Vec<u64> {
        let mut spis: Vec<u64> = self.gen.iter().map(Generation::local_spi).collect();
        spis.extend(self.retired.iter().map(|(g, _)| g.local_spi()));
        spis.extend(
            self.init_key
                .map(|(_, spi)| spi)
                .filter(|_| self.init.is_some()),
        );
        spis
    }

    pub(crate) fn is_finished(&self, now: Instant) -> bool {
        matches!(self.state, State::Closed { until } if now >= until)
    }

    fn nat_t_switch(&mut self, shared: &Shared) {
        let port = shared.config.nat_t_port;
        self.remote.set_port(port);
        self.local.set_port(port);
        self.on_nat_t_port = true;
    }

    fn send(&self, shared: &mut Shared, datagrams: &[Vec<u8>]) {
        for d in datagrams {
            push_datagram(shared, self.remote, self.local, d);
        }
    }

    /// The largest IKE message that fits `fragment_size` octets of IP packet.
    fn max_message_len(&self, shared: &Shared) -> usize {
        let ip_udp = if self.remote.is_ipv4() { 28 } else { 48 };
        let marker = if self.on_nat_t_port { 4 } else { 0 };
        shared.config.fragment_size.saturating_sub(ip_udp + marker)
    }

    /// Seals inner payloads for the current generation, fragmenting when
    /// the peer supports it and the message would not fit.
    fn seal(
        &mut self,
        shared: &mut Shared,
        exchange: ExchangeType,
        response: bool,
        id: u32,
        inner: &[Payload],
    ) -> Vec<Vec<u8>> {
        let limit = self.max_message_len(shared);
        let fragment = self.exchange.as_ref().is_some_and(|e| e.peer_fragmentation);
        let Some(gen) = &self.gen else {
            return Vec::new();
        };
        let header = gen.header(exchange, response, id);
        let whole = match gen.sk_out.seal(&header, &[], inner, &mut *shared.rng) {
            Ok(w) => w,
            Err(_) => return Vec::new(),
        };
        if whole.len() > limit && fragment {
            if let Ok(fragments) =
                gen.sk_out
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
        let Some(id) = self.gen.as_ref().map(|g| g.next_request_id) else {
            return;
        };
        let datagrams = self.seal(shared, exchange, false, id, inner);
        if let Some(g) = &mut self.gen {
            g.next_request_id = g.next_request_id.wrapping_add(1);
        }
        self.send(shared, &datagrams);
        self.outstanding = Some(Outstanding {
            id,
            datagrams,
            tries: 0,
            next_at: now + shared.config.retransmit_timeout,
            kind,
        });
    }

    fn send_response(
        &mut self,
        shared: &mut Shared,
        exchange: ExchangeType,
        id: u32,
        inner: &[Payload],
    ) {
        let datagrams = self.seal(shared, exchange, true, id, inner);
        self.send(shared, &datagrams);
        if let Some(g) = &mut self.gen {
            g.expected_peer_id = id.wrapping_add(1);
            g.last_response = Some((id, datagrams));
        }
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
        if matches!(self.state, State::Closed { .. }) && header.flags.response() {
            shared.stats.stray += 1;
            return Effects::default();
        }
        if header.exchange == ExchangeType::IKE_SA_INIT {
            if header.flags.response() {
                return self.handle_init_response(shared, now, datagram, header);
            }
            // A retransmitted IKE_SA_INIT request: the cached response.
            if let Some((0, cached)) = self.gen.as_ref().and_then(|g| g.last_response.clone()) {
                shared.stats.retransmits_answered += 1;
                self.send(shared, &cached);
            }
            return Effects::default();
        }
        if let Some((old, _)) = &self.retired {
            if old.spi_i == header.spi_i && old.spi_r == header.spi_r {
                return self.handle_retired(shared, datagram, header);
            }
        }
        if self.state == State::Admitting && !header.flags.response() {
            // The IKE_AUTH request again (the peer's window is one): its
            // answer comes when the address does.
            shared.stats.retransmits_while_admitting += 1;
            return Effects::default();
        }
        let Some(gen) = &mut self.gen else {
            shared.stats.stray += 1;
            return Effects::default();
        };
        if header.spi_i != gen.spi_i || header.spi_r != gen.spi_r {
            shared.stats.unknown_spi += 1;
            return Effects::default();
        }
        let response = header.flags.response();
        let retransmission = !response && header.message_id.wrapping_add(1) == gen.expected_peer_id;
        let in_window = if response {
            self.outstanding
                .as_ref()
                .is_some_and(|o| o.id == header.message_id)
        } else {
            header.message_id == gen.expected_peer_id || retransmission
        };
        if !in_window {
            shared.stats.stray += 1;
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
                if let Some((_, cached)) = gen.last_response.clone() {
                    shared.stats.retransmits_answered += 1;
                    self.send(shared, &cached);
                }
            }
            return Effects::default();
        }
        let (first, plaintext) = if opened.fragment.is_some() {
            match gen.reassembly.add(opened) {
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
        // Authenticated: the peer is alive and this is its address now.
        self.last_heard = now;
        if remote != self.remote || local != self.local {
            self.remote = remote;
            self.local = local;
            self.on_nat_t_port = local.port() == shared.config.nat_t_port;
        }
        let payloads = match parse_chain(first, &plaintext) {
            Ok(p) => p,
            Err(e) => {
                shared.stats.invalid += 1;
                if !response {
                    if let Some(ty) = Error::from(e).notify() {
                        self.send_response(
                            shared,
                            header.exchange,
                            header.message_id,
                            &[notify(ty, Vec::new())],
                        );
                    }
                }
                return Effects::default();
            }
        };
        if response {
            self.handle_response(shared, now, &payloads)
        } else {
            self.handle_request(shared, now, header, &payloads)
        }
    }

    fn handle_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        header: &Header,
        payloads: &[Payload],
    ) -> Effects {
        let id = header.message_id;
        match (header.exchange, self.state) {
            (ExchangeType::IKE_AUTH, State::HalfOpen) => {
                self.handle_auth_request(shared, now, id, payloads)
            }
            (
                ExchangeType::INFORMATIONAL,
                State::Established | State::Deleting | State::AuthSent,
            ) => {
                self.handle_informational(shared, now, id, payloads);
                Effects::default()
            }
            (ExchangeType::CREATE_CHILD_SA, State::Established | State::Deleting) => {
                self.handle_create_child_request(shared, now, id, payloads)
            }
            (ExchangeType::CREATE_CHILD_SA, _) | (ExchangeType::IKE_AUTH, _) => {
                self.send_response(
                    shared,
                    header.exchange,
                    id,
                    &[notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
                );
                Effects::default()
            }
            _ => {
                // An exchange we do not implement: answer it empty so the
                // peer's window moves on.
                self.send_response(shared, header.exchange, id, &[]);
                Effects::default()
            }
        }
    }

    fn handle_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        payloads: &[Payload],
    ) -> Effects {
        let Some(outstanding) = self.outstanding.take() else {
            return Effects::default();
        };
        let mut effects = Effects::default();
        match outstanding.kind {
            Request::Init => {}
            Request::Auth { child_spi } => {
                self.handle_auth_response(shared, now, child_spi, payloads)
            }
            Request::Dpd => {}
            Request::DeleteIke => self.close(shared, now, DownReason::DeletedLocally),
            Request::DeleteChild { inbound_spi } => self.remove_child(shared, inbound_spi),
            Request::Notify(reason) => self.close(shared, now, reason),
            Request::RekeyChild(rekey) => {
                self.handle_child_rekey_response(shared, now, *rekey, payloads)
            }
            Request::RekeyIke(rekey) => {
                effects = self.handle_ike_rekey_response(shared, now, *rekey, payloads)
            }
        }
        self.kick(shared, now);
        effects
    }

    fn handle_auth_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        child_spi: u32,
        payloads: &[Payload],
    ) {
        let found = Found::new(payloads);
        let (Some(idr), Some(auth)) = (found.idr, found.auth) else {
            let ty = found.error().unwrap_or(NotifyType::INVALID_SYNTAX);
            self.close(shared, now, DownReason::RefusedByPeer(ty));
            return;
        };
        let Some(request) = self.init.as_ref().map(|i| i.request.clone()) else {
            return;
        };
        let verdict = match &request.remote_identity {
            Some(want) if CanonicalIdentity::from_wire(idr).as_ref() != Ok(want) => Err(format!(
                "responder is {}, not {want}",
                CanonicalIdentity::from_wire(idr).map_or_else(|e| e.to_string(), |i| i.to_string()),
            )),
            _ => self.authenticate_peer(shared, now, idr, &found.certs, auth, false),
        };
        let proved = match verdict {
            Ok(p) => p,
            Err(why) => {
                // RFC 7296 2.21.2: tell the responder, then give up.
                let reason = DownReason::RefusedPeer(NotifyType::AUTHENTICATION_FAILED, why);
                self.state = State::Established;
                self.send_request(
                    shared,
                    now,
                    ExchangeType::INFORMATIONAL,
                    &[notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())],
                    Request::Notify(reason.clone()),
                );
                // No retransmission: the SA is over whether it arrives or not.
                self.outstanding = None;
                self.close(shared, now, reason);
                return;
            }
        };
        self.peer_identity = Some(proved);
        self.state = State::Established;
        self.established(shared, now);
        match self.initiator_child(shared, &found, child_spi, &request) {
            Ok(child) => self.child_up(shared, now, child, None),
            Err(ty) => {
                shared.push_event(Event::ChildSaRefused {
                    sa: self.id,
                    notify: ty,
                });
                // Without its Child SA the connection is of no use.
                self.tasks.push_back(Task::DeleteIke);
            }
        }
    }

    fn initiator_child(
        &mut self,
        shared: &mut Shared,
        found: &Found<'_>,
        child_spi: u32,
        request: &ConnectRequest,
    ) -> Result<ChildSa, NotifyType> {
        if let Some(ty) = found.error() {
            return Err(ty);
        }
        let (Some(sa), Some(tsi), Some(tsr), Some(ex)) =
            (found.sa, found.tsi, found.tsr, &self.exchange)
        else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let config = shared.config.clone();
        let offered = config.esp_policy.proposals(child_spi.to_be_bytes(), false);
        let [reply] = sa.proposals.as_slice() else {
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        };
        let ours = offered
            .iter()
            .find(|p| p.number == reply.number)
            .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        if !reply.transforms.iter().all(|t| ours.transforms.contains(t)) {
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let choice = config
            .esp_policy
            .select(std::slice::from_ref(reply), None)
            .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        // Narrowing may only shrink what we proposed.
        let within = |got: &[TrafficSelector], proposed: &[TrafficSelector]| {
            !got.is_empty() && got.iter().all(|g| proposed.iter().any(|p| contains(p, g)))
        };
        if !within(&tsi.selectors, &request.local_ts) || !within(&tsr.selectors, &request.remote_ts)
        {
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        if request.request_address {
            let cp = found
                .cp
                .filter(|c| c.cfg_type == CfgType::REPLY)
                .ok_or(NotifyType::FAILED_CP_REQUIRED)?;
            let address = cp
                .attributes
                .iter()
                .filter(|a| a.ty == CfgAttributeType::INTERNAL_IP6_ADDRESS)
                .find_map(CfgAttribute::as_ip6_prefix)
                .ok_or(NotifyType::FAILED_CP_REQUIRED)?;
            let dns = cp
                .attributes
                .iter()
                .filter(|a| {
                    matches!(
                        a.ty,
                        CfgAttributeType::INTERNAL_IP6_DNS | CfgAttributeType::INTERNAL_IP4_DNS
                    )
                })
                .filter_map(CfgAttribute::as_address)
                .collect();
            shared.push_event(Event::AddressAssigned {
                sa: self.id,
                address,
                dns,
            });
        }
        let keymat = KeymatInput {
            pfs: None,
            ni: &ex.ni,
            nr: &ex.nr,
            we_initiated: true,
        };
        self.make_child(
            &choice,
            child_spi,
            keymat,
            tsi.selectors.clone(),
            tsr.selectors.clone(),
        )
    }

    // ----- life cycle --------------------------------------------------

    fn rekey_delay(&self, shared: &mut Shared, lifetime: Duration) -> Duration {
        let jitter = shared.config.rekey_jitter.min(lifetime / 2);
        let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX).max(1);
        lifetime - Duration::from_millis(shared.rng.next_u64() % jitter_ms)
    }

    fn established(&mut self, shared: &mut Shared, now: Instant) {
        self.ike_rekey_at = Some(now + self.rekey_delay(shared, shared.config.ike_lifetime));
        let Some(gen) = &self.gen else { return };
        shared.push_event(Event::IkeSaUp {
            sa: self.id,
            peer_identity: match &self.peer_identity {
                Some(p) => p.clone(),
                None => return,
            },
            suite: gen.suite,
            remote: self.remote,
            initiator: gen.initiator,
        });
    }

    fn child_up(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        child: ChildSa,
        replaces: Option<u32>,
    ) {
        let rekey_at = now + self.rekey_delay(shared, shared.config.child_lifetime);
        match replaces {
            Some(old) => {
                if let Some(c) = self.children.iter_mut().find(|c| c.sa.inbound_spi == old) {
                    c.superseded = true;
                }
                shared.push_event(Event::ChildSaRekeyed {
                    old_inbound_spi: old,
                    new: child.clone(),
                });
            }
            None => shared.push_event(Event::ChildSaUp(child.clone())),
        }
        self.children.push(Child {
            sa: child,
            rekey_at,
            superseded: false,
        });
    }

    fn remove_child(&mut self, shared: &mut Shared, inbound_spi: u32) {
        if let Some(i) = self
            .children
            .iter()
            .position(|c| c.sa.inbound_spi == inbound_spi)
        {
            let c = self.children.remove(i);
            shared.push_event(Event::ChildSaDown {
                ike_sa: self.id,
                inbound_spi: c.sa.inbound_spi,
                outbound_spi: c.sa.outbound_spi,
            });
        }
    }

    /// Ends the SA: every Child SA goes down, the address goes back to the
    /// pool, and the SA lingers to answer retransmissions.
    pub(crate) fn close(&mut self, shared: &mut Shared, now: Instant, reason: DownReason) {
        if matches!(self.state, State::Closed { .. }) {
            return;
        }
        for c in std::mem::take(&mut self.children) {
            shared.push_event(Event::ChildSaDown {
                ike_sa: self.id,
                inbound_spi: c.sa.inbound_spi,
                outbound_spi: c.sa.outbound_spi,
            });
        }
        self.pending_auth = None;
        if let (Some(address), Some(identity)) = (self.assigned_address.take(), &self.peer_identity)
        {
            shared.push_event(Event::AddressReleased {
                sa: self.id,
                identity: identity.clone(),
                address,
            });
        }
        if !self.down_reported {
            self.down_reported = true;
            shared.push_event(Event::IkeSaDown {
                sa: self.id,
                reason,
            });
        }
        self.outstanding = None;
        self.tasks.clear();
        let linger = if self.gen.as_ref().is_some_and(|g| g.last_response.is_some()) {
            LINGER
        } else {
            Duration::ZERO
        };
        self.state = State::Closed {
            until: now + linger,
        };
    }

    pub(crate) fn start_delete(&mut self, shared: &mut Shared, now: Instant) {
        match self.state {
            State::Established => {
                self.tasks.push_back(Task::DeleteIke);
                self.kick(shared, now);
            }
            State::Deleting | State::Closed { .. } => {}
            _ => self.close(shared, now, DownReason::DeletedLocally),
        }
    }

    pub(crate) fn queue_child_rekey(&mut self, inbound_spi: u32) {
        if !self.tasks.contains(&Task::RekeyChild(inbound_spi)) {
            self.tasks.push_back(Task::RekeyChild(inbound_spi));
        }
    }

    pub(crate) fn queue_child_delete(&mut self, inbound_spi: u32) {
        if !self.tasks.contains(&Task::DeleteChild(inbound_spi)) {
            self.tasks.push_back(Task::DeleteChild(inbound_spi));
        }
    }

    pub(crate) fn queue_ike_rekey(&mut self) {
        if !self.tasks.contains(&Task::RekeyIke) {
            self.tasks.push_back(Task::RekeyIke);
        }
    }

    /// Starts the next queued request if the window is free.
    pub(crate) fn kick(&mut self, shared: &mut Shared, now: Instant) {
        while self.outstanding.is_none() && self.state == State::Established {
            let Some(task) = self.tasks.pop_front() else {
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
                    self.state = State::Deleting;
                }
                Task::DeleteChild(inbound_spi) => {
                    if !self
                        .children
                        .iter()
                        .any(|c| c.sa.inbound_spi == inbound_spi)
                    {
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
            }
        }
    }

    fn start_child_rekey(&mut self, shared: &mut Shared, now: Instant, old_inbound_spi: u32) {
        let Some(old) = self
            .children
            .iter()
            .find(|c| c.sa.inbound_spi == old_inbound_spi && !c.superseded)
            .map(|c| c.sa.clone())
        else {
            return;
        };
        let config = shared.config.clone();
        let new_inbound_spi = random_spi32(shared);
        let ni = random_bytes(shared, NONCE_LEN);
        let pfs_group = if config.rekey_pfs {
            config.esp_policy.pfs.first().copied()
        } else {
            None
        };
        let ke = pfs_group.map(|g| KeyExchangeSecret::generate(g, &mut *shared.rng));
        let mut rekey_sa = Notify::new(NotifyType::REKEY_SA, Vec::new());
        rekey_sa.protocol = ProtocolId::ESP;
        rekey_sa.spi = old_inbound_spi.to_be_bytes().to_vec();
        let mut inner: Vec<Payload> = vec![
            PayloadBody::Notify(rekey_sa).into(),
            PayloadBody::Sa(SecurityAssociation {
                proposals: config
                    .esp_policy
                    .proposals(new_inbound_spi.to_be_bytes(), ke.is_some()),
            })
            .into(),
            PayloadBody::Nonce(ni.clone()).into(),
        ];
        if let Some(secret) = &ke {
            inner.push(
                PayloadBody::Ke(KeyExchange {
                    group: secret.group().id(),
                    data: secret.public_value(),
                })
                .into(),
            );
        }
        inner.push(
            PayloadBody::TsI(TrafficSelectors {
                selectors: old.local_ts.clone(),
            })
            .into(),
        );
        inner.push(
            PayloadBody::TsR(TrafficSelectors {
                selectors: old.remote_ts.clone(),
            })
            .into(),
        );
        let rekey = ChildRekey {
            old_inbound_spi,
            new_inbound_spi,
            ni,
            ke,
        };
        self.send_request(
            shared,
            now,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Request::RekeyChild(Box::new(rekey)),
        );
    }

    fn start_ike_rekey(&mut self, shared: &mut Shared, now: Instant) {
        let Some(gen) = &self.gen else { return };
        let config = shared.config.clone();
        let group = gen.suite.ke;
        let new_spi = shared.random_u64();
        let ni = random_bytes(shared, NONCE_LEN);
        let ke = KeyExchangeSecret::generate(group, &mut *shared.rng);
        // Offer the current suite first, so the rekey keeps it.
        let mut proposals = config.ike_policy.proposals();
        for p in &mut proposals {
            p.spi = new_spi.to_be_bytes().to_vec();
            p.transforms
                .retain(|t| t.ty != TransformType::KE || t.id == group.id());
        }
        let inner: Vec<Payload> = vec![
            PayloadBody::Sa(SecurityAssociation { proposals }).into(),
            PayloadBody::Nonce(ni.clone()).into(),
            PayloadBody::Ke(KeyExchange {
                group: group.id(),
                data: ke.public_value(),
            })
            .into(),
        ];
        let rekey = IkeRekey { new_spi, ni, ke };
        self.send_request(
            shared,
            now,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Request::RekeyIke(Box::new(rekey)),
        );
    }

    // ----- timers --------------------------------------------------------

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        if let State::Closed { until } = self.state {
            return Some(until);
        }
        let mut t: Vec<Instant> = Vec::new();
        t.extend(self.outstanding.as_ref().map(|o| o.next_at));
        t.extend(self.half_open_deadline);
        t.extend(self.pending_auth.as_ref().map(|p| p.deadline));
        t.extend(self.retired.as_ref().map(|(_, until)| *until));
        if self.state == State::Established {
            if self.outstanding.is_none() {
                t.push(self.last_heard + self.dpd_interval);
            }
            t.extend(self.ike_rekey_at);
            t.extend(
                self.children
                    .iter()
                    .filter(|c| !c.superseded)
                    .map(|c| c.rekey_at),
            );
        }
        t.into_iter().min()
    }

    pub(crate) fn handle_timeout(&mut self, shared: &mut Shared, now: Instant) -> Effects {
        let mut effects = Effects::default();
        if matches!(self.state, State::Closed { .. }) {
            return effects;
        }
        if self
            .retired
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            self.drop_retired();
        }
        if self
            .pending_auth
            .as_ref()
            .is_some_and(|p| p.deadline <= now)
        {
            // The store never answered: refuse the Child SA, keep the IKE SA.
            self.address_assigned(shared, now, None);
        }
        if self.half_open_deadline.is_some_and(|d| d <= now) {
            self.half_open_deadline = None;
            effects.left_half_open = true;
            self.close(shared, now, DownReason::HalfOpenTimeout);
            return effects;
        }
        if let Some(o) = &mut self.outstanding {
            if o.next_at <= now {
                if o.tries >= shared.config.retransmit_tries {
                    self.close(shared, now, DownReason::PeerDead);
                    return effects;
                }
                o.tries += 1;
                o.next_at = now + shared.config.retransmit_timeout * 2u32.saturating_pow(o.tries);
                shared.stats.retransmits_sent += 1;
                let datagrams = o.datagrams.clone();
                self.send(shared, &datagrams);
            }
        }
        if self.state == State::Established {
            if self.outstanding.is_none()
                && self.last_heard + self.dpd_interval <= now
                && !self.tasks.contains(&Task::Dpd)
            {
                self.tasks.push_back(Task::Dpd);
            }
            if self.ike_rekey_at.is_some_and(|t| t <= now) {
                self.ike_rekey_at = None;
                self.queue_ike_rekey();
            }
            let due: Vec<u32> = self
                .children
                .iter_mut()
                .filter(|c| !c.superseded && c.rekey_at <= now)
                .map(|c| {
                    // Not again until this rekey had its chance.
                    c.rekey_at = now + Duration::from_secs(3600 * 24 * 365);
                    c.sa.inbound_spi
                })
                .collect();
            for spi in due {
                self.queue_child_rekey(spi);
            }
            self.kick(shared, now);
        }
        effects
    }
}
