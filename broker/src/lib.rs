//! sixgate-broker as a library: the configuration, the address lease
//! store and the DMZ site store, used by the `sixgate-broker` binary (and
//! by tests).

pub mod config;
pub mod leases;
pub mod siteconfig;
pub mod sitenet;
pub mod sites;
