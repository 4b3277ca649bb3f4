//! Sysctls the daemons need: forwarding, without losing router
//! advertisements on interfaces that take them, and proxy NDP.

use std::io;

/// Turns on proxy neighbour discovery on `link` (needed for its proxy
/// entries to be answered).
pub fn enable_proxy_ndp(link: &str) -> io::Result<()> {
    if link.contains('/') || link.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{link}/proxy_ndp"), "1")
}

/// Turns on IPv6 forwarding without losing router advertisements on
/// interfaces that take them (accept_ra = 2 where it was 1).
pub fn enable_ipv6_forwarding() -> io::Result<()> {
    for entry in std::fs::read_dir("/proc/sys/net/ipv6/conf")? {
        let path = entry?.path().join("accept_ra");
        if std::fs::read_to_string(&path)
            .map(|v| v.trim() == "1")
            .unwrap_or(false)
        {
            std::fs::write(&path, "2")?;
        }
    }
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
}

/// Turns on IPv4 forwarding (for NAT of sites' IPv4).
pub fn enable_ipv4_forwarding() -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
}
