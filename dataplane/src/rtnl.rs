//! Addresses, routes, rules and links through rtnetlink: the client's
//! virtual address (never deprecated, no DAD), its default route, the
//! broker's route to each client, the XFRM interface of the route-based
//! kernel data plane, and for DMZ sites the WireGuard link, its transfer
//! addresses, the prefix and unreachable routes (in a table of their own,
//! if configured) and the policy rules that lead to it.
//!
//! Routes and rules sixgate adds carry a protocol number of their own (one
//! per daemon and one for the sites, see
//! [`crate::xfrm::Owner::route_protocol`] and [`SITES_PROTOCOL`]), so a
//! daemon that was killed can find and remove its leftovers at the next
//! start without touching anyone else's.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoXfrm, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::netlink::NetlinkSocket;

const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_REPLACE: u16 = 0x100;
/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// The `proto` of the DMZ sites' routes and rules.
pub const SITES_PROTOCOL: u8 = 92;
/// The metric of sixgate's routes: below the kernel's 1024 for routes
/// from router advertisements and most static ones, so a tunnel default
/// route wins, and distinct from it, so adding ours never replaces a
/// route that was already there (IPv6 "replace" matches on the metric).
const ROUTE_METRIC: u32 = 512;
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// What a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// Out of this link.
    Link(u32),
    /// Nowhere: ICMP unreachable.
    Unreachable,
}

/// A route, in the terms sixgate uses: destination, target, table,
/// metric, preferred source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix.
    pub dst: (IpAddr, u8),
    /// Where it leads.
    pub target: RouteTarget,
    /// The routing table.
    pub table: u32,
    /// The metric.
    pub metric: u32,
    /// The preferred source address.
    pub src: Option<IpAddr>,
}

/// A policy rule: traffic from (or to) a prefix looks up a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The prefix.
    pub prefix: (IpAddr, u8),
    /// Whether it matches the source (else the destination).
    pub from: bool,
    /// The table it sends traffic to.
    pub table: u32,
}

/// An rtnetlink socket.
pub struct Rtnl {
    socket: NetlinkSocket,
    /// The `proto` of the routes it adds and flushes.
    protocol: u8,
}

impl Rtnl {
    /// Opens a socket in the current network namespace; routes it adds
    /// carry `protocol`.
    pub fn open(protocol: u8) -> io::Result<Rtnl> {
        Ok(Rtnl {
            socket: NetlinkSocket::open(NETLINK_ROUTE)?,
            protocol,
        })
    }

    fn link_messages(&mut self) -> io::Result<Vec<LinkMessage>> {
        let links = self
            .socket
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(links
            .into_iter()
            .filter_map(|l| match l {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Every link, as (index, name).
    fn links(&mut self) -> io::Result<Vec<(u32, String)>> {
        Ok(self
            .link_messages()?
            .into_iter()
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some((l.header.index, n.clone())),
                    _ => None,
                })
            })
            .collect())
    }

    /// The index of the link called `name`.
    pub fn link_index(&mut self, name: &str) -> io::Result<u32> {
        self.links()?
            .into_iter()
            .find_map(|(i, n)| (n == name).then_some(i))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link {name}")))
    }

    /// The name of link `index`.
    pub fn link_name(&mut self, index: u32) -> io::Result<String> {
        self.links()?
            .into_iter()
            .find_map(|(i, n)| (i == index).then_some(n))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link {index}")))
    }

    /// Every address of every link.
    fn address_messages(&mut self) -> io::Result<Vec<AddressMessage>> {
        let all = self
            .socket
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// The index of the link that holds `addr`.
    pub fn link_with_address(&mut self, addr: IpAddr) -> io::Result<u32> {
        self.address_messages()?
            .into_iter()
            .find(|a| {
                a.attributes.iter().any(|at| {
                    matches!(at, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == addr)
                })
            })
            .map(|a| a.header.index)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no link holds {addr}"))
            })
    }

    /// Makes sure the XFRM interface `name` for `if_id` exists and is up;
    /// returns its index. One left by an earlier run is taken over as it
    /// is (minus its global IPv6 addresses): deleting it would wait for
    /// every cached route through it to go. A link of that name that is
    /// not such an interface is refused, not touched.
    pub fn ensure_xfrm_link(&mut self, name: &str, if_id: u32) -> io::Result<u32> {
        let existing = self.link_messages()?.into_iter().find(|l| {
            l.attributes
                .contains(&LinkAttribute::IfName(name.to_string()))
        });
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        match existing {
            Some(l) => {
                // The kernel reports more than the if_id (the lower link,
                // collect_md): look for the if_id among them.
                let is_ours = l.attributes.iter().any(|a| match a {
                    LinkAttribute::LinkInfo(info) => {
                        info.contains(&LinkInfo::Kind(InfoKind::Xfrm))
                            && info.iter().any(|i| {
                                matches!(i, LinkInfo::Data(InfoData::Xfrm(d))
                                    if d.contains(&InfoXfrm::IfId(if_id)))
                            })
                    }
                    _ => false,
                });
                if !is_ours {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{name} exists and is not an XFRM interface with if_id {if_id:#x}"),
                    ));
                }
                self.flush_global_addresses(l.header.index)?;
                m.header.index = l.header.index;
                self.socket.request(RouteNetlinkMessage::SetLink(m), 0)?;
            }
            None => {
                m.attributes.push(LinkAttribute::IfName(name.to_string()));
                m.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Xfrm),
                    LinkInfo::Data(InfoData::Xfrm(vec![InfoXfrm::IfId(if_id)])),
                ]));
                self.socket
                    .request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)?;
            }
        }
        self.link_index(name)
    }

    /// Removes the global-scope IPv6 addresses of link `index`.
    fn flush_global_addresses(&mut self, index: u32) -> io::Result<()> {
        for a in self.address_messages()? {
            if a.header.index == index
                && a.header.family == AddressFamily::Inet6
                && a.header.scope == AddressScope::Universe
            {
                self.socket.request(RouteNetlinkMessage::DelAddress(a), 0)?;
            }
        }
        Ok(())
    }

    /// Deletes the link called `name`.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = self.link_index(name)?;
        self.socket.request(RouteNetlinkMessage::DelLink(m), 0)
    }

    fn address_message(index: u32, addr: Ipv6Addr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.prefix_len = 128;
        m.header.scope = AddressScope::Universe;
        m.header.index = index;
        m.attributes
            .push(AddressAttribute::Address(IpAddr::V6(addr)));
        m
    }

    /// Adds (or refreshes) `addr`/128 on link `index` with valid and
    /// preferred lifetime forever, so it is never "deprecated" and source
    /// address selection picks it, and without duplicate address detection
    /// (the broker's pool guarantees it is unique).
    pub fn add_address(&mut self, index: u32, addr: Ipv6Addr) -> io::Result<()> {
        let mut m = Self::address_message(index, addr);
        m.header.flags = AddressHeaderFlags::Nodad;
        let mut lifetimes = CacheInfo::default();
        lifetimes.ifa_preferred = INFINITY_LIFE_TIME;
        lifetimes.ifa_valid = INFINITY_LIFE_TIME;
        m.attributes.push(AddressAttribute::CacheInfo(lifetimes));
        self.socket.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes `addr`/128 from link `index`.
    pub fn delete_address(&mut self, index: u32, addr: Ipv6Addr) -> io::Result<()> {
        let m = Self::address_message(index, addr);
        self.socket.request(RouteNetlinkMessage::DelAddress(m), 0)
    }

    fn route_message(&self, r: &Route) -> RouteMessage {
        let (dst, len) = r.dst;
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst);
        m.header.destination_prefix_length = len;
        // Tables above 255 only fit the attribute; the header says "see it".
        m.header.table = u8::try_from(r.table).unwrap_or(0);
        m.attributes.push(RouteAttribute::Table(r.table));
        m.header.protocol = RouteProtocol::Other(self.protocol);
        m.header.scope = RouteScope::Universe;
        if len > 0 {
            m.attributes
                .push(RouteAttribute::Destination(route_address(dst)));
        }
        match r.target {
            RouteTarget::Link(index) => {
                m.header.kind = RouteType::Unicast;
                m.attributes.push(RouteAttribute::Oif(index));
            }
            RouteTarget::Unreachable => m.header.kind = RouteType::Unreachable,
        }
        m.attributes.push(RouteAttribute::Priority(r.metric));
        if let Some(src) = r.src {
            m.attributes
                .push(RouteAttribute::PrefSource(route_address(src)));
        }
        m
    }

    /// Adds `route`, replacing one to the same prefix with the same metric.
    pub fn replace_route(&mut self, route: &Route) -> io::Result<()> {
        let m = self.route_message(route);
        self.socket.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes `route`.
    pub fn remove_route(&mut self, route: &Route) -> io::Result<()> {
        let m = self.route_message(route);
        self.socket.request(RouteNetlinkMessage::DelRoute(m), 0)
    }

    fn main_route(dst: Ipv6Addr, len: u8, index: u32, src: Option<Ipv6Addr>) -> Route {
        Route {
            dst: (IpAddr::V6(dst), len),
            target: RouteTarget::Link(index),
            table: RT_TABLE_MAIN,
            metric: ROUTE_METRIC,
            src: src.map(IpAddr::V6),
        }
    }

    /// Routes `dst`/`len` out of link `index` in the main table, with
    /// `src` as the preferred source address if given (replacing a route
    /// to the same prefix).
    pub fn add_route(
        &mut self,
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        src: Option<Ipv6Addr>,
    ) -> io::Result<()> {
        self.replace_route(&Self::main_route(dst, len, index, src))
    }

    /// Removes a route added by [`Rtnl::add_route`].
    pub fn delete_route(&mut self, dst: Ipv6Addr, len: u8, index: u32) -> io::Result<()> {
        self.remove_route(&Self::main_route(dst, len, index, None))
    }

    /// Removes every route (IPv6 and IPv4, in every table) with this
    /// socket's protocol number (the leftovers of a daemon that did not
    /// stop cleanly); returns how many.
    pub fn flush_own_routes(&mut self) -> io::Result<usize> {
        let mut n = 0;
        for family in [AddressFamily::Inet6, AddressFamily::Inet] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let routes = self.socket.dump(RouteNetlinkMessage::GetRoute(query))?;
            for r in routes {
                if let RouteNetlinkMessage::NewRoute(r) = r {
                    if r.header.protocol == RouteProtocol::Other(self.protocol) {
                        gone_is_fine(self.socket.request(RouteNetlinkMessage::DelRoute(r), 0))?;
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    /// The routes with this socket's protocol number, as (destination,
    /// prefix length, table, unreachable).
    pub fn own_routes(&mut self) -> io::Result<Vec<(IpAddr, u8, u32, bool)>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet6, AddressFamily::Inet] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            for r in self.socket.dump(RouteNetlinkMessage::GetRoute(query))? {
                let RouteNetlinkMessage::NewRoute(r) = r else {
                    continue;
                };
                if r.header.protocol != RouteProtocol::Other(self.protocol) {
                    continue;
                }
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                    _ => None,
                });
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                let unspecified = match family {
                    AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                };
                out.push((
                    dst.unwrap_or(unspecified),
                    r.header.destination_prefix_length,
                    table,
                    r.header.kind == RouteType::Unreachable,
                ));
            }
        }
        Ok(out)
    }

    fn proxy_message(&self, index: u32, addr: Ipv6Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Proxy;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                addr,
            )));
        m.attributes
            .push(NeighbourAttribute::Protocol(RouteProtocol::Other(
                self.protocol,
            )));
        m
    }

    /// Answers neighbour solicitations for `addr` on link `index` (`ip -6
    /// neigh replace proxy ADDR dev LINK`), tagged with this socket's
    /// protocol number; the link needs `proxy_ndp` on.
    pub fn add_proxy_neighbour(&mut self, index: u32, addr: Ipv6Addr) -> io::Result<()> {
        let m = self.proxy_message(index, addr);
        self.socket.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes a proxy entry added by [`Rtnl::add_proxy_neighbour`].
    pub fn delete_proxy_neighbour(&mut self, index: u32, addr: Ipv6Addr) -> io::Result<()> {
        let m = self.proxy_message(index, addr);
        gone_is_fine(self.socket.request(RouteNetlinkMessage::DelNeighbour(m), 0))
    }

    /// The proxy entries with this socket's protocol number, as (link,
    /// address).
    pub fn own_proxy_neighbours(&mut self) -> io::Result<Vec<(u32, Ipv6Addr)>> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Inet6;
        query.header.flags = NeighbourFlags::Proxy;
        let mut out = Vec::new();
        for m in self.socket.dump(RouteNetlinkMessage::GetNeighbour(query))? {
            let RouteNetlinkMessage::NewNeighbour(m) = m else {
                continue;
            };
            let ours = m.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::Protocol(p) if *p == RouteProtocol::Other(self.protocol))
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(*a),
                _ => None,
            });
            if let (true, Some(addr)) = (ours, addr) {
                out.push((m.header.ifindex, addr));
            }
        }
        Ok(out)
    }

    fn rule_message(&self, rule: &Rule) -> RuleMessage {
        let (addr, len) = rule.prefix;
        let mut m = RuleMessage::default();
        m.header.family = family(addr);
        m.header.action = RuleAction::ToTable;
        m.header.table = u8::try_from(rule.table).unwrap_or(0);
        m.attributes.push(RuleAttribute::Table(rule.table));
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(self.protocol)));
        if rule.from {
            m.header.src_len = len;
            m.attributes.push(RuleAttribute::Source(addr));
        } else {
            m.header.dst_len = len;
            m.attributes.push(RuleAttribute::Destination(addr));
        }
        m
    }

    /// Adds a policy rule (an identical one is refused by the kernel with
    /// EEXIST, which is fine: it is there).
    pub fn add_rule(&mut self, rule: &Rule) -> io::Result<()> {
        let m = self.rule_message(rule);
        match self
            .socket
            .request(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
        {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Removes a policy rule added by [`Rtnl::add_rule`].
    pub fn delete_rule(&mut self, rule: &Rule) -> io::Result<()> {
        let m = self.rule_message(rule);
        gone_is_fine(self.socket.request(RouteNetlinkMessage::DelRule(m), 0))
    }

    /// Every policy rule with this socket's protocol number, as rules.
    pub fn own_rules(&mut self) -> io::Result<Vec<Rule>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet6, AddressFamily::Inet] {
            let mut query = RuleMessage::default();
            query.header.family = family;
            for m in self.socket.dump(RouteNetlinkMessage::GetRule(query))? {
                let RouteNetlinkMessage::NewRule(m) = m else {
                    continue;
                };
                let ours = m
                    .attributes
                    .contains(&RuleAttribute::Protocol(RouteProtocol::Other(
                        self.protocol,
                    )));
                if !ours {
                    continue;
                }
                let table = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RuleAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(m.header.table));
                let source = m.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Source(a) => Some(*a),
                    _ => None,
                });
                let dest = m.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Destination(a) => Some(*a),
                    _ => None,
                });
                match (source, dest) {
                    (Some(a), _) => out.push(Rule {
                        prefix: (a, m.header.src_len),
                        from: true,
                        table,
                    }),
                    (None, Some(a)) => out.push(Rule {
                        prefix: (a, m.header.dst_len),
                        from: false,
                        table,
                    }),
                    (None, None) => {}
                }
            }
        }
        Ok(out)
    }

    /// Removes every rule with this socket's protocol number; returns how many.
    pub fn flush_own_rules(&mut self) -> io::Result<usize> {
        let rules = self.own_rules()?;
        for r in &rules {
            self.delete_rule(r)?;
        }
        Ok(rules.len())
    }

    /// Creates a kernel WireGuard link `name` (fails where the kernel has
    /// no WireGuard); returns its index.
    pub fn create_wireguard_link(&mut self, name: &str) -> io::Result<u32> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Wireguard,
            )]));
        self.socket
            .request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)?;
        self.link_index(name)
    }

    /// Sets link `index` up with `mtu`.
    pub fn set_link_up(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.socket.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Adds (or refreshes) `addr`/`len` on link `index`; IPv6 without DAD.
    pub fn replace_address(&mut self, index: u32, addr: IpAddr, len: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr);
        m.header.prefix_len = len;
        m.header.scope = AddressScope::Universe;
        m.header.index = index;
        if addr.is_ipv6() {
            m.header.flags = AddressHeaderFlags::Nodad;
        }
        m.attributes.push(AddressAttribute::Address(addr));
        if let IpAddr::V4(a) = addr {
            m.attributes.push(AddressAttribute::Local(IpAddr::V4(a)));
        }
        self.socket.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Whether a link called `name` exists.
    pub fn link_exists(&mut self, name: &str) -> io::Result<bool> {
        match self.link_index(name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// A delete of something that is already gone is not an error.
fn gone_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
        other => other,
    }
}

/// rtnetlink's multicast groups of IPv4 addresses and routes.
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;

/// Sends `()` on `changed` after each change of the host's IPv4 addresses
/// or routes (a laptop that joins another network, a DHCP lease, a PPP
/// link that comes up), from a thread of its own, until the receiver is
/// gone. Bursts come as several sends; the receiver settles them.
pub fn watch_ipv4(changed: tokio::sync::mpsc::UnboundedSender<()>) -> io::Result<()> {
    let mut socket =
        NetlinkSocket::listen(NETLINK_ROUTE, &[RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE])?;
    std::thread::Builder::new()
        .name("ipv4-watch".into())
        .spawn(move || loop {
            match socket.next_messages::<RouteNetlinkMessage>() {
                Ok(messages) if messages.is_empty() => continue,
                Ok(_) => {}
                // Some were lost: something changed all the same.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => {
                    tracing::warn!("watching IPv4 addresses and routes: {e}");
                    return;
                }
            }
            if changed.send(()).is_err() {
                return;
            }
        })?;
    Ok(())
}
