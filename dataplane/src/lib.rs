//! sixgate-dataplane: the Linux side of sixgate, and nothing above it.
//!
//! [`udp`] binds the IKE and NAT-T sockets and sorts what arrives into IKE
//! (for the runtime's IKE task) and ESP (for the data plane). The ESP data
//! planes are [`userspace`] (ESP in UDP over a TUN device) and [`xfrm`]
//! (the kernel), behind one front, [`plane`]. Everything else the daemons
//! do to the system goes through here too: addresses, routes, rules and
//! links by rtnetlink ([`rtnl`]), WireGuard ([`wireguard`]), nftables
//! rulesets ([`nft`]), resolver settings ([`dns`]), and files that hold
//! secrets ([`secrets`]). Which of these to do, and when, is decided in
//! sixgate-runtime and the daemons.
// Four unsafe blocks: `tun`'s two ioctls (TUNSETIFF, TUNSETOFFLOAD) and
// its registration with tokio's reactor, and `udp` setting UDP_ENCAP on
// the NAT-T socket (rustix has neither option).
#![deny(unsafe_code)]

pub mod dns;
pub mod esp;
pub mod fuzzing;
pub mod netconf;
pub mod netlink;
pub mod nft;
pub mod offload;
pub mod plane;
pub mod rtnl;
pub mod secrets;
pub mod selectors;
pub mod tun;
pub mod udp;
pub mod userspace;
pub mod wireguard;
pub mod xfrm;

/// A fresh, empty directory for one unit test (removed by the test).
#[cfg(test)]
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sg{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}
