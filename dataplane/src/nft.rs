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
/// The road warriors' table on the broker.
pub const ROAD_WARRIORS: Table = Table("sixgate_rw");

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
    /// The broker's IPv4 upstream interface (the NAT goes out of it).
    pub uplink4: &'a str,
    /// Its IPv6 upstream interface (the same one on most hosts).
    pub uplink6: &'a str,
    /// The IPv6 sources sites may use: their prefixes and the transfer /64.
    pub sources6: &'a [String],
    /// The IPv4 transfer network (NAT'd out of the uplink).
    pub transfer4: &'a str,
    /// The road warriors' pool, if the broker has one: sites may reach
    /// its clients (they are hosts on the internet like any other).
    pub road_warriors: Option<&'a str>,
}

impl SitesRules<'_> {
    /// The chains: MSS clamped to the route's MTU both ways, sites may
    /// only send from their own addresses and only out of the uplink or
    /// to the road warriors (and the replies to what reached them come
    /// back), and their IPv4 is masqueraded out of the uplink.
    pub fn render(&self) -> String {
        let (wg, up4, up6, net4) = (self.wireguard, self.uplink4, self.uplink6, self.transfer4);
        let sources = self.sources6.join(", ");
        let to_road_warriors = self.road_warriors.map_or_else(String::new, |pool| {
            format!("        iifname \"{wg}\" ip6 daddr {pool} accept\n")
        });
        format!(
            r#"    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{wg}" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
        oifname "{wg}" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
        iifname "{wg}" ip6 saddr != {{ {sources} }} drop
        iifname "{wg}" ip saddr != {net4} drop
        iifname "{wg}" ct state established,related accept
{to_road_warriors}        iifname "{wg}" meta nfproto ipv6 oifname != "{up6}" drop
        iifname "{wg}" meta nfproto ipv4 oifname != "{up4}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{up4}" ip saddr {net4} masquerade
    }}
"#
        )
    }
}

/// How decrypted road-warrior traffic enters the broker's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingress {
    /// Through an interface of its own (the TUN device, or an XFRM
    /// interface).
    Interface(String),
    /// Policy-based IPsec: on the uplink, marked as having been decrypted.
    Decrypted,
}

/// A service on the broker itself that road warriors may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    /// The port.
    pub port: u16,
}

impl std::str::FromStr for Service {
    type Err = String;
    /// `udp/53`, `tcp/22`.
    fn from_str(text: &str) -> Result<Service, String> {
        let (protocol, port) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not PROTOCOL/PORT (e.g. udp/53)"))?;
        let protocol = match protocol {
            "udp" => "udp",
            "tcp" => "tcp",
            other => return Err(format!("`{other}` is not udp or tcp")),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{port}` is not a port"))?;
        Ok(Service { protocol, port })
    }
}

/// What road warriors may do on and through the broker.
#[derive(Debug, Clone)]
pub struct RoadWarriorRules<'a> {
    /// How their traffic arrives.
    pub ingress: &'a Ingress,
    /// The pool their addresses come from.
    pub pool: &'a str,
    /// The broker's services they may use (ICMPv6 always).
    pub services: &'a [Service],
    /// Whether they may reach each other.
    pub client_to_client: bool,
}

impl RoadWarriorRules<'_> {
    /// The chains. Whatever comes from a road warrior must be IPv6 from
    /// the pool, checked as it arrives (a second check behind the data
    /// plane's own, and the only one the kernel path has for IPv4); to
    /// the broker itself it may send ICMPv6, the listed services and
    /// replies; through it, anything but traffic to other road warriors,
    /// unless allowed. Each drop is counted ([`dropped_packets`]).
    pub fn render(&self) -> String {
        let from = match self.ingress {
            Ingress::Interface(name) => format!("iifname \"{name}\""),
            Ingress::Decrypted => "meta ipsec exists".to_string(),
        };
        let pool = self.pool;
        let services: String = self
            .services
            .iter()
            .map(|s| format!("        {from} {} dport {} accept\n", s.protocol, s.port))
            .collect();
        let peers = if self.client_to_client {
            "accept"
        } else {
            "counter drop"
        };
        format!(
            r#"    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        {from} meta nfproto ipv4 counter drop
        {from} ip6 saddr != {pool} counter drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        {from} meta l4proto ipv6-icmp accept
        {from} ct state established,related accept
{services}        {from} counter drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        {from} ip6 daddr {pool} {peers}
    }}
"#
        )
    }
}

/// The packets a table's counted `drop` rules have dropped, as `nft list
/// table` prints them.
pub fn dropped_packets(table: Table) -> io::Result<u64> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", table.0])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(counted_packets(&String::from_utf8_lossy(&out.stdout)))
}

/// The sum of `packets N` over the `counter ... drop` rules of a listing.
fn counted_packets(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.trim_end().ends_with("drop"))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "packets")?;
            words.get(i + 1)?.parse::<u64>().ok()
        })
        .sum()
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
            uplink4: "eth0",
            uplink6: "eth1",
            sources6: &sources,
            transfer4: "100.64.0.0/24",
            road_warriors: Some("2001:db8:100::/64"),
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
        assert!(
            r.contains(r#"iifname "sgwg0" meta nfproto ipv6 oifname != "eth1" drop"#)
                && r.contains(r#"iifname "sgwg0" meta nfproto ipv4 oifname != "eth0" drop"#),
            "{r}"
        );
        assert!(r.contains("ct state established,related accept"), "{r}");
        let to_rw = r
            .find(r#"iifname "sgwg0" ip6 daddr 2001:db8:100::/64 accept"#)
            .expect("sites reach the road warriors");
        assert!(to_rw < r.find(r#"oifname != "eth0" drop"#).unwrap(), "{r}");
    }

    #[test]
    fn road_warriors_are_confined_as_configured() {
        let services = ["udp/53".parse().unwrap(), "tcp/853".parse().unwrap()];
        let tun = Ingress::Interface("sgb0".into());
        let r = RoadWarriorRules {
            ingress: &tun,
            pool: "2001:db8:100::/64",
            services: &services,
            client_to_client: false,
        }
        .render();
        for line in [
            r#"iifname "sgb0" ip6 saddr != 2001:db8:100::/64 counter drop"#,
            r#"iifname "sgb0" udp dport 53 accept"#,
            r#"iifname "sgb0" tcp dport 853 accept"#,
            r#"iifname "sgb0" ip6 daddr 2001:db8:100::/64 counter drop"#,
        ] {
            assert!(r.contains(line), "{line}\n{r}");
        }
        let r = RoadWarriorRules {
            ingress: &Ingress::Decrypted,
            pool: "2001:db8:100::/64",
            services: &[],
            client_to_client: true,
        }
        .render();
        assert!(
            r.contains("meta ipsec exists ip6 daddr 2001:db8:100::/64 accept"),
            "{r}"
        );
        assert!(!r.contains("dport"), "no services: {r}");
        let listing = "\t\tiifname \"sgb0\" meta nfproto ipv4 counter packets 2 bytes 56 drop\n\
                       \t\tiifname \"sgb0\" ip6 saddr != 2001:db8:100::/64 counter packets 3 bytes 9 drop\n\
                       \t\tiifname \"sgb0\" tcp dport 53 accept\n";
        assert_eq!(counted_packets(listing), 5);
        for bad in ["udp", "udp/", "udp/0", "sctp/9", "udp/70000"] {
            assert!(bad.parse::<Service>().is_err(), "{bad}");
        }
    }
}
