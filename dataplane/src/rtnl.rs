//! Addresses, routes and links through rtnetlink: the client's virtual
//! address (never deprecated, no DAD), its default route, the broker's
//! route to each client, and the XFRM interface of the route-based kernel
//! data plane.
//!
//! Routes sixgate adds carry a protocol number of their own (one per
//! daemon, see [`crate::xfrm::Owner::route_protocol`]), so a daemon that
//! was killed can find and remove its leftovers at the next start without
//! touching anyone else's routes.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoXfrm, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::netlink::NetlinkSocket;

const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_REPLACE: u16 = 0x100;
const RT_TABLE_MAIN: u8 = 254;
/// The metric of sixgate's routes: below the kernel's 1024 for routes
/// from router advertisements and most static ones, so a tunnel default
/// route wins, and distinct from it, so adding ours never replaces a
/// route that was already there (IPv6 "replace" matches on the metric).
const ROUTE_METRIC: u32 = 512;
const INFINITY_LIFE_TIME: u32 = u32::MAX;

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

    fn route_message(&self, dst: Ipv6Addr, len: u8, index: u32) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet6;
        m.header.destination_prefix_length = len;
        m.header.table = RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Other(self.protocol);
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        if len > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet6(dst)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        m.attributes.push(RouteAttribute::Priority(ROUTE_METRIC));
        m
    }

    /// Routes `dst`/`len` out of link `index`, with `src` as the preferred
    /// source address if given (replacing a route to the same prefix).
    pub fn add_route(
        &mut self,
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        src: Option<Ipv6Addr>,
    ) -> io::Result<()> {
        let mut m = self.route_message(dst, len, index);
        if let Some(s) = src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet6(s)));
        }
        self.socket.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes a route added by [`Rtnl::add_route`].
    pub fn delete_route(&mut self, dst: Ipv6Addr, len: u8, index: u32) -> io::Result<()> {
        let m = self.route_message(dst, len, index);
        self.socket.request(RouteNetlinkMessage::DelRoute(m), 0)
    }

    /// Removes every IPv6 route with this socket's protocol number (the
    /// leftovers of a daemon that did not stop cleanly); returns how many.
    pub fn flush_own_routes(&mut self) -> io::Result<usize> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet6;
        let routes = self.socket.dump(RouteNetlinkMessage::GetRoute(query))?;
        let mut n = 0;
        for r in routes {
            if let RouteNetlinkMessage::NewRoute(r) = r {
                if r.header.protocol == RouteProtocol::Other(self.protocol) {
                    self.socket.request(RouteNetlinkMessage::DelRoute(r), 0)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
