//! Sysctls, nftables and the policy routing of DMZ sites.
//!
//! Site routes and rules go through iproute2 (`ip`, one invocation per
//! site change, never per packet); the tunnels' addresses and routes use
//! rtnetlink ([`crate::rtnl`]).

use std::io;
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

/// Deletes a link (a WireGuard device, on shutdown).
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
