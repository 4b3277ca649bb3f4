//! sixgate-dataplane: where the protocol meets Linux.
//!
//! [`udp`] runs a sans-I/O [`sixgate_proto::endpoint::Endpoint`] on real
//! UDP sockets (ports 500 and 4500), sorting port-4500 traffic into IKE and
//! ESP by the non-ESP marker. The ESP data planes (userspace over TUN, and
//! kernel XFRM) attach to it.
// Two unsafe blocks: `userspace` borrows the TUN device's descriptor, and
// `udp` sets UDP_ENCAP on the NAT-T socket (rustix has no such option).
#![deny(unsafe_code)]

pub mod control;
pub mod esp;
pub mod netconf;
pub mod netlink;
pub mod pki;
pub mod plane;
pub mod process;
pub mod rtnl;
pub mod secrets;
pub mod selectors;
pub mod udp;
pub mod userspace;
pub mod wireguard;
pub mod xfrm;
