//! The files a DMZ router needs, written by `site config`: a wg-quick
//! configuration, an nftables ruleset that cuts the DMZ off from the home
//! network, and a dnsmasq configuration that announces the delegated
//! prefix on the DMZ LAN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sixgate_runtime::config::HostPort;

use crate::sites::Site;

/// The DMZ LAN's private IPv4 network (NAT'd into the tunnel by the router).
pub const LAN4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 24);

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
    /// The DMZ router's home-side interface.
    pub uplink: &'a str,
    /// The DMZ router's LAN interface.
    pub lan: &'a str,
}

/// The name wg-quick gives the interface for `wg-sixgate.conf`.
pub const WG_INTERFACE: &str = "wg-sixgate";

impl SiteFiles<'_> {
    fn lan6(&self) -> Ipv6Addr {
        // The first /64 of the delegated prefix is announced on the LAN.
        Ipv6Addr::from(u128::from(self.site.prefix) | 1)
    }

    /// The PostUp and PreDown lines that keep the tunnel's own packets on
    /// the router's original default route (no loop through the tunnel),
    /// for an endpoint of either family or a name (looked up as it comes
    /// up).
    fn endpoint_route(&self) -> (String, String) {
        let host = &self.endpoint.host;
        let (family, address, len) = match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => ("-4", a.to_string(), 32),
            Ok(IpAddr::V6(a)) => ("-6", a.to_string(), 128),
            Err(_) => (
                "-4",
                format!("$(getent ahostsv4 {host} | awk 'NR == 1 {{ print $1 }}')"),
                32,
            ),
        };
        (
            format!(
                "PostUp = ip {family} route replace {address}/{len} $(ip {family} route show default | grep -o 'via [^ ]* dev [^ ]*' | head -n 1)"
            ),
            format!("PreDown = ip {family} route del {address}/{len}"),
        )
    }

    /// The nftables match for packets to the endpoint.
    fn endpoint_match(&self) -> String {
        let port = self.endpoint.port;
        match self.endpoint.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => format!("ip daddr {a} udp dport {port}"),
            Ok(IpAddr::V6(a)) => format!("ip6 daddr {a} udp dport {port}"),
            // A name may resolve to any address: the port alone.
            Err(_) => format!("udp dport {port}"),
        }
    }

    /// `wg-sixgate.conf`.
    pub fn wg_quick(&self) -> String {
        let s = self.site;
        let (route_up, route_down) = self.endpoint_route();
        let private = match &s.private_key {
            Some(k) => format!("PrivateKey = {k}"),
            None => format!(
                "# PrivateKey = <the private key of {}>: add it here\nPrivateKey =",
                s.public_key
            ),
        };
        let lan = self.lan;
        let lan6 = self.lan6();
        let lan4 = Ipv4Addr::from(u32::from(LAN4.0) | 1);
        format!(
            r#"# sixgate site "{name}": {prefix} delegated over WireGuard from {endpoint}.
# On the DMZ router: wg-quick up ./wg-sixgate.conf, nft -f dmz.nft, dnsmasq -C dnsmasq.conf
[Interface]
{private}
Address = {t6}/64, {t4}/{t4len}
MTU = 1420
Table = off
# The tunnel endpoint keeps going through the router's own gateway (no loop),
# then all IPv4 and IPv6 goes through the tunnel, beside (not instead of)
# the original default route.
{route_up}
PostUp = ip -4 route replace 0.0.0.0/1 dev %i
PostUp = ip -4 route replace 128.0.0.0/1 dev %i
PostUp = ip -6 route replace ::/1 dev %i
PostUp = ip -6 route replace 8000::/1 dev %i
PostUp = ip -6 addr replace {lan6}/64 dev {lan} nodad
PostUp = ip -4 addr replace {lan4}/{lan4len} dev {lan}
PostUp = sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv4.ip_forward=1
PreDown = ip -4 addr del {lan4}/{lan4len} dev {lan}
PreDown = ip -6 addr del {lan6}/64 dev {lan}
PreDown = ip -6 route del 8000::/1 dev %i
PreDown = ip -6 route del ::/1 dev %i
PreDown = ip -4 route del 128.0.0.0/1 dev %i
PreDown = ip -4 route del 0.0.0.0/1 dev %i
{route_down}

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
            t6 = s.transfer6,
            t4 = s.transfer4,
            t4len = self.transfer4_length,
            lan4len = LAN4.1,
            broker = self.broker_public_key,
            psk = s.preshared_key,
            keepalive = self.keepalive,
        )
    }

    /// `dmz.nft`: the DMZ may reach the internet through the tunnel and be
    /// reached from it; it may not reach the home network, and the router
    /// itself sends nothing home but the tunnel and what PMTUD and
    /// neighbour discovery need.
    pub fn nftables(&self) -> String {
        let to_endpoint = self.endpoint_match();
        let (lan, up, wg) = (self.lan, self.uplink, WG_INTERFACE);
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
        {to_endpoint} accept
        ct state established,related accept
        icmp type {{ destination-unreachable, time-exceeded }} accept
        icmpv6 type {{ packet-too-big, nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
        drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wg}" ip saddr {lan4}/{lan4len} masquerade
    }}
}}
"#,
            name = self.site.name,
            prefix = self.site.prefix_text(),
            lan4 = LAN4.0,
            lan4len = LAN4.1,
        )
    }

    /// `dnsmasq.conf`: router advertisements of the delegated prefix
    /// (SLAAC, stateless DHCPv6) and DHCPv4 for the private LAN.
    pub fn dnsmasq(&self) -> String {
        let lan = self.lan;
        let base = u32::from(LAN4.0);
        format!(
            r#"# sixgate site "{name}": the DMZ LAN. dnsmasq -C dnsmasq.conf
interface={lan}
bind-interfaces
# No DNS service here: only router advertisements and DHCP.
port=0
enable-ra
dhcp-range=::,constructor:{lan},ra-stateless,64,1h
dhcp-range={first},{last},255.255.255.0,1h
dhcp-option=option:router,{router}
"#,
            name = self.site.name,
            first = Ipv4Addr::from(base + 10),
            last = Ipv4Addr::from(base + 200),
            router = Ipv4Addr::from(base + 1),
        )
    }

    /// The three files, by name.
    pub fn all(&self) -> Vec<(String, String)> {
        vec![
            ("wg-sixgate.conf".into(), self.wg_quick()),
            ("dmz.nft".into(), self.nftables()),
            ("dnsmasq.conf".into(), self.dnsmasq()),
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

    fn files_for(endpoint: &str) -> (String, String) {
        let site = example_site();
        let endpoint = HostPort::parse(endpoint, Some(51820)).unwrap();
        let files = SiteFiles {
            site: &site,
            broker_public_key: "z",
            endpoint: &endpoint,
            transfer4_length: 24,
            keepalive: 25,
            uplink: "eth0",
            lan: "eth1",
        };
        (files.wg_quick(), files.nftables())
    }

    #[test]
    fn the_endpoint_is_written_for_its_family() {
        let (wg, nft) = files_for("192.0.2.1:51820");
        assert!(
            nft.contains("ip daddr 192.0.2.1 udp dport 51820 accept"),
            "{nft}"
        );
        assert!(
            wg.contains("PostUp = ip -4 route replace 192.0.2.1/32 $(ip -4 route"),
            "{wg}"
        );
        assert!(wg.contains("Endpoint = 192.0.2.1:51820"), "{wg}");

        let (wg, nft) = files_for("[2001:db8::1]:4500");
        assert!(
            nft.contains("ip6 daddr 2001:db8::1 udp dport 4500 accept"),
            "{nft}"
        );
        assert!(
            !nft.contains("ip daddr [") && !nft.contains("ip daddr 2001"),
            "{nft}"
        );
        assert!(
            wg.contains("PostUp = ip -6 route replace 2001:db8::1/128 $(ip -6 route"),
            "{wg}"
        );
        assert!(
            wg.contains("PreDown = ip -6 route del 2001:db8::1/128"),
            "{wg}"
        );
        assert!(wg.contains("Endpoint = [2001:db8::1]:4500"), "{wg}");

        let (wg, nft) = files_for("vpn.example.org:51820");
        assert!(nft.contains("\n        udp dport 51820 accept"), "{nft}");
        assert!(wg.contains("getent ahostsv4 vpn.example.org"), "{wg}");
    }
}
