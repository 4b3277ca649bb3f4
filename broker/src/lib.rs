//! sixgate-broker as a library: the configuration, the address lease
//! store, the revocation list, the DMZ site store and the checks a start makes, used by the `sixgate-broker` binary (and
//! by tests).

pub mod check;
pub mod config;
pub mod enroll;
pub mod leases;
pub mod metrics;
pub mod profiles;
pub mod revocations;
pub mod siteconfig;
pub mod sitenet;
pub mod sites;

/// For tests that reopen a sled database: the handle just dropped may
/// still hold the file lock for a moment (sled's flusher thread ends on
/// its own time), so opening is retried for up to five seconds while the
/// error is that lock.
#[cfg(test)]
pub(crate) fn reopen<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open() {
            Ok(t) => return t,
            Err(e)
                if format!("{e:?}").contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("opening the store: {e:?}"),
        }
    }
}
