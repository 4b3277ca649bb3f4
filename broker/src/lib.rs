//! sixgate-broker as a library: the configuration, the address lease
//! store, the revocation list and the DMZ site store, used by the `sixgate-broker` binary (and
//! by tests).

pub mod config;
pub mod leases;
pub mod revocations;
pub mod siteconfig;
pub mod sitenet;
pub mod sites;
