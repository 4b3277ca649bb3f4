//! The IKEv2 engine: one [`Endpoint`] holds every IKE SA of a daemon, as
//! responder and as initiator, and is driven entirely from outside.
//!
//! # Driving an endpoint
//!
//! The embedder owns the sockets and the clock; the endpoint owns the
//! protocol. Feed it:
//!
//! - [`Endpoint::handle`] with every IKE datagram received (on port 4500,
//!   after removing the non-ESP marker; ESP packets go to the data plane),
//! - [`Endpoint::handle_timeout`] when the instant of
//!   [`Endpoint::poll_timeout`] has passed,
//! - commands such as [`Endpoint::connect`], [`Endpoint::delete_ike_sa`] or
//!   [`Endpoint::rekey_child_sa`],
//!
//! and after each call drain, in this order:
//!
//! 1. [`Endpoint::poll_event`] until `None`: SAs that came up, were rekeyed
//!    or went down, with the keys the data plane installs. Act on them
//!    first: a response that announces a Child SA is among the transmits,
//!    and the inbound SA must be in place before the peer can use it.
//! 2. [`Endpoint::poll_transmit`] until `None`: datagrams to send, with the
//!    non-ESP marker already in place when they go to port 4500,
//! 3. [`Endpoint::poll_timeout`]: when to call `handle_timeout` next.
//!
//! Nothing here blocks, reads a clock or touches the network, so tests run
//! two endpoints against each other in memory with a virtual clock and a
//! seeded random generator, and every run is the same.
//!
//! # Routing before decrypting
//!
//! A datagram is matched to its IKE SA by the SPI in its header before any
//! cryptography runs; datagrams for no SA, with a message ID outside the
//! window, or failing their integrity check are dropped and counted in
//! [`Stats`], never fatal to the SA they claim to belong to.

mod cookie;
mod ike_sa;
mod nat;
pub mod ts;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;

use crate::auth::PrivateKey;
use crate::cert::{Revocations, TrustAnchors};
use crate::crypto::{Encryption, EspKeys, IkeSaKeys, Integrity, Suite};
use crate::error::InvalidMessage;
use crate::identity::CanonicalIdentity;
use crate::proposal::{EspPolicy, IkePolicy};
use crate::wire::{ExchangeType, Header, Identification, NotifyType, TrafficSelector};

use cookie::{CookieJar, HalfOpen};
use ike_sa::IkeSa;

/// How an endpoint behaves; shared by all its IKE SAs.
#[derive(Clone)]
pub struct Config {
    /// Our IKE identity (IDi or IDr).
    pub identity: Identification,
    /// Our certificate chain, DER, leaf first.
    pub certificates: Vec<Vec<u8>>,
    /// The key of the leaf certificate.
    pub private_key: Arc<PrivateKey>,
    /// CAs the peer's certificate must chain to.
    pub trust_anchors: TrustAnchors,
    /// Acceptable IKE SA algorithms.
    pub ike_policy: IkePolicy,
    /// Acceptable Child SA algorithms.
    pub esp_policy: EspPolicy,
    /// IKE messages whose IP packet would exceed this many octets are sent
    /// as RFC 7383 fragments, when the peer supports them.
    pub fragment_size: usize,
    /// Make the peer believe we are behind a NAT (a deliberately wrong
    /// NAT_DETECTION_SOURCE_IP), so that ESP travels in UDP. The userspace
    /// data plane needs this.
    pub force_udp_encapsulation: bool,
    /// The port for IKE and ESP in UDP after a NAT was detected.
    pub nat_t_port: u16,
    /// Announce MOBIKE (RFC 4555): as initiator, move IKE to the NAT-T
    /// port after IKE_SA_INIT and follow our own address changes with
    /// UPDATE_SA_ADDRESSES ([`Endpoint::roam`]); as responder, follow the
    /// peer's.
    pub mobike: bool,
    /// Send an empty INFORMATIONAL when the peer was silent this long.
    pub dpd_interval: Duration,
    /// First retransmission timeout; it doubles with each try.
    pub retransmit_timeout: Duration,
    /// How many times a request is retransmitted before the peer is
    /// declared dead.
    pub retransmit_tries: u32,
    /// Lifetime of an IKE SA before it is rekeyed.
    pub ike_lifetime: Duration,
    /// Lifetime of a Child SA before it is rekeyed.
    pub child_lifetime: Duration,
    /// Rekeying happens up to this much before the lifetime ends, at a
    /// random point, so two peers with the same lifetime rarely collide.
    pub rekey_jitter: Duration,
    /// Use PFS (a fresh key exchange) when rekeying Child SAs.
    pub rekey_pfs: bool,
    /// Half-open SAs (after IKE_SA_INIT, before IKE_AUTH) beyond which
    /// cookies are demanded from everyone.
    pub cookie_threshold: usize,
    /// Half-open SAs from one address beyond which that address must
    /// present cookies.
    pub half_open_per_source: usize,
    /// Hard limit of half-open SAs; beyond it new ones are dropped.
    pub max_half_open: usize,
    /// How long a half-open SA may wait for its IKE_AUTH.
    pub half_open_timeout: Duration,
    /// Half-open SAs one address may hold even with valid cookies, so
    /// that one source cannot take the whole table; large enough for a
    /// CGNAT with many clients behind one address.
    pub half_open_share: usize,
    /// Live IKE SAs one identity may hold (a reconnect may overlap the
    /// old SA); a further one is refused with AUTHENTICATION_FAILED.
    pub ike_sas_per_identity: usize,
    /// What a second connection of a connected identity does.
    pub unique: Unique,
    /// With a request in flight and nothing heard from the peer for this
    /// long, the IKE SA is dead, whatever retransmissions remain.
    pub dead_after: Option<Duration>,
    /// Child SAs one IKE SA may hold, rekeyed ones not yet deleted
    /// included; a rekey beyond it is refused with NO_ADDITIONAL_SAS.
    pub child_sas_per_ike_sa: usize,
    /// Traffic selectors per side of a Child SA; more are refused with
    /// TS_UNACCEPTABLE (each one becomes kernel policies).
    pub traffic_selectors_per_child_sa: usize,
    /// A Child SA the peer replaced by a rekey is deleted by us this long
    /// after, if the peer has not deleted it.
    pub rekey_grace: Duration,
    /// The traffic our side of a Child SA covers as a responder.
    pub responder_local_ts: Vec<TrafficSelector>,
    /// Internal DNS servers to hand to clients that ask for them.
    pub dns: Vec<IpAddr>,
    /// Where SKEYSEED and the keys of every IKE SA generation go as they
    /// are derived (interoperability tests compare them with a peer's
    /// log); `None`, as it should be in production, keeps them inside.
    pub key_log: Option<Arc<dyn KeyLog>>,
}

/// Receives the secrets of each IKE SA generation as it is derived: for
/// comparing with a peer's key log, never for production.
pub trait KeyLog: Send + Sync {
    /// The keys of IKE SA `sa` with SPIs `spi_i`/`spi_r` (a new generation
    /// after each IKE SA rekey).
    fn log(&self, sa: SaId, spi_i: u64, spi_r: u64, skeyseed: &[u8], keys: &IkeSaKeys);
}

impl Config {
    /// A configuration with the defaults for everything but who we are.
    pub fn new(
        identity: Identification,
        certificates: Vec<Vec<u8>>,
        private_key: Arc<PrivateKey>,
        trust_anchors: TrustAnchors,
    ) -> Config {
        Config {
            identity,
            certificates,
            private_key,
            trust_anchors,
            ike_policy: IkePolicy::default(),
            esp_policy: EspPolicy::default(),
            fragment_size: 1280,
            force_udp_encapsulation: false,
            nat_t_port: 4500,
            mobike: true,
            dpd_interval: Duration::from_secs(30),
            retransmit_timeout: Duration::from_secs(2),
            retransmit_tries: 5,
            ike_lifetime: Duration::from_secs(4 * 3600),
            child_lifetime: Duration::from_secs(3600),
            rekey_jitter: Duration::from_secs(300),
            rekey_pfs: false,
            cookie_threshold: 64,
            half_open_per_source: 8,
            max_half_open: 4096,
            half_open_timeout: Duration::from_secs(30),
            half_open_share: 1024,
            ike_sas_per_identity: 2,
            unique: Unique::Replace,
            dead_after: None,
            child_sas_per_ike_sa: 2,
            traffic_selectors_per_child_sa: 16,
            rekey_grace: Duration::from_secs(30),
            responder_local_ts: vec![ts::ipv6_any()],
            dns: Vec::new(),
            key_log: None,
        }
    }
}

/// What an initiator asks for when it connects.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The peer's address (port 500, or the NAT-T port).
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// The identity the responder must prove, if we insist on one.
    pub remote_identity: Option<CanonicalIdentity>,
    /// Ask for a virtual IPv6 address (and DNS servers) in a CP payload.
    pub request_address: bool,
    /// Send INITIAL_CONTACT so the responder drops our old SAs.
    pub initial_contact: bool,
    /// Our side of the Child SA (with a virtual address: "any", narrowed
    /// by the responder).
    pub local_ts: Vec<TrafficSelector>,
    /// The other side of the Child SA.
    pub remote_ts: Vec<TrafficSelector>,
}

/// Identifies an IKE SA for the life of the connection, across IKE SA
/// rekeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaId(pub u64);

/// An IKE SA's timers, as [`Endpoint::timers`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaTimers {
    /// When the peer was last heard from (a liveness check goes out after
    /// `dpd_interval` of silence).
    pub last_heard: Instant,
    /// When the IKE SA rekeys (none while a rekey is under way).
    pub ike_rekey_at: Option<Instant>,
    /// When each current Child SA rekeys, by inbound SPI.
    pub child_rekey_at: Vec<(u32, Instant)>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub remote: SocketAddr,
    /// From which of our addresses (and so which socket).
    pub local: SocketAddr,
    /// The UDP payload, non-ESP marker included on the NAT-T port.
    pub payload: Vec<u8>,
}

/// An established Child SA, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// The IKE SA it belongs to.
    pub ike_sa: SaId,
    /// The SPI the peer sends with (we receive with).
    pub inbound_spi: u32,
    /// The SPI we send with.
    pub outbound_spi: u32,
    /// Keys for traffic we receive.
    pub inbound: EspKeys,
    /// Keys for traffic we send.
    pub outbound: EspKeys,
    /// The encryption algorithm.
    pub encr: Encryption,
    /// The integrity algorithm, if not an AEAD.
    pub integ: Option<Integrity>,
    /// Whether 64-bit extended sequence numbers are in use.
    pub esn: bool,
    /// Our side's traffic selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Our outer address.
    pub local: SocketAddr,
    /// The peer's outer address.
    pub remote: SocketAddr,
    /// Whether ESP is carried in UDP (RFC 3948) between those addresses.
    pub udp_encapsulation: bool,
}

/// Why an IKE SA (or an attempt at one) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer deleted it.
    DeletedByPeer,
    /// We deleted it (a command, or a failure after establishment).
    DeletedLocally,
    /// The peer stopped answering (retransmissions or DPD exhausted).
    PeerDead,
    /// The same identity connected again with INITIAL_CONTACT.
    Replaced,
    /// A half-open SA never completed.
    HalfOpenTimeout,
    /// The peer refused us with this error notify.
    RefusedByPeer(NotifyType),
    /// We refused the peer, and sent it this notify.
    RefusedPeer(NotifyType, String),
    /// The peer's identity or certificate was revoked while it was up.
    Revoked,
    /// Moving the SA to our new address failed (MOBIKE).
    MoveFailed(String),
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::DeletedByPeer => f.write_str("deleted by the peer"),
            DownReason::DeletedLocally => f.write_str("deleted here"),
            DownReason::PeerDead => f.write_str("the peer stopped answering"),
            DownReason::Replaced => {
                f.write_str("replaced by a new connection of the same identity")
            }
            DownReason::HalfOpenTimeout => f.write_str("the handshake was not completed"),
            DownReason::RefusedByPeer(n) => write!(f, "refused by the peer: {}", n.describe()),
            DownReason::RefusedPeer(n, why) => write!(f, "refused: {why} ({})", n.describe()),
            DownReason::Revoked => f.write_str("its certificate or identity was revoked"),
            DownReason::MoveFailed(why) => write!(f, "moving to a new address failed: {why}"),
        }
    }
}

/// Something the embedder must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An IKE SA was authenticated.
    IkeSaUp {
        /// Which.
        sa: SaId,
        /// The identity the peer proved, in canonical form.
        peer_identity: CanonicalIdentity,
        /// The negotiated algorithms.
        suite: Suite,
        /// The peer's address.
        remote: SocketAddr,
        /// Whether we initiated it.
        initiator: bool,
    },
    /// The IKE SA was rekeyed; its [`SaId`] stays.
    IkeSaRekeyed {
        /// Which.
        sa: SaId,
    },
    /// The IKE SA and all its Child SAs are gone.
    IkeSaDown {
        /// Which.
        sa: SaId,
        /// The peer's address.
        remote: SocketAddr,
        /// The peer's identity: the one it proved, or, for an attempt
        /// refused before that, the one it claimed (if it got that far).
        peer: Option<String>,
        /// Why.
        reason: DownReason,
    },
    /// An IKE_SA_INIT request was refused without state (no proposal we
    /// accept, a malformed request). Rate-limited: under a flood only the
    /// first few of each second are told; `Stats::inits_refused` counts all.
    InitRefused {
        /// The peer's address.
        remote: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// A Child SA is ready: install it.
    ChildSaUp(ChildSa),
    /// The IKE SA now runs between other addresses (a NAT's new mapping,
    /// the float to the NAT-T port, a MOBIKE update); its Child SAs, given
    /// here as they now are, must follow: update their outer addresses and
    /// UDP encapsulation in the data plane.
    PathChanged {
        /// Which IKE SA.
        sa: SaId,
        /// Our address.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// Its Child SAs, with the new addresses.
        children: Vec<ChildSa>,
    },
    /// A Child SA replaced another: install `new`, then remove the SA with
    /// inbound SPI `old_inbound_spi` once traffic has moved.
    ChildSaRekeyed {
        /// The inbound SPI of the replaced SA.
        old_inbound_spi: u32,
        /// The replacement.
        new: ChildSa,
    },
    /// A Child SA is gone: remove it.
    ChildSaDown {
        /// Its IKE SA.
        ike_sa: SaId,
        /// Its inbound SPI.
        inbound_spi: u32,
        /// Its outbound SPI.
        outbound_spi: u32,
    },
    /// The Child SA of IKE_AUTH was not created: we refused it, or the
    /// peer did, with this notify (e.g. INTERNAL_ADDRESS_FAILURE when the
    /// pool is full). An initiator deletes the IKE SA afterwards.
    ChildSaRefused {
        /// Which IKE SA.
        sa: SaId,
        /// The notify sent or received.
        notify: NotifyType,
    },
    /// A peer authenticated and asks for an address: the embedder finds
    /// its lease, makes it durable, and answers with
    /// [`Endpoint::address_assigned`]. The IKE_AUTH response waits for
    /// that; nothing else does.
    AddressRequested {
        /// Which IKE SA.
        sa: SaId,
        /// The identity it proved, canonical: the lease's key.
        identity: CanonicalIdentity,
    },
    /// An IKE SA that held an address is gone. Another SA of the same
    /// identity may still hold it (a reconnect overlapping the old SA), so
    /// the embedder counts holders before releasing the lease.
    AddressReleased {
        /// Which IKE SA.
        sa: SaId,
        /// The lease's identity.
        identity: CanonicalIdentity,
        /// The address.
        address: Ipv6Addr,
    },
    /// The responder assigned us (the initiator) an address.
    AddressAssigned {
        /// Which IKE SA.
        sa: SaId,
        /// The address and its prefix length.
        address: (Ipv6Addr, u8),
        /// DNS servers it gave us.
        dns: Vec<IpAddr>,
    },
}

/// Counters of what was dropped and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Datagrams that did not parse.
    pub invalid: u64,
    /// Datagrams for no IKE SA we have.
    pub unknown_spi: u64,
    /// Requests or responses with a message ID outside the window.
    pub stray: u64,
    /// Datagrams whose integrity check failed.
    pub integrity_failed: u64,
    /// Retransmitted requests answered from the response cache.
    pub retransmits_answered: u64,
    /// Retransmitted requests not answered again so soon (a replay).
    pub retransmits_rate_limited: u64,
    /// IKE_SA_INITs under load answered with INVALID_KE_PAYLOAD for a
    /// cheaper group than the one they sent.
    pub cheaper_group_asked: u64,
    /// Requests we retransmitted.
    pub retransmits_sent: u64,
    /// Cookies demanded.
    pub cookies_sent: u64,
    /// IKE_SA_INIT requests refused with a notify (no proposal we accept,
    /// a wrong group, a malformed request), statelessly.
    pub inits_refused: u64,
    /// IKE_SA_INIT requests dropped because of the half-open hard limit.
    pub half_open_dropped: u64,
    /// IKE_AUTH retransmissions dropped while their address was written.
    pub retransmits_while_admitting: u64,
    /// IKE SAs moved to other addresses (NAT rebinding, MOBIKE).
    pub moves: u64,
    /// Authenticated messages or ESP packets from an address an IKE SA
    /// does not follow (the peer is behind no NAT, and did not update its
    /// addresses with MOBIKE).
    pub moves_refused: u64,
}

/// What a new IKE SA of an identity that is connected already does to the
/// ones it has (strongSwan's `unique`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Unique {
    /// The old ones get a Delete (with [`NotifyType::SIXGATE_REPLACED`]):
    /// one device per identity, the newest.
    #[default]
    Replace,
    /// The newcomer is refused with AUTHENTICATION_FAILED, unless it sends
    /// INITIAL_CONTACT from the address the identity's SA came from (the
    /// same device, restarted), which replaces that SA.
    Keep,
    /// Both stay, up to `ike_sas_per_identity`; INITIAL_CONTACT replaces
    /// only the SAs from its own address (a device on another address
    /// says INITIAL_CONTACT of its own first SA, not of the other's).
    Never,
}

/// How many [`Event::InitRefused`] are told per second.
const REFUSALS_TOLD_PER_SECOND: u32 = 10;

/// How many requests for IKE SAs we do not have are answered per second.
const UNKNOWN_SA_ANSWERS_PER_SECOND: u32 = 10;

/// A budget of so many of something per second (told refusals, answers to
/// unknown SAs): under a flood only the first few of each second pass.
#[derive(Debug, Default)]
pub(crate) struct PerSecond {
    since: Option<Instant>,
    used: u32,
}

impl PerSecond {
    /// Whether one more may pass now, `limit` per second; counts it if so.
    fn take(&mut self, now: Instant, limit: u32) -> bool {
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.since = Some(now);
            self.used = 0;
        }
        let allowed = self.used < limit;
        if allowed {
            self.used += 1;
        }
        allowed
    }
}

impl Shared {
    /// Whether a request for an unknown IKE SA may be answered with
    /// INVALID_IKE_SPI now (a few per second: a flood of garbage SPIs
    /// must not make us a reflector).
    pub(crate) fn may_tell_unknown_sa(&mut self, now: Instant) -> bool {
        self.unknown_sa_told
            .take(now, UNKNOWN_SA_ANSWERS_PER_SECOND)
    }

    /// Tells the embedder of a stateless refusal, unless this second has
    /// had its share.
    pub(crate) fn tell_refusal(&mut self, now: Instant, remote: SocketAddr, reason: String) {
        if self.refusals_told.take(now, REFUSALS_TOLD_PER_SECOND) {
            self.events.push_back(Event::InitRefused { remote, reason });
        }
    }
}

/// What every IKE SA may use while it handles a datagram or a timer.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) rng: Box<dyn CryptoRngCore + Send>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: Stats,
    /// (Instant, Unix seconds) at creation: certificates are checked
    /// against wall-clock time derived from the embedder's instants.
    pub(crate) epoch: (Instant, i64),
    /// The inbound SPIs of every installed Child SA, of all IKE SAs: new
    /// ones must differ, as the data planes (and the kernel, per
    /// destination) find inbound SAs by SPI alone.
    pub(crate) inbound_spis: HashSet<u32>,
    /// The budget of [`Event::InitRefused`] told per second.
    pub(crate) refusals_told: PerSecond,
    /// The same for INVALID_IKE_SPI answers to requests for unknown SAs.
    pub(crate) unknown_sa_told: PerSecond,
    /// What is revoked beyond the certificates' own dates.
    pub(crate) revocations: Revocations,
    /// The live (not closed) IKE SAs of each authenticated identity, with
    /// the peer address each authenticated from.
    pub(crate) by_identity: HashMap<CanonicalIdentity, BTreeMap<SaId, SocketAddr>>,
}

impl Shared {
    /// Queues an event, keeping [`Shared::inbound_spis`] in step with the
    /// Child SAs it announces.
    pub(crate) fn push_event(&mut self, event: Event) {
        match &event {
            Event::ChildSaUp(c) | Event::ChildSaRekeyed { new: c, .. } => {
                self.inbound_spis.insert(c.inbound_spi);
            }
            Event::ChildSaDown { inbound_spi, .. } => {
                self.inbound_spis.remove(inbound_spi);
            }
            _ => {}
        }
        self.events.push_back(event);
    }

    pub(crate) fn unix_time(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.epoch.0).as_secs();
        self.epoch
            .1
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    pub(crate) fn random_u64(&mut self) -> u64 {
        loop {
            let v = self.rng.next_u64();
            if v != 0 {
                return v;
            }
        }
    }
}

/// All IKE SAs of one daemon.
pub struct Endpoint {
    shared: Shared,
    sas: HashMap<SaId, IkeSa>,
    /// Our SPI of each IKE SA (SPIr as responder, SPIi as initiator).
    by_spi: HashMap<u64, SaId>,
    /// Half-open responder SAs by (initiator address, SPIi), to answer a
    /// retransmitted IKE_SA_INIT from the cache.
    by_init: HashMap<(SocketAddr, u64), SaId>,
    /// The identity each live authenticated SA is filed under in
    /// [`Shared::by_identity`].
    identity_of: HashMap<SaId, CanonicalIdentity>,
    cookies: CookieJar,
    half_open: HalfOpen,
    timers: TimerTable,
    next_id: u64,
}

/// When each IKE SA needs its timers run: a heap of deadlines, entries
/// that a later deadline replaced left in place and skipped when they
/// surface (what quinn's endpoint-level timer handling does with lazy
/// deletion). Setting a deadline and finding the next cost O(log n); no
/// operation looks at every SA.
#[derive(Default)]
struct TimerTable {
    heap: BinaryHeap<Reverse<(Instant, SaId)>>,
    deadline: HashMap<SaId, Instant>,
}

impl TimerTable {
    fn set(&mut self, sa: SaId, at: Option<Instant>) {
        match at {
            Some(t) if self.deadline.get(&sa) != Some(&t) => {
                self.deadline.insert(sa, t);
                self.heap.push(Reverse((t, sa)));
            }
            Some(_) => {}
            None => {
                self.deadline.remove(&sa);
            }
        }
    }

    /// The earliest live deadline, dropping stale heap entries on the way.
    fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, sa))) = self.heap.peek() {
            if self.deadline.get(sa) == Some(t) {
                return Some(*t);
            }
            self.heap.pop();
        }
        None
    }

    /// The next SA whose deadline has passed at `now`, taken off the table.
    fn pop_due(&mut self, now: Instant) -> Option<SaId> {
        let t = self.next()?;
        if t > now {
            return None;
        }
        let Reverse((_, sa)) = self.heap.pop()?;
        self.deadline.remove(&sa);
        Some(sa)
    }
}

/// Where one device of an identity is: its address, and behind a NAT its
/// port too (two devices behind one NAT share the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SameDevice {
    pub(crate) ip: IpAddr,
    pub(crate) port: Option<u16>,
}

impl SameDevice {
    pub(crate) fn is_at(self, at: SocketAddr) -> bool {
        at.ip() == self.ip && self.port.is_none_or(|p| p == at.port())
    }
}

/// Actions an IKE SA asks of the endpoint, beyond its own state.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Remove the other SAs of this peer identity (those from this
    /// address only, if one is given).
    pub(crate) replace_identity: Option<(CanonicalIdentity, Option<SameDevice>)>,
    /// The SA left the half-open state (completed or failed).
    pub(crate) left_half_open: bool,
    /// A new generation (IKE SA rekey) has this local SPI: route it here.
    pub(crate) new_local_spi: Option<u64>,
}

impl Endpoint {
    /// An endpoint with no SAs. `now` and `unix_time` tie the embedder's
    /// instants to wall-clock seconds for certificate validity checks.
    pub fn new(
        config: Arc<Config>,
        mut rng: Box<dyn CryptoRngCore + Send>,
        now: Instant,
        unix_time: i64,
    ) -> Endpoint {
        let cookies = CookieJar::new(now, Duration::from_secs(120), &mut *rng);
        Endpoint {
            shared: Shared {
                config,
                rng,
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                stats: Stats::default(),
                epoch: (now, unix_time),
                inbound_spis: HashSet::new(),
                refusals_told: PerSecond::default(),
                unknown_sa_told: PerSecond::default(),
                revocations: Revocations::new(),
                by_identity: HashMap::new(),
            },
            sas: HashMap::new(),
            by_spi: HashMap::new(),
            by_init: HashMap::new(),
            identity_of: HashMap::new(),
            cookies,
            half_open: HalfOpen::default(),
            timers: TimerTable::default(),
            next_id: 1,
        }
    }

    /// Answers an [`Event::AddressRequested`]: the lease for the SA's
    /// identity is durable (or `None`: no address can be given, and the
    /// peer gets INTERNAL_ADDRESS_FAILURE). Returns whether the SA still
    /// waited for it; if not, the caller releases the lease again.
    pub fn address_assigned(&mut self, now: Instant, sa: SaId, address: Option<Ipv6Addr>) -> bool {
        let Some(ike) = self.sas.get_mut(&sa) else {
            return false;
        };
        let held = ike.address_assigned(&mut self.shared, now, address);
        self.after(sa, Effects::default(), now);
        held
    }

    /// The drop counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// How many IKE SAs exist (any state).
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// An IKE SA's timers, for status.
    pub fn timers(&self, sa: SaId) -> Option<SaTimers> {
        self.sas.get(&sa).map(|ike| ike.timers())
    }

    /// How many IKE SAs are half-open (responder side: IKE_SA_INIT
    /// answered, IKE_AUTH not yet).
    pub fn half_open_count(&self) -> usize {
        self.half_open.total()
    }

    /// How many IKE SAs `identity` holds (authenticated ones).
    pub fn ike_sas_of(&self, identity: &CanonicalIdentity) -> usize {
        self.shared
            .by_identity
            .get(identity)
            .map_or(0, BTreeMap::len)
    }

    /// Replaces the configuration (a reload: new trust anchors, own
    /// credentials, proposals, lifetimes). IKE SAs keep what they
    /// negotiated; their next exchanges, and every new SA, go by the new
    /// configuration.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.shared.config = config;
    }

    /// Replaces what is revoked (CRL entries and the operator's list), and
    /// ends at once every authenticated IKE SA whose identity or
    /// certificates it now revokes, with a Delete to the peer that is not
    /// waited for. Returns those SAs.
    pub fn set_revocations(&mut self, now: Instant, revocations: Revocations) -> Vec<SaId> {
        self.shared.revocations = revocations;
        let revoked: Vec<SaId> = self
            .sas
            .iter()
            .filter(|(_, ike)| ike.revoked(&self.shared.revocations))
            .map(|(id, _)| *id)
            .collect();
        for sa in &revoked {
            if let Some(ike) = self.sas.get_mut(sa) {
                ike.revoke(&mut self.shared, now);
                self.after(*sa, Effects::default(), now);
            }
        }
        revoked
    }

    fn allocate(&mut self) -> (SaId, u64) {
        let id = SaId(self.next_id);
        self.next_id += 1;
        let spi = loop {
            let spi = self.shared.random_u64();
            if !self.by_spi.contains_key(&spi) {
                break spi;
            }
        };
        (id, spi)
    }

    /// Starts an IKE SA to a responder, as initiator.
    pub fn connect(&mut self, now: Instant, request: ConnectRequest) -> SaId {
        let (id, spi) = self.allocate();
        let sa = IkeSa::initiate(&mut self.shared, now, id, spi, request);
        self.by_spi.insert(spi, id);
        self.sas.insert(id, sa);
        self.after(id, Effects::default(), now);
        id
    }

    /// Deletes an IKE SA (and its Child SAs), telling the peer.
    pub fn delete_ike_sa(&mut self, now: Instant, sa: SaId) {
        if let Some(ike) = self.sas.get_mut(&sa) {
            ike.start_delete(&mut self.shared, now);
            self.after(sa, Effects::default(), now);
        }
    }

    /// Rekeys a Child SA now (as on a soft lifetime expiry).
    pub fn rekey_child_sa(&mut self, now: Instant, sa: SaId, inbound_spi: u32) {
        if let Some(ike) = self.sas.get_mut(&sa) {
            ike.queue_child_rekey(inbound_spi);
            ike.kick(&mut self.shared, now);
            self.after(sa, Effects::default(), now);
        }
    }

    /// Deletes one Child SA, telling the peer.
    pub fn delete_child_sa(&mut self, now: Instant, sa: SaId, inbound_spi: u32) {
        if let Some(ike) = self.sas.get_mut(&sa) {
            ike.queue_child_delete(inbound_spi);
            ike.kick(&mut self.shared, now);
            self.after(sa, Effects::default(), now);
        }
    }

    /// Rekeys the IKE SA now.
    pub fn rekey_ike_sa(&mut self, now: Instant, sa: SaId) {
        if let Some(ike) = self.sas.get_mut(&sa) {
            ike.queue_ike_rekey();
            ike.kick(&mut self.shared, now);
            self.after(sa, Effects::default(), now);
        }
    }

    /// The data plane opened an authenticated ESP packet of IKE SA `sa`
    /// from `remote`, which is not the peer's address: a NAT'd peer's
    /// mapping changed (RFC 7296 2.23), and the SA follows it, raising
    /// [`Event::PathChanged`]; a peer behind no NAT is not followed.
    pub fn esp_from(&mut self, now: Instant, sa: SaId, remote: SocketAddr) {
        if let Some(ike) = self.sas.get_mut(&sa) {
            ike.esp_from(&mut self.shared, remote);
            self.after(sa, Effects::default(), now);
        }
    }

    /// Our address towards the peer of `sa` is now `local` (the host moved
    /// to another network). Returns whether the SA follows (MOBIKE, or the
    /// peer follows us through a NAT); if not, the embedder builds a new
    /// one.
    pub fn roam(&mut self, now: Instant, sa: SaId, local: IpAddr) -> bool {
        let Some(ike) = self.sas.get_mut(&sa) else {
            return false;
        };
        let follows = ike.roam(&mut self.shared, now, local);
        self.after(sa, Effects::default(), now);
        follows
    }

    /// Processes one received IKE datagram (marker already removed).
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, local: SocketAddr, datagram: &[u8]) {
        let header = match Header::peek(datagram) {
            Ok(h) => h,
            Err(InvalidMessage::UnsupportedMajorVersion(_)) => {
                self.shared.stats.invalid += 1;
                ike_sa::invalid_major_version(&mut self.shared, remote, local, datagram);
                return;
            }
            Err(_) => {
                self.shared.stats.invalid += 1;
                return;
            }
        };
        let is_init_request = header.exchange == ExchangeType::IKE_SA_INIT
            && !header.flags.response()
            && header.flags.initiator();
        if is_init_request && header.spi_r == 0 {
            if let Some(&id) = self.by_init.get(&(remote, header.spi_i)) {
                if let Some(sa) = self.sas.get_mut(&id) {
                    let effects =
                        sa.handle(&mut self.shared, now, remote, local, datagram, &header);
                    self.after(id, effects, now);
                }
                return;
            }
            self.respond_to_init(now, remote, local, datagram, &header);
            return;
        }
        let our_spi = if header.flags.initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let Some(&id) = self.by_spi.get(&our_spi) else {
            self.shared.stats.unknown_spi += 1;
            if !header.flags.response() && self.shared.may_tell_unknown_sa(now) {
                ike_sa::unknown_sa_answer(&mut self.shared, &header, remote, local);
            }
            return;
        };
        let Some(sa) = self.sas.get_mut(&id) else {
            return;
        };
        let effects = sa.handle(&mut self.shared, now, remote, local, datagram, &header);
        self.after(id, effects, now);
    }

    fn respond_to_init(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        datagram: &[u8],
        header: &Header,
    ) {
        self.cookies.maybe_rotate(now, &mut *self.shared.rng);
        if self.half_open.total() >= self.shared.config.max_half_open
            || self.half_open.count_from(remote.ip()) >= self.shared.config.half_open_share
        {
            self.shared.stats.half_open_dropped += 1;
            return;
        }
        let need_cookie = self.half_open.total() >= self.shared.config.cookie_threshold
            || self.half_open.count_from(remote.ip()) >= self.shared.config.half_open_per_source;
        let (id, spi) = self.allocate();
        let cookies = need_cookie.then_some(&self.cookies);
        let init = ike_sa::InitRequest {
            id,
            spi_r: spi,
            remote,
            local,
            datagram,
            header,
        };
        if let Some(sa) = IkeSa::respond(&mut self.shared, now, init, cookies) {
            self.half_open.add(remote.ip());
            self.by_spi.insert(spi, id);
            self.by_init.insert((remote, header.spi_i), id);
            self.sas.insert(id, sa);
            self.after(id, Effects::default(), now);
        }
    }

    /// After anything happened to SA `id`: carry out its effects, file its
    /// identity, reschedule its timers, and remove it if it is finished.
    fn after(&mut self, id: SaId, effects: Effects, now: Instant) {
        if effects.left_half_open {
            self.leave_half_open(id);
        }
        if let Some(new) = effects.new_local_spi {
            // The old SPI keeps routing to the retired generation until
            // its delete; the SA reports when to forget it.
            self.by_spi.insert(new, id);
        }
        let Some(sa) = self.sas.get_mut(&id) else {
            return;
        };
        for spi in sa.take_forgotten_spis() {
            if self.by_spi.get(&spi) == Some(&id) {
                self.by_spi.remove(&spi);
            }
        }
        if sa.is_closed() {
            self.unfile(id);
        } else if !self.identity_of.contains_key(&id) {
            if let Some(identity) = sa.peer_identity().cloned() {
                self.shared
                    .by_identity
                    .entry(identity.clone())
                    .or_default()
                    .insert(id, sa.remote());
                self.identity_of.insert(id, identity);
            }
        }
        if let Some((identity, only_from)) = effects.replace_identity {
            let others: Vec<SaId> = self
                .shared
                .by_identity
                .get(&identity)
                .map(|ids| {
                    ids.iter()
                        .filter(|(o, at)| **o != id && only_from.is_none_or(|d| d.is_at(**at)))
                        .map(|(o, _)| *o)
                        .collect()
                })
                .unwrap_or_default();
            for other in others {
                if let Some(sa) = self.sas.get_mut(&other) {
                    sa.replace(&mut self.shared, now);
                    self.after(other, Effects::default(), now);
                }
            }
        }
        let Some(sa) = self.sas.get(&id) else {
            return;
        };
        if sa.is_finished(now) {
            self.remove(id);
        } else {
            let next = sa.next_timeout(&self.shared);
            self.timers.set(id, next);
        }
    }

    fn leave_half_open(&mut self, id: SaId) {
        if let Some(sa) = self.sas.get(&id) {
            let key = sa.init_key();
            if self.by_init.remove(&key).is_some() {
                self.half_open.remove(key.0.ip());
            }
        }
    }

    /// Takes a closed SA out of its identity's live SAs.
    fn unfile(&mut self, id: SaId) {
        if let Some(identity) = self.identity_of.remove(&id) {
            if let Some(ids) = self.shared.by_identity.get_mut(&identity) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.shared.by_identity.remove(&identity);
                }
            }
        }
    }

    /// Forgets a finished SA and every index entry that leads to it.
    fn remove(&mut self, id: SaId) {
        self.leave_half_open(id);
        self.timers.set(id, None);
        self.unfile(id);
        if let Some(sa) = self.sas.remove(&id) {
            for spi in sa.local_spis() {
                if self.by_spi.get(&spi) == Some(&id) {
                    self.by_spi.remove(&spi);
                }
            }
        }
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.timers.pop_due(now) {
            if let Some(sa) = self.sas.get_mut(&id) {
                let effects = sa.handle_timeout(&mut self.shared, now);
                self.after(id, effects, now);
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.shared.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_table_skips_replaced_deadlines_and_pops_what_is_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = TimerTable::default();
        t.set(SaId(1), Some(t0 + s(10)));
        t.set(SaId(2), Some(t0 + s(5)));
        // SA 2 moves later, SA 1 earlier: the stale heap entries stay
        // behind and are skipped.
        t.set(SaId(2), Some(t0 + s(20)));
        t.set(SaId(1), Some(t0 + s(3)));
        assert_eq!(t.next(), Some(t0 + s(3)));
        assert_eq!(t.pop_due(t0 + s(4)), Some(SaId(1)));
        assert_eq!(t.pop_due(t0 + s(4)), None, "SA 2's old 5 s entry is stale");
        assert_eq!(t.next(), Some(t0 + s(20)));
        t.set(SaId(2), None);
        assert_eq!(t.next(), None);
        assert_eq!(t.pop_due(t0 + s(100)), None);
    }
}
