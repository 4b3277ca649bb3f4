//! nftables rulesets of sixgate's own, rendered here and loaded
//! atomically: every change replaces a whole table in one `nft -f -`
//! transaction (declare it, delete it, define it anew), so the kernel
//! never holds half a ruleset and a table left by a killed run is simply
//! replaced.

use std::io::{self, Write};
use std::process::{Command, Stdio};

/// An nftables table of sixgate's (`inet` family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table(pub &'static str);

/// The DMZ sites' table on the broker.
pub const SITES: Table = Table("sixgate_sites");

impl Table {
    /// Replaces the table with one of these chains (nft syntax, the
    /// contents of `table inet NAME { ... }`), atomically.
    pub fn replace(self, body: &str) -> io::Result<()> {
        load(&format!(
            "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n{body}}}\n",
            t = self.0
        ))
    }

    /// Removes the table (and nothing else); fine if it is not there.
    pub fn remove(self) -> io::Result<()> {
        load(&format!(
            "table inet {t}\ndelete table inet {t}\n",
            t = self.0
        ))
    }
}

/// Loads a ruleset as one transaction (`nft -f -`).
pub fn load(ruleset: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("nft: {e}")))?;
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

/// What the sites' forwarding rules depend on.
#[derive(Debug, Clone)]
pub struct SitesRules<'a> {
    /// The WireGuard interface.
    pub wireguard: &'a str,
    /// The broker's uplink.
    pub uplink: &'a str,
    /// The IPv6 sources sites may use: their prefixes and the transfer /64.
    pub sources6: &'a [String],
    /// The IPv4 transfer network (NAT'd out of the uplink).
    pub transfer4: &'a str,
}

impl SitesRules<'_> {
    /// The chains: MSS clamped to the route's MTU both ways, sites may
    /// only send from their own addresses and only out of the uplink (and
    /// the replies to what reached them come back), and their IPv4 is
    /// masqueraded out of the uplink.
    pub fn render(&self) -> String {
        let (wg, up, net4) = (self.wireguard, self.uplink, self.transfer4);
        let sources = self.sources6.join(", ");
        format!(
            r#"    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{wg}" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
        oifname "{wg}" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
        iifname "{wg}" ip6 saddr != {{ {sources} }} drop
        iifname "{wg}" ip saddr != {net4} drop
        iifname "{wg}" ct state established,related accept
        iifname "{wg}" oifname != "{up}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{up}" ip saddr {net4} masquerade
    }}
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sites_rules_name_what_they_guard() {
        let sources = vec![
            "2001:db8:1000:1::/64".to_string(),
            "2001:db8:1000::/64".to_string(),
        ];
        let r = SitesRules {
            wireguard: "sgwg0",
            uplink: "eth0",
            sources6: &sources,
            transfer4: "100.64.0.0/24",
        }
        .render();
        assert!(
            r.contains(
                r#"iifname "sgwg0" ip6 saddr != { 2001:db8:1000:1::/64, 2001:db8:1000::/64 } drop"#
            ),
            "{r}"
        );
        assert!(
            r.contains(r#"oifname "eth0" ip saddr 100.64.0.0/24 masquerade"#),
            "{r}"
        );
        assert!(r.contains("ct state established,related accept"), "{r}");
    }
}
