//! The address pool, kept in sled so that leases survive restarts.
//!
//! Every identity keeps its address: while connected, after it
//! disconnects, and across broker restarts. Addresses are handed out from
//! a cursor that only moves forward; once the prefix is used up, the lease
//! released longest ago is taken from its old owner. Allocation therefore
//! never scans the pool. Static reservations are never handed to anyone
//! else. Each change is one atomic sled batch; the runtime's lease writer
//! ([`sixgate_runtime::admission`]) flushes after each group of changes
//! and only then lets the IKE_AUTH response that announces a lease go out.
//!
//! Identities are keyed by their canonical form
//! ([`CanonicalIdentity::storage_key`]), so the spellings of one identity
//! share one lease. Keys, in one tree: `L`+identity -> address (the
//! lease), `O`+address -> identity (the owner), `R`+sequence -> address
//! (released, oldest first), `r`+address -> sequence, and `N` -> the
//! cursor.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv6Addr;
use std::path::Path;
use std::sync::RwLock;

use std::io;

use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::IdType;
use sixgate_runtime::admission::LeaseStore;

/// One lease, for `sixgate-broker leases`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The identity holding it.
    pub identity: String,
    /// The address.
    pub address: Ipv6Addr,
    /// Whether its owner is connected (false: released, kept for the owner).
    pub active: bool,
    /// A reservation from the configuration.
    pub reserved: bool,
}

/// The leases, in sled (see the module documentation).
pub struct SledLeaseStore {
    db: sled::Db,
    tree: sled::Tree,
    base: u128,
    size: u64,
    reservations: RwLock<Reservations>,
}

/// The static reservations, which a reload replaces.
struct Reservations {
    by_identity: BTreeMap<Vec<u8>, Ipv6Addr>,
    addresses: HashSet<Ipv6Addr>,
}

impl Reservations {
    fn new(list: &[(CanonicalIdentity, Ipv6Addr)]) -> Reservations {
        Reservations {
            by_identity: list.iter().map(|(i, a)| (i.storage_key(), *a)).collect(),
            addresses: list.iter().map(|(_, a)| *a).collect(),
        }
    }
}

fn identity_text(key: &[u8]) -> String {
    CanonicalIdentity::from_storage_key(key).map_or_else(
        || key.iter().map(|b| format!("{b:02x}")).collect(),
        |id| id.to_string(),
    )
}

/// Whether a key is of the first format, the IDi's type octet and bytes
/// (before identities were canonical): its first octet is an ID type, far
/// below the ASCII letters that tag canonical keys.
fn is_wire_key(key: &[u8]) -> bool {
    key.first().is_some_and(|t| *t < 0x20)
}

fn prefixed(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

fn addr_of(v: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(v).ok().map(Ipv6Addr::from)
}

impl SledLeaseStore {
    /// Opens (or creates) the store under `path` for the pool `base`..`base+size`.
    pub fn open(
        path: &Path,
        base: Ipv6Addr,
        size: u64,
        reservations: &[(CanonicalIdentity, Ipv6Addr)],
    ) -> sled::Result<SledLeaseStore> {
        let db = sled::open(path.join("leases"))?;
        let tree = db.open_tree("pool")?;
        let store = SledLeaseStore {
            db,
            tree,
            base: u128::from(base),
            size,
            reservations: RwLock::new(Reservations::new(reservations)),
        };
        store.migrate_wire_keys()?;
        store.release_all()?;
        Ok(store)
    }

    /// Re-keys leases stored under the IDi's bytes (the first format) by
    /// their canonical identity. Two spellings of one identity merge into
    /// the lease of whichever comes first; the other address is freed.
    fn migrate_wire_keys(&self) -> sled::Result<()> {
        let old: Vec<(sled::IVec, sled::IVec)> = self
            .tree
            .scan_prefix(b"L")
            .filter(|item| item.as_ref().map_or(true, |(k, _)| is_wire_key(&k[1..])))
            .collect::<Result<_, _>>()?;
        for (key, addr) in old {
            let wire = &key[1..];
            let mut batch = sled::Batch::default();
            batch.remove(key.clone());
            let canonical = CanonicalIdentity::from_type_and_bytes(IdType(wire[0]), &wire[1..]);
            let kept = match (&canonical, addr_of(&addr)) {
                (Ok(id), Some(addr))
                    if self.tree.get(prefixed(b'L', &id.storage_key()))?.is_none() =>
                {
                    self.lease_to(&mut batch, &id.storage_key(), addr);
                    true
                }
                _ => false,
            };
            if !kept {
                if let Some(addr) = addr_of(&addr) {
                    batch.remove(prefixed(b'O', &addr.octets()));
                    self.unrelease(&mut batch, addr)?;
                }
            }
            self.tree.apply_batch(batch)?;
        }
        self.tree.flush()?;
        Ok(())
    }

    /// After a start nobody is connected: every dynamic lease becomes
    /// released (still its owner's until the pool needs it).
    fn release_all(&self) -> sled::Result<()> {
        for item in self.tree.scan_prefix(b"L") {
            let (_, addr) = item?;
            if let Some(addr) = addr_of(&addr) {
                if !self.is_reserved(addr)
                    && self.tree.get(prefixed(b'r', &addr.octets()))?.is_none()
                {
                    self.mark_released(addr)?;
                }
            }
        }
        self.tree.flush()?;
        Ok(())
    }

    fn mark_released(&self, addr: Ipv6Addr) -> sled::Result<()> {
        let seq = self.db.generate_id()?.to_be_bytes();
        let mut batch = sled::Batch::default();
        batch.insert(prefixed(b'R', &seq), &addr.octets());
        batch.insert(prefixed(b'r', &addr.octets()), &seq);
        self.tree.apply_batch(batch)
    }

    fn is_reserved(&self, addr: Ipv6Addr) -> bool {
        self.reservations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .addresses
            .contains(&addr)
    }

    fn reservation_of(&self, key: &[u8]) -> Option<Ipv6Addr> {
        self.reservations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_identity
            .get(key)
            .copied()
    }

    /// Replaces the static reservations (a reload). An address newly
    /// reserved for one identity while another holds it goes to its new
    /// owner once the holder has disconnected; the holder gets another.
    pub fn set_reservations(&self, list: &[(CanonicalIdentity, Ipv6Addr)]) {
        *self.reservations.write().unwrap_or_else(|e| e.into_inner()) = Reservations::new(list);
    }

    fn in_pool(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr).wrapping_sub(self.base) < u128::from(self.size)
    }

    /// Takes `addr` off the released list (its owner is back).
    fn unrelease(&self, batch: &mut sled::Batch, addr: Ipv6Addr) -> sled::Result<()> {
        if let Some(seq) = self.tree.get(prefixed(b'r', &addr.octets()))? {
            batch.remove(prefixed(b'R', &seq));
            batch.remove(prefixed(b'r', &addr.octets()));
        }
        Ok(())
    }

    fn commit(&self, batch: sled::Batch) -> sled::Result<()> {
        self.tree.apply_batch(batch)
    }

    /// The database, for the other trees that live beside the pool.
    pub fn database(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every change so far durable.
    pub fn flush(&self) -> sled::Result<()> {
        self.tree.flush().map(|_| ())
    }

    fn lease_to(&self, batch: &mut sled::Batch, key: &[u8], addr: Ipv6Addr) {
        batch.insert(prefixed(b'L', key), &addr.octets());
        batch.insert(prefixed(b'O', &addr.octets()), key);
    }

    /// The address for an identity (see the module documentation).
    pub fn assign_address(&self, identity: &CanonicalIdentity) -> sled::Result<Option<Ipv6Addr>> {
        let key = identity.storage_key();
        let mut batch = sled::Batch::default();
        if let Some(addr) = self.reservation_of(&key) {
            let released = self.tree.get(prefixed(b'r', &addr.octets()))?.is_some();
            match self.tree.get(prefixed(b'O', &addr.octets()))? {
                // Reserved since its holder connected: not while it is.
                Some(owner) if owner.as_ref() != key.as_slice() && !released => return Ok(None),
                Some(owner) if owner.as_ref() != key.as_slice() => {
                    batch.remove(prefixed(b'L', &owner));
                }
                _ => {}
            }
            self.lease_to(&mut batch, &key, addr);
            self.unrelease(&mut batch, addr)?;
            self.commit(batch)?;
            return Ok(Some(addr));
        }
        if let Some(addr) = self
            .tree
            .get(prefixed(b'L', &key))?
            .and_then(|v| addr_of(&v))
        {
            if self.in_pool(addr) && !self.is_reserved(addr) {
                self.unrelease(&mut batch, addr)?;
                self.commit(batch)?;
                return Ok(Some(addr));
            }
            // The pool or the reservations changed under this lease.
            batch.remove(prefixed(b'L', &key));
        }
        let mut next = self
            .tree
            .get(b"N")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        while next < self.size {
            let addr = Ipv6Addr::from(self.base + u128::from(next));
            next += 1;
            if self.is_reserved(addr) || self.tree.contains_key(prefixed(b'O', &addr.octets()))? {
                continue;
            }
            batch.insert(b"N", &next.to_be_bytes());
            self.lease_to(&mut batch, &key, addr);
            self.commit(batch)?;
            return Ok(Some(addr));
        }
        batch.insert(b"N", &next.to_be_bytes());
        // The pool is used up: take the lease released longest ago.
        if let Some(item) = self.tree.scan_prefix(b"R").next() {
            let (seq_key, addr) = item?;
            if let Some(addr) = addr_of(&addr) {
                if let Some(old) = self.tree.get(prefixed(b'O', &addr.octets()))? {
                    batch.remove(prefixed(b'L', &old));
                }
                batch.remove(seq_key);
                batch.remove(prefixed(b'r', &addr.octets()));
                self.lease_to(&mut batch, &key, addr);
                self.commit(batch)?;
                return Ok(Some(addr));
            }
        }
        self.commit(batch)?;
        Ok(None)
    }

    /// The owner disconnected: the address stays theirs until needed.
    pub fn release_address(
        &self,
        identity: &CanonicalIdentity,
        addr: Ipv6Addr,
    ) -> sled::Result<()> {
        let owner = self.tree.get(prefixed(b'O', &addr.octets()))?;
        let key = identity.storage_key();
        // A reservation stays its owner's; an address reserved for someone
        // else since (a reload) is released for them.
        if self.reservation_of(&key) == Some(addr) || owner.as_deref() != Some(key.as_slice()) {
            return Ok(());
        }
        if self.tree.get(prefixed(b'r', &addr.octets()))?.is_none() {
            self.mark_released(addr)?;
        }
        Ok(())
    }

    /// Every lease.
    pub fn list(&self) -> sled::Result<Vec<Lease>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"L") {
            let (k, v) = item?;
            let Some(address) = addr_of(&v) else { continue };
            out.push(Lease {
                identity: identity_text(&k[1..]),
                address,
                active: self.tree.get(prefixed(b'r', &address.octets()))?.is_none(),
                reserved: self.is_reserved(address),
            });
        }
        out.sort_by_key(|l| l.address);
        Ok(out)
    }
}

/// The lease writer's handle on the store.
pub struct Leases(pub std::sync::Arc<SledLeaseStore>);

impl LeaseStore for Leases {
    fn assign(&mut self, identity: &CanonicalIdentity) -> io::Result<Option<Ipv6Addr>> {
        self.0.assign_address(identity).map_err(io::Error::other)
    }

    fn release(&mut self, identity: &CanonicalIdentity, address: Ipv6Addr) -> io::Result<()> {
        self.0
            .release_address(identity, address)
            .map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CanonicalIdentity {
        CanonicalIdentity::parse(s).unwrap()
    }

    fn store(dir: &Path, size: u64) -> SledLeaseStore {
        let base: Ipv6Addr = "2001:db8:100::100".parse().unwrap();
        let reserved = [(id("vip@example.net"), "2001:db8:100::101".parse().unwrap())];
        crate::reopen(|| SledLeaseStore::open(dir, base, size, &reserved))
    }

    #[test]
    fn same_identity_same_address_also_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = {
            let s = store(dir.path(), 8);
            let a = s.assign_address(&id("a@x")).unwrap().unwrap();
            assert_eq!(a, "2001:db8:100::100".parse::<Ipv6Addr>().unwrap());
            let b = s.assign_address(&id("b@x")).unwrap().unwrap();
            assert_eq!(
                b,
                "2001:db8:100::102".parse::<Ipv6Addr>().unwrap(),
                "skips the reservation"
            );
            assert_eq!(s.assign_address(&id("a@x")).unwrap(), Some(a));
            a
        };
        let s = store(dir.path(), 8);
        assert_eq!(s.assign_address(&id("a@x")).unwrap(), Some(a));
        assert_eq!(
            s.assign_address(&id("vip@example.net")).unwrap(),
            Some("2001:db8:100::101".parse().unwrap())
        );
        let leases = s.list().unwrap();
        assert_eq!(leases.len(), 3);
        assert!(
            leases.iter().any(|l| l.identity == "b@x" && !l.active),
            "b is released after the restart"
        );
    }

    #[test]
    fn a_full_pool_takes_the_oldest_released_lease_and_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 4); // ::100, ::101 (reserved), ::102, ::103
        let a = s.assign_address(&id("a@x")).unwrap().unwrap();
        let b = s.assign_address(&id("b@x")).unwrap().unwrap();
        let c = s.assign_address(&id("c@x")).unwrap().unwrap();
        assert_eq!([a, b, c].iter().collect::<HashSet<_>>().len(), 3);
        assert_eq!(
            s.assign_address(&id("d@x")).unwrap(),
            None,
            "full, nobody released"
        );
        s.release_address(&id("b@x"), b).unwrap();
        s.release_address(&id("a@x"), a).unwrap();
        // b is still b's while the pool has room: it does not; d takes the
        // oldest released (b's), then e takes a's.
        assert_eq!(s.assign_address(&id("d@x")).unwrap(), Some(b));
        assert_eq!(s.assign_address(&id("e@x")).unwrap(), Some(a));
        assert_eq!(s.assign_address(&id("b@x")).unwrap(), None);
        // Releasing someone else's address does nothing.
        s.release_address(&id("b@x"), c).unwrap();
        assert!(s.list().unwrap().iter().all(|l| l.active));
    }

    #[test]
    fn spellings_share_a_lease_and_old_keys_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let s = store(dir.path(), 16);
            let a = s.assign_address(&id("Alice@EXAMPLE.net")).unwrap().unwrap();
            assert_eq!(s.assign_address(&id("Alice@example.NET")).unwrap(), Some(a));
            // Leases of the first format: keyed by the IDi's type and bytes,
            // one identity under two spellings.
            let b: Ipv6Addr = "2001:db8:100::10a".parse().unwrap();
            let c: Ipv6Addr = "2001:db8:100::10b".parse().unwrap();
            for (spelling, addr) in [("bob@EXAMPLE.net", b), ("bob@example.net", c)] {
                let mut key = vec![3u8];
                key.extend_from_slice(spelling.as_bytes());
                let mut batch = sled::Batch::default();
                s.lease_to(&mut batch, &key, addr);
                s.tree.apply_batch(batch).unwrap();
            }
            (a, b)
        };
        let s = store(dir.path(), 16);
        let leases = s.list().unwrap();
        assert_eq!(
            leases
                .iter()
                .map(|l| (l.identity.as_str(), l.address))
                .collect::<Vec<_>>(),
            vec![("Alice@example.net", a), ("bob@example.net", b)],
            "one lease each, under the canonical spelling"
        );
        assert_eq!(s.assign_address(&id("bob@example.net")).unwrap(), Some(b));
        assert_ne!(s.assign_address(&id("Bob@example.net")).unwrap(), Some(b));
    }

    #[test]
    fn a_returning_owner_keeps_a_released_address() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 16);
        let a = s.assign_address(&id("a@x")).unwrap().unwrap();
        s.release_address(&id("a@x"), a).unwrap();
        for i in 0..5 {
            s.assign_address(&id(&format!("n{i}@x"))).unwrap().unwrap();
        }
        assert_eq!(s.assign_address(&id("a@x")).unwrap(), Some(a));
        assert!(
            s.list()
                .unwrap()
                .iter()
                .find(|l| l.address == a)
                .unwrap()
                .active
        );
    }

    #[test]
    fn a_reservation_made_by_a_reload_waits_for_the_address_s_holder() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 8);
        let holder = id("holder@example.net");
        let held = s.assign_address(&holder).unwrap().unwrap();
        let vip = id("new-vip@example.net");
        s.set_reservations(&[(vip.clone(), held)]);
        assert_eq!(
            s.assign_address(&vip).unwrap(),
            None,
            "in use by a connected holder"
        );
        s.release_address(&holder, held).unwrap();
        assert_eq!(s.assign_address(&vip).unwrap(), Some(held));
        let moved = s.assign_address(&holder).unwrap().unwrap();
        assert_ne!(moved, held);
        let leases = s.list().unwrap();
        assert_eq!(
            leases.iter().filter(|l| l.address == held).count(),
            1,
            "{leases:?}"
        );
    }
}
