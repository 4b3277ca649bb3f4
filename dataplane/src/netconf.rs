//! Addresses, routes and sysctls for the tunnel devices.
//!
//! This goes through iproute2 for now (one `ip` invocation per change,
//! only on SA up/down, never per packet); the rtnetlink implementation the
//! kernel XFRM backend needs will replace it.

use std::io;
use std::net::Ipv6Addr;
use std::process::Command;

/// Runs `ip` with these arguments.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Adds `addr`/128 to `dev` with valid and preferred lifetime forever
/// (never "deprecated", so source address selection prefers it) and
/// without duplicate address detection.
pub fn add_address(dev: &str, addr: Ipv6Addr) -> io::Result<()> {
    let a = format!("{addr}/128");
    ip(&[
        "-6",
        "addr",
        "replace",
        &a,
        "dev",
        dev,
        "nodad",
        "valid_lft",
        "forever",
        "preferred_lft",
        "forever",
    ])
}

/// Removes `addr`/128 from `dev`.
pub fn del_address(dev: &str, addr: Ipv6Addr) -> io::Result<()> {
    ip(&["-6", "addr", "del", &format!("{addr}/128"), "dev", dev])
}

/// Routes `dst` (a prefix such as "::/0" or "2001:db8::1/128") into `dev`,
/// with `src` as the preferred source address if given.
pub fn add_route(dst: &str, dev: &str, src: Option<Ipv6Addr>) -> io::Result<()> {
    let src = src.map(|s| s.to_string());
    let mut args = vec!["-6", "route", "replace", dst, "dev", dev];
    if let Some(s) = &src {
        args.extend(["src", s.as_str()]);
    }
    ip(&args)
}

/// Removes a route added by [`add_route`].
pub fn del_route(dst: &str, dev: &str) -> io::Result<()> {
    ip(&["-6", "route", "del", dst, "dev", dev])
}

/// Deletes a link (the TUN device, on shutdown).
pub fn del_link(dev: &str) -> io::Result<()> {
    ip(&["link", "del", dev])
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

/// Applies an nftables ruleset (`nft -f -`).
pub fn nft(ruleset: &str) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Turns on IPv4 forwarding (for NAT of sites' IPv4).
pub fn enable_ipv4_forwarding() -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
}
