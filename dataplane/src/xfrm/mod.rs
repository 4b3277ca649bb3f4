//! The kernel data plane: Child SAs become XFRM states and policies, and
//! the kernel does the ESP.
//!
//! Each Child SA is two states (inbound and outbound) tied by a reqid to
//! out/in/fwd policies for its traffic selectors. Policies are shared by
//! successive SAs of the same selectors (a rekey adds the new pair under
//! the same reqid, and the kernel sends with the newest), and are counted
//! so they go when the last SA using them goes.
//!
//! What sixgate installs is recognisable: every reqid carries its
//! [`Owner`]'s tag in its top 12 bits, and in route-based mode everything
//! also carries the owner's if_id. The broker and the client tag apart, so
//! both can run in one network namespace. At start-up [`Xfrm::open`] removes such
//! leftovers (of a daemon that was killed) and nothing else.
//!
//! Kernel events come from a thread listening to the XFRM multicast
//! groups: soft expires (time to rekey), hard expires (the SA is gone),
//! acquires (traffic hit a policy with no SA) and NAT-T mappings (ESP in
//! UDP arrived from a new address or port).

pub mod msg;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use netlink_packet_xfrm::{
    XfrmAttrs, XfrmMessage, XFRMNLGRP_ACQUIRE, XFRMNLGRP_EXPIRE, XFRMNLGRP_MAPPING,
};
use netlink_sys::protocols::NETLINK_XFRM;
use sixgate_proto::crypto::EspKeys;
use sixgate_proto::endpoint::{ChildSa, SaId};
use sixgate_proto::wire::TrafficSelector;
use tokio::sync::mpsc;

use crate::esp::Counters;
use crate::netlink::NetlinkSocket;
use crate::selectors::Selectors;
use crate::userspace::SaCounters;
use msg::{Direction, Limits, PolicySpec, Prefix, SaSpec};

const REQID_MASK: u32 = 0xfff0_0000;

/// Which daemon's kernel state this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// sixgate-broker.
    Broker,
    /// sixgate-client.
    Client,
}

impl Owner {
    /// The top 12 bits of every reqid this owner uses.
    pub fn reqid_tag(self) -> u32 {
        match self {
            Owner::Broker => 0x5a60_0000,
            Owner::Client => 0x5a70_0000,
        }
    }

    /// The if_id of this owner's XFRM interface.
    pub fn if_id(self) -> u32 {
        match self {
            Owner::Broker => 0x5a6,
            Owner::Client => 0x5a7,
        }
    }

    /// The `proto` of this owner's routes (`ip route show proto 90`).
    pub fn route_protocol(self) -> u8 {
        match self {
            Owner::Broker => 90,
            Owner::Client => 91,
        }
    }

    fn owns_reqid(self, reqid: u32) -> bool {
        reqid & REQID_MASK == self.reqid_tag()
    }
}

/// Policies of more specific selectors are tried first: the priority
/// drops with the total prefix length.
const PRIORITY_BASE: u32 = 200_000;

/// How the kernel backend is set up.
#[derive(Debug, Clone)]
pub struct XfrmConfig {
    /// Whose state this is.
    pub owner: Owner,
    /// Route-based mode: the if_id of the XFRM interface that states and
    /// policies belong to. `None`: plain policy-based XFRM.
    pub if_id: Option<u32>,
    /// Limits put on every SA.
    pub limits: Limits,
    /// Inbound anti-replay window, in packets.
    pub replay_window: u32,
}

/// What the kernel reports about the SAs. SPIs are either direction's;
/// [`Xfrm::child_of`] finds the Child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEvent {
    /// An SA crossed a soft limit (`hard: false`: time to rekey) or a
    /// hard one (the kernel removed it).
    Expire {
        /// The SA's destination.
        dst: IpAddr,
        /// The SA's SPI.
        spi: u32,
        /// Its reqid (whose tag says which daemon installed it).
        reqid: u32,
        /// Whether the SA is gone.
        hard: bool,
    },
    /// Traffic matched an outbound policy whose SAs are gone (lost, or
    /// dropped at a hard limit): the kernel wants SAs to `remote`.
    Acquire {
        /// The policy template's reqid: which Child SAs may carry it.
        reqid: u32,
        /// The packet's inner destination.
        dst: IpAddr,
    },
    /// ESP in UDP for an inbound SA came from a new address or port (the
    /// peer's NAT has a new mapping).
    Mapping {
        /// The SA's destination (our address).
        dst: IpAddr,
        /// The SA's SPI.
        spi: u32,
        /// Its reqid.
        reqid: u32,
        /// Where the packet came from.
        new: SocketAddr,
    },
}

/// How far ahead of the old state's counter a moved outbound state
/// starts: more than a line-rate sender puts out between the read and the
/// delete (microseconds), and a jump the peer's replay window takes.
pub const OUTBOUND_SEQUENCE_MARGIN: u32 = 1 << 16;

struct Installed {
    ike_sa: SaId,
    reqid: u32,
    local: IpAddr,
    remote: IpAddr,
    /// The peer's NAT-T address, if ESP goes in UDP.
    encapsulated: Option<SocketAddr>,
    outbound_spi: u32,
    policies: Vec<PolicyKey>,
    /// Install order, to find the newest Child SA of a reqid.
    installed: u64,
}

type PolicyKey = (Prefix, Prefix, Direction);

struct PolicyUse {
    spec: PolicySpec,
    users: usize,
}

struct State {
    socket: NetlinkSocket,
    sas: HashMap<u32, Installed>,
    policies: HashMap<PolicyKey, PolicyUse>,
    next_reqid: u32,
    /// Child SAs installed so far.
    installs: u64,
}

/// A running kernel data plane.
pub struct Xfrm {
    config: XfrmConfig,
    state: Mutex<State>,
}

/// Why the kernel cannot run this backend, worded for the operator.
fn unsupported(e: io::Error) -> io::Error {
    let hint = "set `[dataplane] backend = \"userspace\"` to run without kernel IPsec";
    let why = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "the kernel refused XFRM changes: sixgate needs CAP_NET_ADMIN".to_string()
        }
        Some(libc::ENOENT) | Some(libc::EPROTONOSUPPORT) | Some(libc::ENOSYS) => {
            "the kernel has no ESP support (is the esp4 module available?)".to_string()
        }
        _ => format!("the kernel refused a test SA: {e}"),
    };
    io::Error::new(e.kind(), format!("kernel XFRM backend: {why}; {hint}"))
}

impl Xfrm {
    /// Starts the backend and its event thread, whose events arrive on the
    /// returned channel. Call [`check_kernel`] and [`remove_leftovers`]
    /// first.
    pub fn open(config: XfrmConfig) -> io::Result<(Xfrm, mpsc::UnboundedReceiver<KernelEvent>)> {
        let socket = NetlinkSocket::open(NETLINK_XFRM)?;
        let first_reqid = config.owner.reqid_tag() | 1;
        let xfrm = Xfrm {
            config,
            state: Mutex::new(State {
                socket,
                sas: HashMap::new(),
                policies: HashMap::new(),
                next_reqid: first_reqid,
                installs: 0,
            }),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let events = NetlinkSocket::listen(
            NETLINK_XFRM,
            &[XFRMNLGRP_EXPIRE, XFRMNLGRP_ACQUIRE, XFRMNLGRP_MAPPING],
        )?;
        std::thread::Builder::new()
            .name("xfrm-events".into())
            .spawn(move || event_thread(events, tx))?;
        Ok((xfrm, rx))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs both SAs of a Child SA and the policies for its selectors.
    pub fn install(&self, child: &ChildSa) -> io::Result<()> {
        // Policies here carry addresses only; one for all traffic where
        // the peers agreed on less would be wider than negotiated. The
        // in and fwd policies are what makes the kernel drop decrypted
        // packets from outside the peer's selectors (XfrmInNoPols).
        Selectors::of(child)?;
        let local = child.local.ip();
        let remote = child.remote.ip();
        let keys = policy_keys(child);
        let mut st = self.lock();
        // A rekey or a reconnect of the same selectors keeps their reqid.
        let reqid = match keys.first().and_then(|k| st.policies.get(k)) {
            Some(u) if u.spec.tmpl_dst == remote || u.spec.tmpl_src == remote => u.spec.reqid,
            _ => {
                let r = st.next_reqid;
                st.next_reqid = self.config.owner.reqid_tag() | ((r + 1) & !REQID_MASK).max(1);
                r
            }
        };
        let (inbound, outbound) = self.sa_specs(child, reqid);
        st.socket.request(msg::new_sa(&inbound), 0)?;
        if let Err(e) = st.socket.request(msg::new_sa(&outbound), 0) {
            let _ = st
                .socket
                .request(msg::delete_sa(remote, local, child.inbound_spi), 0);
            return Err(e);
        }
        st.installs += 1;
        let installed = st.installs;
        // Recorded before the policies, so a failure part-way is undone
        // by `remove` like any other SA.
        st.sas.insert(
            child.inbound_spi,
            Installed {
                ike_sa: child.ike_sa,
                reqid,
                local,
                remote,
                encapsulated: child.udp_encapsulation.then_some(child.remote),
                outbound_spi: child.outbound_spi,
                policies: Vec::new(),
                installed,
            },
        );
        let mut failure = None;
        for key in keys {
            let spec = self.policy_spec(key, local, remote, reqid);
            let changed = st.policies.get(&key).is_none_or(|u| u.spec != spec);
            if changed {
                if let Err(e) = st.socket.request(msg::update_policy(&spec), 0) {
                    failure = Some(e);
                    break;
                }
            }
            let u = st
                .policies
                .entry(key)
                .or_insert(PolicyUse { spec, users: 0 });
            u.spec = spec;
            u.users += 1;
            if let Some(sa) = st.sas.get_mut(&child.inbound_spi) {
                sa.policies.push(key);
            }
        }
        drop(st);
        if let Some(e) = failure {
            self.remove(child.inbound_spi);
            return Err(e);
        }
        Ok(())
    }

    /// Both states of a Child SA, as it is now.
    fn sa_specs<'a>(&self, child: &'a ChildSa, reqid: u32) -> (SaSpec<'a>, SaSpec<'a>) {
        let (in_encap, out_encap) = if child.udp_encapsulation {
            (
                Some((child.remote.port(), child.local.port())),
                Some((child.local.port(), child.remote.port())),
            )
        } else {
            (None, None)
        };
        let inbound = SaSpec {
            src: child.remote.ip(),
            dst: child.local.ip(),
            spi: child.inbound_spi,
            reqid,
            keys: &child.inbound,
            esn: child.esn,
            replay_window: self.config.replay_window,
            encap: in_encap,
            if_id: self.config.if_id,
            limits: self.config.limits,
        };
        let outbound = SaSpec {
            src: child.local.ip(),
            dst: child.remote.ip(),
            spi: child.outbound_spi,
            keys: &child.outbound,
            replay_window: 0,
            encap: out_encap,
            ..inbound
        };
        (inbound, outbound)
    }

    /// The policy of `key`, its template between `local` and `remote`.
    fn policy_spec(&self, key: PolicyKey, local: IpAddr, remote: IpAddr, reqid: u32) -> PolicySpec {
        let (tmpl_src, tmpl_dst) = match key.2 {
            Direction::Out => (local, remote),
            Direction::In | Direction::Fwd => (remote, local),
        };
        PolicySpec {
            src: key.0,
            dst: key.1,
            dir: key.2,
            priority: PRIORITY_BASE - u32::from(key.0 .1) - u32::from(key.1 .1),
            tmpl_src,
            tmpl_dst,
            reqid,
            if_id: self.config.if_id,
        }
    }

    /// Moves a Child SA's states and policies to the outer addresses and
    /// encapsulation it has now (a NAT's new mapping, MOBIKE). Where only
    /// the encapsulation's ports change, each state is updated in place
    /// and keeps its counters. Otherwise, since a state's addresses are
    /// part of its identity in the kernel, it is read for its counters and
    /// replay window and added again at the new addresses with them, the
    /// outbound counter moved [`OUTBOUND_SEQUENCE_MARGIN`] ahead of what
    /// the old state may still send meanwhile: the keys never count over
    /// the same numbers twice (with AES-GCM that would repeat a nonce).
    /// A state whose destination changes is added before the old one goes,
    /// and the policies' templates move between the two. On failure the
    /// Child SA is removed altogether.
    pub fn move_child(&self, child: &ChildSa) -> io::Result<()> {
        let result = self.move_states(child);
        if result.is_err() {
            self.remove(child.inbound_spi);
        }
        result
    }

    fn move_states(&self, child: &ChildSa) -> io::Result<()> {
        let mut st = self.lock();
        let Some(sa) = st.sas.get(&child.inbound_spi) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such Child SA"));
        };
        let (old_local, old_remote, reqid) = (sa.local, sa.remote, sa.reqid);
        let was_encapsulated = sa.encapsulated.is_some();
        let (local, remote) = (child.local.ip(), child.remote.ip());
        let encapsulated = child.udp_encapsulation.then_some(child.remote);
        if (old_local, old_remote, sa.encapsulated) == (local, remote, encapsulated) {
            return Ok(());
        }
        let policies = sa.policies.clone();
        let (inbound, outbound) = self.sa_specs(child, reqid);
        // States of the old addresses to delete once the policies moved.
        let mut stale = Vec::new();
        for (spec, old_src, old_dst, is_outbound) in [
            (inbound, old_remote, old_local, false),
            (outbound, old_local, old_remote, true),
        ] {
            let same_addresses = spec.src == old_src && spec.dst == old_dst;
            if same_addresses && spec.encap.is_some() == was_encapsulated {
                st.socket.request(msg::update_sa(&spec), 0)?;
                continue;
            }
            let answer = st.socket.get(msg::get_sa(old_src, old_dst, spec.spi))?;
            let mut sequence = msg::sequence_of(&answer).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "the SA has no replay state")
            })?;
            if is_outbound {
                sequence
                    .skip_ahead(OUTBOUND_SEQUENCE_MARGIN, spec.esn)
                    .ok_or_else(|| io::Error::other("the SA's sequence numbers are used up"))?;
            }
            if spec.dst == old_dst {
                // The same identity in the kernel: out, then in again.
                st.socket
                    .request(msg::delete_sa(old_src, old_dst, spec.spi), 0)?;
                st.socket
                    .request(msg::new_sa_continuing(&spec, &sequence), 0)?;
            } else {
                st.socket
                    .request(msg::new_sa_continuing(&spec, &sequence), 0)?;
                stale.push((old_src, old_dst, spec.spi));
            }
        }
        if let Some(sa) = st.sas.get_mut(&child.inbound_spi) {
            sa.local = local;
            sa.remote = remote;
            sa.encapsulated = encapsulated;
        }
        for key in policies {
            let spec = self.policy_spec(key, local, remote, reqid);
            st.socket.request(msg::update_policy(&spec), 0)?;
            if let Some(u) = st.policies.get_mut(&key) {
                u.spec = spec;
            }
        }
        for (src, dst, spi) in stale {
            gone_is_fine(st.socket.request(msg::delete_sa(src, dst, spi), 0))?;
        }
        Ok(())
    }

    /// Removes a Child SA (by inbound SPI), and the policies no other SA
    /// uses.
    pub fn remove(&self, inbound_spi: u32) {
        let mut st = self.lock();
        let Some(sa) = st.sas.remove(&inbound_spi) else {
            return;
        };
        // Policies before SAs: the other order leaves a moment where
        // traffic meets a policy without SAs, and the kernel would ask for
        // new ones (ACQUIRE).
        for key in sa.policies {
            let Some(u) = st.policies.get_mut(&key) else {
                continue;
            };
            u.users -= 1;
            if u.users == 0 {
                st.policies.remove(&key);
                let _ = st.socket.request(
                    msg::delete_policy(key.0, key.1, key.2 as u8, self.config.if_id),
                    0,
                );
            }
        }
        // A hard expire may have removed them already.
        let _ = st
            .socket
            .request(msg::delete_sa(sa.remote, sa.local, inbound_spi), 0);
        let _ = st
            .socket
            .request(msg::delete_sa(sa.local, sa.remote, sa.outbound_spi), 0);
    }

    /// Removes everything this backend installed.
    pub fn remove_all(&self) {
        let spis: Vec<u32> = self.lock().sas.keys().copied().collect();
        for spi in spis {
            self.remove(spi);
        }
    }

    /// The kernel's counters of a Child SA, by inbound SPI.
    pub fn counters(&self, inbound_spi: u32) -> Option<SaCounters> {
        let mut st = self.lock();
        let sa = st.sas.get(&inbound_spi)?;
        let (local, remote, out_spi) = (sa.local, sa.remote, sa.outbound_spi);
        let mut read = |src, dst, spi| -> Counters {
            let mut c = Counters::default();
            if let Ok(XfrmMessage::AddSa(s)) = st.socket.get(msg::get_sa(src, dst, spi)) {
                c.bytes = s.user_sa_info.lifetime_cur.bytes;
                c.packets = s.user_sa_info.lifetime_cur.packets;
            }
            c
        };
        Some(SaCounters {
            inbound: read(remote, local, inbound_spi),
            outbound: read(local, remote, out_spi),
        })
    }

    /// The peers whose ESP goes in UDP (they get NAT keepalives).
    pub fn encapsulated_peers(&self) -> Vec<SocketAddr> {
        self.lock()
            .sas
            .values()
            .filter_map(|s| s.encapsulated)
            .collect()
    }

    /// The Child SA (IKE SA, inbound SPI) a kernel event is about, if the
    /// SA or policy it names is ours: by destination and SPI for an
    /// expire, by reqid for an acquire (the newest such Child SA).
    pub fn child_for(&self, event: &KernelEvent) -> Option<(SaId, u32)> {
        let st = self.lock();
        match *event {
            KernelEvent::Expire {
                dst, spi, reqid, ..
            } => {
                if !self.config.owner.owns_reqid(reqid) {
                    return None;
                }
                st.sas.iter().find_map(|(inbound, sa)| {
                    let hit = (*inbound == spi && sa.local == dst)
                        || (sa.outbound_spi == spi && sa.remote == dst);
                    hit.then_some((sa.ike_sa, *inbound))
                })
            }
            KernelEvent::Mapping {
                dst, spi, reqid, ..
            } => {
                if !self.config.owner.owns_reqid(reqid) {
                    return None;
                }
                st.sas
                    .get(&spi)
                    .filter(|sa| sa.local == dst)
                    .map(|sa| (sa.ike_sa, spi))
            }
            KernelEvent::Acquire { reqid, .. } => {
                if !self.config.owner.owns_reqid(reqid) {
                    return None;
                }
                st.sas
                    .iter()
                    .filter(|(_, sa)| sa.reqid == reqid)
                    .max_by_key(|(_, sa)| sa.installed)
                    .map(|(inbound, sa)| (sa.ike_sa, *inbound))
            }
        }
    }
}

/// Removes every state and policy that carries `owner`'s tag (what a
/// daemon that was killed left behind); returns how many. Done before the
/// XFRM interface is touched: the kernel's cached routes through old SAs
/// would hold on to it.
pub fn remove_leftovers(owner: Owner) -> io::Result<usize> {
    let mut socket = NetlinkSocket::open(NETLINK_XFRM)?;
    let mut n = 0;
    for m in socket.dump(msg::dump_policies())? {
        if let XfrmMessage::AddPolicy(p) = m {
            if !policy_is_ours(&p, owner) {
                continue;
            }
            let sel = p.user_policy_info.selector;
            let if_id = p.nlas.iter().find_map(|a| match a {
                XfrmAttrs::IfId(id) => Some(*id),
                _ => None,
            });
            let (src, dst) = selector_prefixes(&sel);
            gone_is_fine(socket.request(
                msg::delete_policy(src, dst, p.user_policy_info.direction, if_id),
                0,
            ))?;
            n += 1;
        }
    }
    for m in socket.dump(msg::dump_sas())? {
        if let XfrmMessage::AddSa(s) = m {
            if !sa_is_ours(&s, owner) {
                continue;
            }
            let info = s.user_sa_info;
            let (src, dst) = (
                ip_of(&info.saddr, info.family),
                ip_of(&info.id.daddr, info.family),
            );
            gone_is_fine(socket.request(msg::delete_sa(src, dst, info.id.spi), 0))?;
            n += 1;
        }
    }
    Ok(n)
}

/// A delete of something that is already gone (it expired, or another
/// party removed it meanwhile) is not an error.
fn gone_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
        other => other,
    }
}

/// Whether a policy from a kernel dump is `owner`'s: a template with its
/// reqid tag, or its XFRM interface's if_id.
pub fn policy_is_ours(p: &netlink_packet_xfrm::policy::ModifyMessage, owner: Owner) -> bool {
    p.nlas.iter().any(|a| match a {
        XfrmAttrs::Template(t) => t.iter().any(|t| owner.owns_reqid(t.reqid)),
        XfrmAttrs::IfId(id) => *id == owner.if_id(),
        _ => false,
    })
}

/// Whether an SA from a kernel dump is `owner`'s.
pub fn sa_is_ours(s: &netlink_packet_xfrm::state::ModifyMessage, owner: Owner) -> bool {
    owner.owns_reqid(s.user_sa_info.reqid)
}

/// The counters of /proc/net/xfrm_stat that count decrypted packets no
/// inbound policy allows.
const POLICY_DROPS: [&str; 3] = ["XfrmInNoPols", "XfrmInTmplMismatch", "XfrmInPolBlock"];

/// Their sum, from the text of /proc/net/xfrm_stat.
pub fn policy_drops(xfrm_stat: &str) -> u64 {
    xfrm_stat
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let n = words.next()?.parse::<u64>().ok()?;
            POLICY_DROPS.contains(&name).then_some(n)
        })
        .sum()
}

/// Checks that this kernel can run the backend, with an error for the
/// operator (what is missing, and `backend = "userspace"`) if not.
pub fn check_kernel(owner: Owner) -> io::Result<()> {
    NetlinkSocket::open(NETLINK_XFRM)
        .and_then(|mut s| probe(&mut s, owner))
        .map_err(unsupported)
}

/// Adds and removes a throwaway SA: the cheapest reliable way to learn
/// whether the kernel has ESP (the module loads on demand) and whether we
/// may change the SAD at all.
fn probe(socket: &mut NetlinkSocket, owner: Owner) -> io::Result<()> {
    let keys = EspKeys::AesGcm16 {
        key: vec![0; 16],
        salt: [0; 4],
    };
    // Documentation addresses: this SA can never carry traffic.
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let dst = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let spec = SaSpec {
        src,
        dst,
        // Each owner its own: the two daemons may start side by side.
        spi: owner.reqid_tag(),
        reqid: owner.reqid_tag(),
        keys: &keys,
        esn: false,
        replay_window: 0,
        encap: None,
        if_id: None,
        limits: Limits::default(),
    };
    match socket.request(msg::new_sa(&spec), 0) {
        // Left by a run that died between these two lines.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        other => other?,
    }
    gone_is_fine(socket.request(msg::delete_sa(src, dst, spec.spi), 0))
}

/// The inner prefixes of an IPv6 traffic selector (a range that is not a
/// single prefix becomes the prefixes that tile it: at most 254).
pub fn ts_prefixes(ts: &TrafficSelector) -> Vec<Prefix> {
    let TrafficSelector::Ipv6(r) = ts else {
        return Vec::new();
    };
    let (mut start, end) = (u128::from(r.start), u128::from(r.end));
    let mut out = Vec::new();
    while start <= end {
        // The largest aligned block at `start` that does not pass `end`.
        let mut len = if start == 0 {
            0
        } else {
            128 - start.trailing_zeros()
        };
        while len < 128 {
            let size = if len == 0 {
                u128::MAX
            } else {
                (1u128 << (128 - len)) - 1
            };
            if start.checked_add(size).is_some_and(|last| last <= end) {
                break;
            }
            len += 1;
        }
        out.push((IpAddr::V6(Ipv6Addr::from(start)), len as u8));
        let size = if len == 0 {
            u128::MAX
        } else {
            (1u128 << (128 - len)) - 1
        };
        match start.checked_add(size).and_then(|l| l.checked_add(1)) {
            Some(next) => start = next,
            None => break,
        }
    }
    out
}

fn policy_keys(child: &ChildSa) -> Vec<PolicyKey> {
    let locals: Vec<Prefix> = child.local_ts.iter().flat_map(ts_prefixes).collect();
    let remotes: Vec<Prefix> = child.remote_ts.iter().flat_map(ts_prefixes).collect();
    let mut keys = Vec::new();
    for l in &locals {
        for r in &remotes {
            keys.push((*l, *r, Direction::Out));
            keys.push((*r, *l, Direction::In));
            keys.push((*r, *l, Direction::Fwd));
        }
    }
    keys
}

fn selector_prefixes(sel: &netlink_packet_xfrm::Selector) -> (Prefix, Prefix) {
    (
        (ip_of(&sel.saddr, sel.family), sel.prefixlen_s),
        (ip_of(&sel.daddr, sel.family), sel.prefixlen_d),
    )
}

fn ip_of(a: &netlink_packet_xfrm::Address, family: u16) -> IpAddr {
    if family == libc::AF_INET as u16 {
        IpAddr::V4(a.to_ipv4())
    } else {
        IpAddr::V6(a.to_ipv6())
    }
}

/// Reads kernel events until the daemon goes away. SPIs are mapped to
/// Child SAs by the daemon (through [`Xfrm::child_of`]); this thread only
/// parses.
fn event_thread(mut socket: NetlinkSocket, tx: mpsc::UnboundedSender<KernelEvent>) {
    // The kernel reports a new mapping for each packet until the SA is
    // moved: each SA's newest is passed on once.
    let mut mappings: HashMap<u32, SocketAddr> = HashMap::new();
    // Bounded: SAs come and go, their entries with them in time.
    const MAPPINGS_KEPT: usize = 1 << 16;
    loop {
        let messages = match socket.next_messages::<XfrmMessage>() {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!("XFRM events overran the socket buffer; some were lost");
                continue;
            }
            Err(e) => {
                tracing::warn!("XFRM event socket: {e}");
                return;
            }
        };
        for m in messages {
            let event = match m {
                XfrmMessage::Expire(e) => {
                    let info = &e.expire.state;
                    KernelEvent::Expire {
                        dst: ip_of(&info.id.daddr, info.family),
                        spi: info.id.spi,
                        reqid: info.reqid,
                        hard: e.expire.hard != 0,
                    }
                }
                XfrmMessage::Acquire(a) => {
                    let Some(reqid) = a.nlas.iter().find_map(|n| match n {
                        XfrmAttrs::Template(t) => t.first().map(|t| t.reqid),
                        _ => None,
                    }) else {
                        continue;
                    };
                    KernelEvent::Acquire {
                        reqid,
                        dst: ip_of(&a.acquire.selector.daddr, a.acquire.selector.family),
                    }
                }
                XfrmMessage::Mapping(m) => {
                    let map = &m.map;
                    let new = SocketAddr::new(ip_of(&map.new_saddr, map.id.family), map.new_sport);
                    if mappings.len() >= MAPPINGS_KEPT {
                        mappings.clear();
                    }
                    if mappings.insert(map.id.spi, new) == Some(new) {
                        continue;
                    }
                    KernelEvent::Mapping {
                        dst: ip_of(&map.id.daddr, map.id.family),
                        spi: map.id.spi,
                        reqid: map.reqid,
                        new,
                    }
                }
                _ => continue,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sixgate_proto::wire::TsRange;

    #[test]
    fn policy_drops_from_xfrm_stat() {
        // As the VM's 6.1 kernel prints it, abridged.
        let text = "XfrmInError             \t0\nXfrmInTmplMismatch      \t2\n\
                    XfrmInNoPols            \t5\nXfrmInPolBlock          \t1\n\
                    XfrmOutNoStates         \t7\n";
        assert_eq!(policy_drops(text), 8);
        assert_eq!(policy_drops(""), 0);
    }

    fn range(a: &str, b: &str) -> TrafficSelector {
        TrafficSelector::Ipv6(TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        })
    }

    fn p(a: &str, len: u8) -> Prefix {
        (IpAddr::V6(a.parse().unwrap()), len)
    }

    #[test]
    fn selectors_become_the_prefixes_that_tile_them() {
        let all = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(ts_prefixes(&range("::", all)), vec![p("::", 0)]);
        assert_eq!(
            ts_prefixes(&range("2001:db8::5", "2001:db8::5")),
            vec![p("2001:db8::5", 128)]
        );
        assert_eq!(
            ts_prefixes(&range("2001:db8::", "2001:db8::ffff")),
            vec![p("2001:db8::", 112)]
        );
        assert_eq!(
            ts_prefixes(&range("2001:db8::1", "2001:db8::6")),
            vec![
                p("2001:db8::1", 128),
                p("2001:db8::2", 127),
                p("2001:db8::4", 127),
                p("2001:db8::6", 128)
            ]
        );
        assert_eq!(ts_prefixes(&range("::8000", all)).len(), 113);
        // A reversed range selects nothing.
        assert!(ts_prefixes(&range("2001:db8::6", "2001:db8::1")).is_empty());
    }
}
