//! The data plane a daemon runs, whichever backend does the ESP: the
//! daemons install and remove Child SAs, read counters and place
//! addresses and routes through this one type.
//!
//! - Userspace: ESP in UDP over a TUN device ([`crate::userspace`]);
//!   addresses and routes go on the TUN device.
//! - Kernel XFRM ([`crate::xfrm`]): route-based where the kernel has XFRM
//!   interfaces (an `xfrm` link whose if_id the states and policies carry;
//!   addresses and routes go on it, so they work even where the uplink
//!   has no IPv6), policy-based on the uplink otherwise. With UDP
//!   encapsulation the NAT-T socket hands ESP to the kernel
//!   (`UDP_ENCAP_ESPINUDP`) and this module sends the NAT keepalives.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use sixgate_proto::endpoint::{ChildSa, SaId};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::rtnl::Rtnl;
use crate::udp::{self, EspHandler};
use crate::userspace::{PeerMoved, SaCounters, Userspace};
pub use crate::xfrm::msg::Limits;
use crate::xfrm::{KernelEvent, Owner, Xfrm, XfrmConfig};

/// What a kernel event asks of the IKE engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelAction {
    /// Rekey this Child SA (IKE SA, inbound SPI).
    Rekey(SaId, u32),
    /// Authenticated ESP came from a new address.
    PeerMoved(PeerMoved),
}

/// Which backend, and its settings.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// Which daemon: what it installs in the kernel is tagged apart.
    pub owner: Owner,
    /// Kernel XFRM instead of userspace ESP.
    pub kernel: bool,
    /// The TUN device (userspace) or XFRM interface (kernel) to create.
    pub device: String,
    /// Its MTU.
    pub mtu: u16,
    /// Kernel only: use an XFRM interface if the kernel has them.
    pub route_based: bool,
    /// Kernel only: byte and time limits of each SA.
    pub limits: Limits,
    /// Our outer address (policy-based mode puts addresses and routes on
    /// the link that holds it).
    pub local: IpAddr,
    /// A link on which each routed client address is answered for by
    /// proxy neighbour discovery (a pool inside an on-link /64).
    pub proxy_ndp: Option<String>,
}

enum Backend {
    Userspace(Userspace),
    Xfrm(Arc<Xfrm>),
}

/// A running data plane.
pub struct DataPlane {
    backend: Backend,
    /// Where inner addresses and routes go.
    link: String,
    link_index: u32,
    /// Whether `link` is ours to delete at the end.
    owns_link: bool,
    /// The link whose neighbours' solicitations for client addresses we
    /// answer, by index.
    proxy_ndp: Option<u32>,
    rtnl: Mutex<Rtnl>,
}

impl DataPlane {
    /// Starts the backend. `nat_t` is the NAT-T socket (port 4500) that
    /// ESP in UDP arrives on and is sent from. Kernel events, for the
    /// kernel backend, arrive on the returned channel.
    pub fn start(
        config: &PlaneConfig,
        nat_t: Arc<UdpSocket>,
    ) -> Result<(DataPlane, Option<mpsc::UnboundedReceiver<KernelEvent>>), String> {
        let owner = config.owner;
        let mut rtnl = Rtnl::open(owner.route_protocol()).map_err(|e| format!("rtnetlink: {e}"))?;
        if config.kernel {
            crate::xfrm::check_kernel(owner).map_err(|e| e.to_string())?;
            udp::enable_kernel_espinudp(&nat_t)
                .map_err(|e| format!("UDP_ENCAP on the NAT-T socket: {e}"))?;
        }
        // What a run that was killed left behind, whichever backend it
        // had: its SAs and policies first, then the routes that pointed
        // into them. (Best effort for userspace, whose kernel may not do
        // XFRM at all.)
        let stale = match crate::xfrm::remove_leftovers(owner) {
            Ok(n) => n,
            Err(e) if config.kernel => return Err(format!("removing old XFRM state: {e}")),
            Err(_) => 0,
        };
        let routes = rtnl.flush_own_routes().unwrap_or_else(|e| {
            tracing::warn!("removing old routes: {e}");
            0
        });
        let proxies = flush_proxy_neighbours(&mut rtnl);
        let routes = routes + proxies;
        let proxy_ndp = match &config.proxy_ndp {
            Some(name) => Some(
                rtnl.link_index(name)
                    .map_err(|e| format!("pool.proxy_ndp {name}: {e}"))?,
            ),
            None => None,
        };
        if stale + routes > 0 {
            tracing::info!(
                "removed {stale} SAs and policies and {routes} routes of an earlier run"
            );
        }
        if !config.kernel {
            let dp =
                Userspace::start(&config.device, config.mtu, nat_t).map_err(|e| e.to_string())?;
            let index = rtnl
                .link_index(&config.device)
                .map_err(|e| format!("{}: {e}", config.device))?;
            return Ok((
                DataPlane {
                    backend: Backend::Userspace(dp),
                    link: config.device.clone(),
                    link_index: index,
                    owns_link: true,
                    proxy_ndp,
                    rtnl: Mutex::new(rtnl),
                },
                None,
            ));
        }
        let mut if_id = None;
        let (link, link_index, owns_link) = match config
            .route_based
            .then(|| rtnl.ensure_xfrm_link(&config.device, owner.if_id()))
        {
            Some(Ok(index)) => {
                if_id = Some(owner.if_id());
                (config.device.clone(), index, true)
            }
            // A name clash is the operator's to settle, not a reason to
            // run in another mode.
            Some(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(format!("dataplane.tun: {e}"));
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(
                        "no XFRM interface ({e}); using policy-based IPsec on the uplink"
                    );
                }
                let index = rtnl
                    .link_with_address(config.local)
                    .map_err(|e| format!("the uplink: {e}"))?;
                let name = rtnl
                    .link_name(index)
                    .unwrap_or_else(|_| format!("link {index}"));
                // Policy-based, the inner addresses and routes sit on the
                // uplink, which the kernel refuses while IPv6 is off there.
                let off = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
                if std::fs::read_to_string(&off).is_ok_and(|v| v.trim() == "1") {
                    return Err(format!(
                        "policy-based IPsec needs IPv6 on the uplink {name} (link-local is \
                         enough): it is disabled ({off}); enable it, or use a kernel with \
                         XFRM interfaces (route_based = true)"
                    ));
                }
                (name, index, false)
            }
        };
        let xfrm_config = XfrmConfig {
            owner,
            if_id,
            limits: config.limits,
            replay_window: 1024,
        };
        let (xfrm, events) = match Xfrm::open(xfrm_config) {
            Ok(x) => x,
            Err(e) => {
                if owns_link {
                    let _ = rtnl.delete_link(&link);
                }
                return Err(e.to_string());
            }
        };
        let xfrm = Arc::new(xfrm);
        let weak = Arc::downgrade(&xfrm);
        tokio::spawn(udp::keepalive_loop(nat_t, move || {
            weak.upgrade().map(|x| x.encapsulated_peers())
        }));
        Ok((
            DataPlane {
                backend: Backend::Xfrm(xfrm),
                link,
                link_index,
                owns_link,
                proxy_ndp,
                rtnl: Mutex::new(rtnl),
            },
            Some(events),
        ))
    }

    fn rtnl(&self) -> MutexGuard<'_, Rtnl> {
        self.rtnl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves a Child SA to the outer addresses it now has (a NAT's new
    /// mapping, MOBIKE): the userspace plane sends to the new address from
    /// the next packet; the kernel's states are added again there with
    /// their counters.
    pub fn move_child(&self, child: &ChildSa) -> io::Result<()> {
        match &self.backend {
            Backend::Userspace(u) => u.move_child(child),
            Backend::Xfrm(x) => x.move_child(child),
        }
    }

    /// Authenticated ESP from addresses that are not the peers' (userspace;
    /// the kernel's come as [`KernelEvent::Mapping`]).
    pub fn peer_moves(&self) -> Option<mpsc::UnboundedReceiver<PeerMoved>> {
        match &self.backend {
            Backend::Userspace(u) => Some(u.peer_moves()),
            Backend::Xfrm(_) => None,
        }
    }

    /// The ESP receive path to attach to the UDP driver (userspace only;
    /// the kernel takes its ESP itself).
    pub fn esp_handler(&self) -> Option<Arc<dyn EspHandler>> {
        match &self.backend {
            Backend::Userspace(u) => Some(u.esp_handler()),
            Backend::Xfrm(_) => None,
        }
    }

    /// Whether every Child SA must use UDP encapsulation (the userspace
    /// plane has no raw ESP socket).
    pub fn forces_udp_encapsulation(&self) -> bool {
        matches!(self.backend, Backend::Userspace(_))
    }

    /// How decrypted traffic from the peers enters the stack, for the
    /// firewall rules that confine it.
    pub fn ingress(&self) -> crate::nft::Ingress {
        if self.owns_link {
            crate::nft::Ingress::Interface(self.link.clone())
        } else {
            crate::nft::Ingress::Decrypted
        }
    }

    /// Decrypted packets the kernel dropped because no inbound policy
    /// allows them (kernel plane: a source outside the SA's selectors, a
    /// family it does not carry), from this namespace's
    /// /proc/net/xfrm_stat; `None` for the userspace plane, which counts
    /// them per SA instead.
    pub fn kernel_policy_drops(&self) -> Option<u64> {
        match &self.backend {
            Backend::Userspace(_) => None,
            Backend::Xfrm(_) => std::fs::read_to_string("/proc/net/xfrm_stat")
                .ok()
                .map(|text| crate::xfrm::policy_drops(&text)),
        }
    }

    /// A short description for the start-up line.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Userspace(_) => format!("userspace ESP on TUN {}", self.link),
            Backend::Xfrm(_) if self.owns_link => {
                format!("kernel XFRM on interface {}", self.link)
            }
            Backend::Xfrm(_) => format!("kernel XFRM, policy-based on {}", self.link),
        }
    }

    /// Installs both directions of a Child SA.
    pub fn install(&self, child: &ChildSa) -> io::Result<()> {
        match &self.backend {
            Backend::Userspace(u) => u.install(child),
            Backend::Xfrm(x) => x.install(child),
        }
    }

    /// Removes a Child SA, by inbound SPI.
    pub fn remove(&self, inbound_spi: u32) {
        match &self.backend {
            Backend::Userspace(u) => u.remove(inbound_spi),
            Backend::Xfrm(x) => x.remove(inbound_spi),
        }
    }

    /// Removes a Child SA and returns its last counters, so totals can
    /// outlive rekeys.
    pub fn retire(&self, inbound_spi: u32) -> SaCounters {
        let last = self.counters(inbound_spi).unwrap_or_default();
        self.remove(inbound_spi);
        last
    }

    /// The traffic of a connection: what its retired Child SAs carried
    /// (from [`DataPlane::retire`]) plus its live ones, by inbound SPI.
    pub fn totals(&self, retired: SaCounters, live: impl IntoIterator<Item = u32>) -> SaCounters {
        let mut total = retired;
        for spi in live {
            if let Some(c) = self.counters(spi) {
                total.absorb(c);
            }
        }
        total
    }

    /// The traffic counters of a Child SA (the kernel's, for XFRM).
    pub fn counters(&self, inbound_spi: u32) -> Option<SaCounters> {
        match &self.backend {
            Backend::Userspace(u) => u.counters(inbound_spi),
            Backend::Xfrm(x) => x.counters(inbound_spi),
        }
    }

    /// What a kernel event asks of the IKE engine: a rekey of a Child SA
    /// (IKE SA, inbound SPI) when one of its SAs reaches a soft limit;
    /// also at a hard one, where the kernel has already dropped the SA,
    /// and at an acquire, where traffic found its policy without SAs (the
    /// rekey puts fresh SAs in place and deletes the old ones with the
    /// peer); or, at a NAT-T mapping, a look at whether the SA follows its
    /// peer to the new address.
    pub fn on_kernel_event(&self, event: KernelEvent) -> Option<KernelAction> {
        let Backend::Xfrm(x) = &self.backend else {
            return None;
        };
        let (ike_sa, inbound_spi) = x.child_for(&event)?;
        match event {
            KernelEvent::Expire {
                spi, hard: true, ..
            } => tracing::warn!("the kernel dropped SA {spi:08x} at its hard limit; rekeying"),
            KernelEvent::Expire { spi, .. } => {
                tracing::info!("SA {spi:08x} reached its soft limit; rekeying")
            }
            KernelEvent::Acquire { dst, .. } => {
                tracing::info!("traffic to {dst} has no SA; rekeying")
            }
            KernelEvent::Mapping { new, .. } => {
                return Some(KernelAction::PeerMoved(PeerMoved {
                    ike_sa,
                    remote: new,
                }))
            }
        }
        Some(KernelAction::Rekey(ike_sa, inbound_spi))
    }

    /// Routes `addr`/128 into the tunnel (the broker, per client).
    pub fn add_host_route(&self, addr: Ipv6Addr) -> io::Result<()> {
        let mut rtnl = self.rtnl();
        rtnl.add_route(addr, 128, self.link_index, None)?;
        match self.proxy_ndp {
            Some(link) => rtnl.add_proxy_neighbour(link, addr),
            None => Ok(()),
        }
    }

    /// Removes a route added by [`DataPlane::add_host_route`].
    pub fn delete_host_route(&self, addr: Ipv6Addr) -> io::Result<()> {
        let mut rtnl = self.rtnl();
        if let Some(link) = self.proxy_ndp {
            rtnl.delete_proxy_neighbour(link, addr)?;
        }
        rtnl.delete_route(addr, 128, self.link_index)
    }

    /// Puts the client's virtual address in place, and the default route
    /// into the tunnel with it as source.
    pub fn set_virtual_address(&self, addr: Ipv6Addr) -> io::Result<()> {
        let mut rtnl = self.rtnl();
        rtnl.add_address(self.link_index, addr)?;
        rtnl.add_route(Ipv6Addr::UNSPECIFIED, 0, self.link_index, Some(addr))
    }

    /// Removes what [`DataPlane::set_virtual_address`] added.
    pub fn clear_virtual_address(&self, addr: Ipv6Addr) {
        let mut rtnl = self.rtnl();
        let _ = rtnl.delete_route(Ipv6Addr::UNSPECIFIED, 0, self.link_index);
        let _ = rtnl.delete_address(self.link_index, addr);
    }

    /// Removes every SA, policy, route and device this plane installed.
    pub fn stop(&self) {
        if let Backend::Xfrm(x) = &self.backend {
            x.remove_all();
        }
        let mut rtnl = self.rtnl();
        let _ = rtnl.flush_own_routes();
        flush_proxy_neighbours(&mut rtnl);
        if self.owns_link {
            let _ = rtnl.delete_link(&self.link);
        }
    }
}

/// Removes the proxy neighbour entries we added (at a stop, and those a
/// killed daemon left); returns how many.
fn flush_proxy_neighbours(rtnl: &mut Rtnl) -> usize {
    let entries = rtnl.own_proxy_neighbours().unwrap_or_else(|e| {
        tracing::warn!("listing proxy neighbours: {e}");
        Vec::new()
    });
    entries
        .iter()
        .filter(|(link, addr)| rtnl.delete_proxy_neighbour(*link, *addr).is_ok())
        .count()
}

/// The next kernel event, or never (the userspace backend has none).
pub async fn next_kernel_event(
    events: &mut Option<mpsc::UnboundedReceiver<KernelEvent>>,
) -> Option<KernelEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
