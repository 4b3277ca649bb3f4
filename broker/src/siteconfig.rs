//! The files a DMZ router needs, written by `site config`: a wg-quick
//! configuration, an nftables ruleset that cuts the DMZ off from the home
//! network, a dnsmasq configuration that announces the delegated prefix
//! and a DNS server on the DMZ LAN, and a systemd unit that brings all
//! three up at boot.
//!
//! The tunnel carries everything (AllowedIPs `::/0, 0.0.0.0/0`) in wg-quick's
//! own way: its default routes go in a table of their own, and WireGuard's
//! packets, which carry a firewall mark, keep to the main table. So the
//! endpoint is reached through whatever default route the router has now:
//! one with a gateway that DHCP may change, or a PPPoE link's `default dev
//! ppp0` without one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use sixgate_runtime::config::HostPort;

use crate::sites::Site;

/// The DMZ LAN's private IPv4 network by default (NAT'd into the tunnel
/// by the router).
pub const DEFAULT_DMZ4: &str = "10.77.0.0/24";

/// The name wg-quick gives the interface by default (the file is
/// `NAME.conf`).
pub const DEFAULT_INTERFACE: &str = "wg-sixgate";

/// The port management reaches the router on (SSH).
pub const MANAGEMENT_PORT: u16 = 22;

/// How the DMZ router is to be set up, as `site config` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterOptions {
    /// The router's home-side interface.
    pub uplink: String,
    /// Its DMZ LAN interface.
    pub lan: String,
    /// The WireGuard interface (and file) name.
    pub interface: String,
    /// The DMZ's IPv4 LAN; the router takes its first address.
    pub dmz4: Ipv4Net,
    /// DNS servers announced on the LAN; none: the router itself, which
    /// forwards to its own resolvers.
    pub dns: Vec<IpAddr>,
    /// Who may reach the router's management port from the home side;
    /// none: anyone on the home LAN.
    pub admin_from: Option<IpNet>,
}

impl RouterOptions {
    /// Checks what a command line gave.
    pub fn check(&self) -> Result<(), String> {
        for (what, name) in [
            ("--uplink", &self.uplink),
            ("--lan", &self.lan),
            ("--interface", &self.interface),
        ] {
            let ok = !name.is_empty()
                && name.len() <= 15
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(format!("{what} {name:?}: not an interface name"));
            }
        }
        if self.dmz4.prefix_len() > 29 {
            return Err(format!("--dmz4 {}: at least a /29", self.dmz4));
        }
        if self.dmz4.network() != self.dmz4.addr() {
            return Err(format!("--dmz4 {}: host bits set", self.dmz4));
        }
        Ok(())
    }
}

/// What the files depend on besides the site.
pub struct SiteFiles<'a> {
    /// The site.
    pub site: &'a Site,
    /// The broker's WireGuard public key (base64).
    pub broker_public_key: &'a str,
    /// Where the site connects to.
    pub endpoint: &'a HostPort,
    /// The transfer networks' prefix lengths (IPv6 is a /64).
    pub transfer4_length: u8,
    /// Seconds between keepalives.
    pub keepalive: u64,
    /// The router's side of things.
    pub router: &'a RouterOptions,
}

impl SiteFiles<'_> {
    fn lan6(&self) -> Ipv6Addr {
        // The first /64 of the delegated prefix is announced on the LAN.
        Ipv6Addr::from(u128::from(self.site.prefix) | 1)
    }

    fn lan4(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.router.dmz4.network()) + 1)
    }

    /// The servers the LAN is told of, by family.
    fn dns(&self) -> (Vec<Ipv6Addr>, Vec<Ipv4Addr>) {
        if self.router.dns.is_empty() {
            return (vec![self.lan6()], vec![self.lan4()]);
        }
        let v6 = self.router.dns.iter().filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        });
        let v4 = self.router.dns.iter().filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        });
        (v6.collect(), v4.collect())
    }

    /// `NAME.conf`, for wg-quick.
    pub fn wg_quick(&self) -> String {
        let s = self.site;
        let private = match &s.private_key {
            Some(k) => format!("PrivateKey = {k}"),
            None => format!(
                "# PrivateKey = <the private key of {}>: add it here\nPrivateKey =",
                s.public_key
            ),
        };
        let lan = &self.router.lan;
        let lan6 = self.lan6();
        let (lan4, lan4len) = (self.lan4(), self.router.dmz4.prefix_len());
        format!(
            r#"# sixgate site "{name}": {prefix} delegated over WireGuard from {endpoint}.
# On the DMZ router: nft -f dmz.nft, wg-quick up ./{interface}.conf, dnsmasq -C dnsmasq.conf
# (or sixgate-dmz.service, which does all three at boot).
[Interface]
{private}
Address = {t6}/64, {t4}/{t4len}
MTU = 1420
# All IPv4 and IPv6 goes through the tunnel, in wg-quick's table of its
# own; the tunnel's own packets take the router's default route, whatever
# it is now.
PostUp = ip -6 addr replace {lan6}/64 dev {lan} nodad
PostUp = ip -4 addr replace {lan4}/{lan4len} dev {lan}
PostUp = sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv4.ip_forward=1
PreDown = ip -4 addr del {lan4}/{lan4len} dev {lan}
PreDown = ip -6 addr del {lan6}/64 dev {lan}

[Peer]
PublicKey = {broker}
PresharedKey = {psk}
Endpoint = {endpoint}
AllowedIPs = ::/0, 0.0.0.0/0
PersistentKeepalive = {keepalive}
"#,
            name = s.name,
            prefix = s.prefix_text(),
            endpoint = self.endpoint,
            interface = self.router.interface,
            t6 = s.transfer6,
            t4 = s.transfer4,
            t4len = self.transfer4_length,
            broker = self.broker_public_key,
            psk = s.preshared_key,
            keepalive = self.keepalive,
        )
    }

    /// The management rule: from `--admin-from`, or from the home side.
    fn management(&self) -> String {
        let up = &self.router.uplink;
        let from = match self.router.admin_from {
            Some(IpNet::V4(n)) => format!("ip saddr {n} "),
            Some(IpNet::V6(n)) => format!("ip6 saddr {n} "),
            None => String::new(),
        };
        format!("iifname \"{up}\" {from}tcp dport {MANAGEMENT_PORT} accept")
    }

    /// `dmz.nft`: the DMZ may reach the internet through the tunnel and be
    /// reached from it; it may not reach the home network. The router
    /// itself may be managed from the home side, and sends home only the
    /// tunnel and its own DHCP, DNS and NTP (to the home router), and what
    /// PMTUD and neighbour discovery need.
    pub fn nftables(&self) -> String {
        let (lan, up, wg) = (
            &self.router.lan,
            &self.router.uplink,
            &self.router.interface,
        );
        let port = self.endpoint.port;
        let management = self.management();
        format!(
            r#"# sixgate site "{name}": DMZ isolation for the DMZ router. nft -f dmz.nft
table inet sixgate_dmz
delete table inet sixgate_dmz
table inet sixgate_dmz {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iif "lo" accept
        ct state established,related accept
        iifname "{lan}" accept
        {management}
        iifname "{up}" udp sport 67 udp dport 68 accept
        iifname "{up}" udp sport 547 udp dport 546 accept
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-router-solicit, packet-too-big, destination-unreachable, time-exceeded, parameter-problem, echo-request }} accept
        icmp type {{ destination-unreachable, time-exceeded, echo-request }} accept
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wg}" accept
        iifname "{wg}" oifname "{lan}" ip6 daddr {prefix} accept
        icmpv6 type {{ packet-too-big, destination-unreachable, time-exceeded, parameter-problem }} accept
        icmp type {{ destination-unreachable, time-exceeded }} accept
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname != "{up}" accept
        udp dport {port} accept
        udp dport {{ 53, 67, 123, 547 }} accept
        tcp dport 53 accept
        ct state established,related accept
        icmp type {{ destination-unreachable, time-exceeded }} accept
        icmpv6 type {{ packet-too-big, nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
        drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wg}" ip saddr {dmz4} masquerade
    }}
}}
"#,
            name = self.site.name,
            prefix = self.site.prefix_text(),
            dmz4 = self.router.dmz4,
        )
    }

    /// `dnsmasq.conf`: router advertisements of the delegated prefix
    /// (SLAAC, stateless DHCPv6) with the DNS servers (RDNSS), DHCPv4 for
    /// the private LAN with them (option 6), and DNS on the LAN forwarded
    /// to the router's own resolvers.
    pub fn dnsmasq(&self) -> String {
        let lan = &self.router.lan;
        let net = self.router.dmz4;
        let base = u32::from(net.network());
        let size = 1u32 << (32 - u32::from(net.prefix_len()));
        let (first, last) = (
            Ipv4Addr::from(base + size / 8),
            Ipv4Addr::from(base + size - 2),
        );
        let (dns6, dns4) = self.dns();
        let dns6: Vec<String> = dns6.iter().map(|a| format!("[{a}]")).collect();
        let dns4: Vec<String> = dns4.iter().map(Ipv4Addr::to_string).collect();
        let mut options = String::new();
        if !dns6.is_empty() {
            options.push_str(&format!(
                "dhcp-option=option6:dns-server,{}\n",
                dns6.join(",")
            ));
        }
        if !dns4.is_empty() {
            options.push_str(&format!(
                "dhcp-option=option:dns-server,{}\n",
                dns4.join(",")
            ));
        }
        format!(
            r#"# sixgate site "{name}": the DMZ LAN. dnsmasq -C dnsmasq.conf
interface={lan}
bind-interfaces
# DNS on the LAN only, forwarded to the router's resolvers (resolv.conf).
pid-file=/run/sixgate-dmz-dnsmasq.pid
enable-ra
dhcp-range=::,constructor:{lan},ra-stateless,64,1h
dhcp-range={first},{last},{mask},1h
dhcp-option=option:router,{router}
{options}"#,
            name = self.site.name,
            mask = net.netmask(),
            router = self.lan4(),
        )
    }

    /// `sixgate-dmz.service`: the three at boot, from /etc/sixgate/site.
    pub fn systemd_unit(&self) -> String {
        let wg = &self.router.interface;
        format!(
            r#"# sixgate site "{name}": copy this directory to /etc/sixgate/site and this
# file to /etc/systemd/system, then: systemctl enable --now sixgate-dmz
[Unit]
Description=sixgate DMZ site {name}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
# The isolation first, and it stays when the service stops.
ExecStartPre=/usr/sbin/nft -f /etc/sixgate/site/dmz.nft
ExecStartPre=/usr/bin/wg-quick up /etc/sixgate/site/{wg}.conf
ExecStart=/usr/sbin/dnsmasq -k -C /etc/sixgate/site/dnsmasq.conf
ExecStopPost=/usr/bin/wg-quick down /etc/sixgate/site/{wg}.conf
Restart=on-failure

[Install]
WantedBy=multi-user.target
"#,
            name = self.site.name,
        )
    }

    /// The files, by name.
    pub fn all(&self) -> Vec<(String, String)> {
        vec![
            (format!("{}.conf", self.router.interface), self.wg_quick()),
            ("dmz.nft".into(), self.nftables()),
            ("dnsmasq.conf".into(), self.dnsmasq()),
            ("sixgate-dmz.service".into(), self.systemd_unit()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_site() -> Site {
        Site {
            name: "home".into(),
            prefix: "2001:db8:1000:1::".parse().unwrap(),
            prefix_length: 64,
            transfer6: "2001:db8:1000::2".parse().unwrap(),
            transfer4: "192.168.3.2".parse().unwrap(),
            public_key: "x".into(),
            private_key: None,
            preshared_key: "y".into(),
            created: 0,
        }
    }

    fn router() -> RouterOptions {
        RouterOptions {
            uplink: "eth0".into(),
            lan: "eth1".into(),
            interface: DEFAULT_INTERFACE.into(),
            dmz4: DEFAULT_DMZ4.parse().unwrap(),
            dns: Vec::new(),
            admin_from: None,
        }
    }

    fn files_for(endpoint: &str, router: &RouterOptions) -> Vec<(String, String)> {
        let site = example_site();
        let endpoint = HostPort::parse(endpoint, Some(51820)).unwrap();
        let files = SiteFiles {
            site: &site,
            broker_public_key: "z",
            endpoint: &endpoint,
            transfer4_length: 24,
            keepalive: 25,
            router,
        };
        files.all()
    }

    fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
        &files.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn the_files_follow_the_router_options() {
        let files = files_for("[2001:db8::1]:4500", &router());
        let wg = file(&files, "wg-sixgate.conf");
        assert!(wg.contains("Endpoint = [2001:db8::1]:4500"), "{wg}");
        assert!(!wg.contains("Table = off"), "wg-quick's own table: {wg}");
        let nft = file(&files, "dmz.nft");
        assert!(
            nft.contains("iifname \"eth0\" tcp dport 22 accept"),
            "{nft}"
        );
        assert!(nft.contains("udp dport 4500 accept"), "{nft}");
        assert!(
            nft.contains("oifname \"wg-sixgate\" ip saddr 10.77.0.0/24 masquerade"),
            "{nft}"
        );
        let dnsmasq = file(&files, "dnsmasq.conf");
        assert!(!dnsmasq.contains("port=0"), "{dnsmasq}");
        assert!(
            dnsmasq.contains("dhcp-option=option:dns-server,10.77.0.1"),
            "{dnsmasq}"
        );
        assert!(
            dnsmasq.contains("dhcp-option=option6:dns-server,[2001:db8:1000:1::1]"),
            "{dnsmasq}"
        );
        assert!(
            dnsmasq.contains("dhcp-range=10.77.0.32,10.77.0.254,255.255.255.0,1h"),
            "{dnsmasq}"
        );

        let custom = RouterOptions {
            interface: "wg0".into(),
            dmz4: "192.168.50.0/26".parse().unwrap(),
            dns: vec![
                "2001:db8:ffff::53".parse().unwrap(),
                "192.0.2.53".parse().unwrap(),
            ],
            admin_from: Some("198.51.100.0/28".parse().unwrap()),
            ..router()
        };
        let files = files_for("vpn.example.org:51820", &custom);
        let nft = file(&files, "dmz.nft");
        assert!(
            nft.contains("iifname \"eth0\" ip saddr 198.51.100.0/28 tcp dport 22 accept"),
            "{nft}"
        );
        assert!(
            nft.contains("oifname \"wg0\" ip saddr 192.168.50.0/26 masquerade"),
            "{nft}"
        );
        let dnsmasq = file(&files, "dnsmasq.conf");
        assert!(
            dnsmasq.contains("option6:dns-server,[2001:db8:ffff::53]"),
            "{dnsmasq}"
        );
        assert!(
            dnsmasq.contains("option:dns-server,192.0.2.53\n"),
            "{dnsmasq}"
        );
        assert!(
            dnsmasq.contains("dhcp-option=option:router,192.168.50.1"),
            "{dnsmasq}"
        );
        assert!(file(&files, "sixgate-dmz.service").contains("/etc/sixgate/site/wg0.conf"));
        assert!(file(&files, "wg0.conf").contains("192.168.50.1/26 dev eth1"));
        for bad in [
            RouterOptions {
                interface: "a/b".into(),
                ..router()
            },
            RouterOptions {
                dmz4: "10.0.0.0/30".parse().unwrap(),
                ..router()
            },
            RouterOptions {
                dmz4: "10.0.0.1/24".parse().unwrap(),
                ..router()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
