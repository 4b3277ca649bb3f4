//! What the runtime needs of a data plane, as a trait: the two real ones
//! (userspace ESP over TUN and kernel XFRM, both behind
//! [`sixgate_dataplane::plane::DataPlane`]) implement it, and so do the
//! planes of tests (a slow installer, one that fails) and of a pure IKE
//! peer that installs nothing.

use std::io;
use std::net::Ipv6Addr;
use std::sync::Arc;

use sixgate_dataplane::plane::DataPlane;
use sixgate_dataplane::userspace::SaCounters;
use sixgate_dataplane::xfrm::KernelEvent;
use sixgate_proto::endpoint::ChildSa;
use tokio::sync::mpsc;

use crate::engine::KernelEvents;

/// A data plane, as the runtime drives it.
pub trait Plane: Send + Sync {
    /// Installs both directions of a Child SA.
    fn install(&self, child: &ChildSa) -> io::Result<()>;
    /// Removes a Child SA, by inbound SPI.
    fn remove(&self, inbound_spi: u32);
    /// Moves a Child SA to the outer addresses it now has. A plane that
    /// carries no traffic has nothing to move.
    fn move_child(&self, _child: &ChildSa) -> io::Result<()> {
        Ok(())
    }
    /// A Child SA's traffic so far (none, for a plane that carries none).
    fn counters(&self, _inbound_spi: u32) -> Option<SaCounters> {
        None
    }
    /// Routes a client's address into the tunnel (the broker). A plane
    /// that carries no traffic routes nothing.
    fn add_host_route(&self, _addr: Ipv6Addr) -> io::Result<()> {
        Ok(())
    }
    /// Removes what [`Plane::add_host_route`] added.
    fn delete_host_route(&self, _addr: Ipv6Addr) -> io::Result<()> {
        Ok(())
    }
    /// Puts our virtual address and the default route through the tunnel
    /// in place (the client).
    fn set_virtual_address(&self, _addr: Ipv6Addr) -> io::Result<()> {
        Ok(())
    }
    /// Removes what [`Plane::set_virtual_address`] added.
    fn clear_virtual_address(&self, _addr: Ipv6Addr) {}
}

impl Plane for DataPlane {
    fn install(&self, child: &ChildSa) -> io::Result<()> {
        DataPlane::install(self, child)
    }
    fn remove(&self, inbound_spi: u32) {
        DataPlane::remove(self, inbound_spi)
    }
    fn move_child(&self, child: &ChildSa) -> io::Result<()> {
        DataPlane::move_child(self, child)
    }
    fn counters(&self, inbound_spi: u32) -> Option<SaCounters> {
        DataPlane::counters(self, inbound_spi)
    }
    fn add_host_route(&self, addr: Ipv6Addr) -> io::Result<()> {
        DataPlane::add_host_route(self, addr)
    }
    fn delete_host_route(&self, addr: Ipv6Addr) -> io::Result<()> {
        DataPlane::delete_host_route(self, addr)
    }
    fn set_virtual_address(&self, addr: Ipv6Addr) -> io::Result<()> {
        DataPlane::set_virtual_address(self, addr)
    }
    fn clear_virtual_address(&self, addr: Ipv6Addr) {
        DataPlane::clear_virtual_address(self, addr)
    }
}

/// The plane of a peer that only speaks IKE (test tools): Child SAs are
/// reported as events and installed nowhere.
#[derive(Debug, Default)]
pub struct IkeOnly;

impl Plane for IkeOnly {
    fn install(&self, _: &ChildSa) -> io::Result<()> {
        Ok(())
    }
    fn remove(&self, _: u32) {}
}

/// The kernel events of a data plane, with its reading of what each one
/// asks of the engine, for [`crate::engine::Parts`].
pub fn kernel_events(
    dp: &Arc<DataPlane>,
    events: Option<mpsc::UnboundedReceiver<KernelEvent>>,
) -> Option<KernelEvents> {
    let dp = dp.clone();
    events.map(|events| KernelEvents {
        events,
        action_for: Box::new(move |ev| dp.on_kernel_event(ev)),
    })
}
