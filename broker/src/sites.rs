//! DMZ sites: each gets a delegated IPv6 prefix, transfer addresses and
//! WireGuard keys, kept in sled.
//!
//! Prefixes are cut from the `[sites] prefix` by a buddy allocator: free
//! blocks are kept per prefix length, a request takes the smallest free
//! block that fits and splits it, and a freed prefix merges with its buddy
//! when that is free too. Mixed lengths therefore never overlap, and no
//! operation scans the pool. The first /64 of the pool is the transfer
//! network (the broker is `::1`, sites get `::2` on); IPv4 transfer
//! addresses come from `[sites] transfer4` the same way (broker `.1`).
//! A removed site's prefix and addresses are held back for the hold-down
//! time before they can go to anyone else, so DNS or firewall rules that
//! still point at them do not suddenly reach a stranger.
//!
//! Keys, in one tree: `S`+name -> site (JSON), `K`+public key -> name,
//! `F`+length+prefix -> free block, `H`+time+name -> held site (JSON),
//! `T6`/`T4` -> transfer cursors, `t6`/`t4`+address -> freed transfer
//! address.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// One site, as stored and as `site show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// The site's name.
    pub name: String,
    /// Its delegated prefix.
    pub prefix: Ipv6Addr,
    /// Its length.
    pub prefix_length: u8,
    /// Its IPv6 transfer address.
    pub transfer6: Ipv6Addr,
    /// Its IPv4 transfer address (NAT'd out of the uplink).
    pub transfer4: Ipv4Addr,
    /// The site's WireGuard public key (base64).
    pub public_key: String,
    /// The site's private key, when sixgate generated the pair (base64).
    pub private_key: Option<String>,
    /// The preshared key (base64).
    pub preshared_key: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

impl Site {
    /// "2001:db8:1000:1::/64"
    pub fn prefix_text(&self) -> String {
        format!("{}/{}", self.prefix, self.prefix_length)
    }
}

/// Why a site operation was refused. Nothing is changed when one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteError {
    /// Not 1 to 32 of a-z, 0-9 and -.
    InvalidName(String),
    /// Not base64 of 32 octets, or a point of small order.
    InvalidPublicKey(String),
    /// The name is taken.
    DuplicateName(String),
    /// The key belongs to another site.
    DuplicateKey(String),
    /// Not 64, 60 or 56, or longer than the pool.
    UnsupportedLength(u8),
    /// No free prefix of that length.
    PoolExhausted(u8),
    /// No transfer address left.
    TransferExhausted,
    /// No such site.
    NotFound(String),
    /// sled failed.
    Storage(String),
}

impl std::fmt::Display for SiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteError::InvalidName(n) => {
                write!(f, "invalid site name {n:?}: use 1 to 32 of a-z, 0-9 and -")
            }
            SiteError::InvalidPublicKey(why) => write!(f, "invalid public key: {why}"),
            SiteError::DuplicateName(n) => write!(f, "a site named {n:?} exists already"),
            SiteError::DuplicateKey(n) => {
                write!(f, "that public key belongs to site {n:?} already")
            }
            SiteError::UnsupportedLength(l) => write!(
                f,
                "prefix length /{l} is not served (use 64, 60 or 56, within the pool)"
            ),
            SiteError::PoolExhausted(l) => write!(f, "no free /{l} left in the site prefix"),
            SiteError::TransferExhausted => write!(f, "no transfer addresses left"),
            SiteError::NotFound(n) => write!(f, "no site named {n:?}"),
            SiteError::Storage(e) => write!(f, "site store: {e}"),
        }
    }
}

impl From<sled::Error> for SiteError {
    fn from(e: sled::Error) -> Self {
        SiteError::Storage(e.to_string())
    }
}

impl From<sled::transaction::TransactionError<SiteError>> for SiteError {
    fn from(e: sled::transaction::TransactionError<SiteError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => SiteError::Storage(e.to_string()),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The Curve25519 points of small order (u-coordinates, little-endian),
/// and the non-canonical encodings of 0 and 1 (p and p + 1) that X25519
/// implementations reduce to them: a Diffie-Hellman with any of them gives
/// a shared secret the peer knows in advance, as libsodium's
/// `has_small_order` list has it. The top bit is ignored, as X25519 does.
const LOW_ORDER_POINTS: [[u8; 32]; 7] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    field_element_near_p(0xec),
    field_element_near_p(0xed),
    field_element_near_p(0xee),
];

/// p - 1, p or p + 1 (p = 2^255 - 19), by their lowest octet.
const fn field_element_near_p(low: u8) -> [u8; 32] {
    let mut x = [0xff; 32];
    x[0] = low;
    x[31] = 0x7f;
    x
}

/// Decodes a WireGuard key: base64 of 32 octets.
pub fn decode_key(text: &str) -> Result<[u8; 32], SiteError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| SiteError::InvalidPublicKey(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| SiteError::InvalidPublicKey(format!("{} octets, not 32", b.len())))
}

/// Checks a WireGuard public key: base64 of 32 octets, not a point of
/// small order (see [`LOW_ORDER_POINTS`]).
pub fn check_public_key(text: &str) -> Result<[u8; 32], SiteError> {
    let key = decode_key(text)?;
    let mut masked = key;
    masked[31] &= 0x7f;
    if LOW_ORDER_POINTS.contains(&masked) {
        return Err(SiteError::InvalidPublicKey(
            "a point of small order (any shared secret with it is known in advance)".into(),
        ));
    }
    Ok(key)
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn free_key(len: u8, prefix: u128) -> Vec<u8> {
    let mut k = vec![b'F', len];
    k.extend_from_slice(&prefix.to_be_bytes());
    k
}

/// The size of a block of prefix length `len`, as an address offset.
fn block(len: u8) -> u128 {
    1u128.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// The sites, their prefixes and keys, in sled.
pub struct SiteStore {
    tree: sled::Tree,
    pool: (u128, u8),
    transfer4: (u32, u8),
    hold_down: u64,
}

impl SiteStore {
    /// Opens the store under `path` for the site pool `pool` (prefix,
    /// length) and the IPv4 transfer network.
    pub fn open(
        path: &Path,
        pool: (Ipv6Addr, u8),
        transfer4: (Ipv4Addr, u8),
        hold_down: u64,
    ) -> Result<SiteStore, SiteError> {
        let db = sled::open(path.join("sites"))?;
        let tree = db.open_tree("sites")?;
        let store = SiteStore {
            tree,
            pool: (u128::from(pool.0), pool.1),
            transfer4: (u32::from(transfer4.0), transfer4.1),
            hold_down,
        };
        if store.tree.get(b"init")?.is_none() {
            // The whole pool is one free block; its first /64 becomes the
            // transfer network.
            let mut batch = sled::Batch::default();
            batch.insert(free_key(store.pool.1, store.pool.0), &[]);
            batch.insert(b"init", &[1]);
            store.tree.apply_batch(batch)?;
            let transfer = store.take_block(64)?;
            store.tree.insert(b"net6", &transfer.to_be_bytes())?;
            store.tree.flush()?;
        }
        Ok(store)
    }

    /// The transfer network (a /64); the broker is its `::1`.
    pub fn transfer6_net(&self) -> Result<Ipv6Addr, SiteError> {
        let v = self
            .tree
            .get(b"net6")?
            .ok_or_else(|| SiteError::Storage("no transfer network".into()))?;
        let bytes: [u8; 16] = v
            .as_ref()
            .try_into()
            .map_err(|_| SiteError::Storage("corrupt transfer network".into()))?;
        Ok(Ipv6Addr::from(bytes))
    }

    /// The broker's WireGuard private key, made on first use.
    pub fn broker_key(&self) -> Result<[u8; 32], SiteError> {
        if let Some(k) = self.tree.get(b"wgkey")? {
            return <[u8; 32]>::try_from(k.as_ref())
                .map_err(|_| SiteError::Storage("corrupt broker key".into()));
        }
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
        self.tree.insert(b"wgkey", secret.as_bytes())?;
        self.tree.flush()?;
        Ok(secret.to_bytes())
    }

    /// The IPv4 transfer network.
    pub fn transfer4_net(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(self.transfer4.0), self.transfer4.1)
    }

    /// The broker's own IPv4 transfer address (the network's first host).
    pub fn broker_transfer4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.transfer4.0 + 1)
    }

    /// Takes a free block of length `len`: the smallest free block that
    /// holds it, split down (buddy allocation).
    fn take_block(&self, len: u8) -> Result<u128, SiteError> {
        for have in (self.pool.1..=len).rev() {
            let Some(item) = self.tree.scan_prefix([b'F', have]).next() else {
                continue;
            };
            let (key, _) = item?;
            let bytes: [u8; 16] = key[2..]
                .try_into()
                .map_err(|_| SiteError::Storage("corrupt free list".into()))?;
            let start = u128::from_be_bytes(bytes);
            let mut batch = sled::Batch::default();
            batch.remove(key);
            // Split: keep the lower half, free the upper half, down to `len`.
            for l in have + 1..=len {
                batch.insert(free_key(l, start + block(l)), &[]);
            }
            self.tree.apply_batch(batch)?;
            return Ok(start);
        }
        Err(SiteError::PoolExhausted(len))
    }

    /// Returns a block, merging it with its buddy while that is free.
    fn free_block(&self, mut start: u128, mut len: u8) -> Result<(), SiteError> {
        let mut batch = sled::Batch::default();
        while len > self.pool.1 {
            let buddy = start ^ block(len);
            if !self.tree.contains_key(free_key(len, buddy))? {
                break;
            }
            batch.remove(free_key(len, buddy));
            start = start.min(buddy);
            len -= 1;
        }
        batch.insert(free_key(len, start), &[]);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The next transfer address of one family: a freed one, else the
    /// cursor (which starts after the broker's).
    fn take_transfer(&self, family: u8, limit: u128) -> Result<u128, SiteError> {
        if let Some(item) = self.tree.scan_prefix([b't', family]).next() {
            let (key, _) = item?;
            self.tree.remove(&key)?;
            let bytes: [u8; 16] = key[2..]
                .try_into()
                .map_err(|_| SiteError::Storage("corrupt transfer list".into()))?;
            return Ok(u128::from_be_bytes(bytes));
        }
        let cursor_key = [b'T', family];
        let next = self
            .tree
            .get(cursor_key)?
            .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok())
            .map_or(2, u128::from_be_bytes);
        if next >= limit {
            return Err(SiteError::TransferExhausted);
        }
        self.tree.insert(cursor_key, &(next + 1).to_be_bytes())?;
        Ok(next)
    }

    fn free_transfer(&self, family: u8, offset: u128) -> Result<(), SiteError> {
        let mut k = vec![b't', family];
        k.extend_from_slice(&offset.to_be_bytes());
        self.tree.insert(k, &[])?;
        Ok(())
    }

    /// How long a removed site's prefix is held back from now on.
    pub fn set_hold_down(&mut self, seconds: u64) {
        self.hold_down = seconds;
    }

    /// Frees what sites removed at least `hold_down` seconds before `now` held.
    pub fn release_expired(&self, now: u64) -> Result<(), SiteError> {
        let due: Vec<(sled::IVec, Site)> = self
            .tree
            .scan_prefix(b"H")
            .map(|item| -> Result<_, SiteError> {
                let (k, v) = item?;
                let site: Site =
                    serde_json::from_slice(&v).map_err(|e| SiteError::Storage(e.to_string()))?;
                Ok((k, site))
            })
            .take_while(|r| match r {
                Ok((k, _)) => k
                    .get(1..9)
                    .and_then(|t| <[u8; 8]>::try_from(t).ok())
                    .is_some_and(|t| u64::from_be_bytes(t) <= now),
                Err(_) => true,
            })
            .collect::<Result<_, _>>()?;
        for (key, site) in due {
            self.free_block(u128::from(site.prefix), site.prefix_length)?;
            let net6 = u128::from(self.transfer6_net()?);
            self.free_transfer(6, u128::from(site.transfer6) - net6)?;
            self.free_transfer(4, u128::from(u32::from(site.transfer4) - self.transfer4.0))?;
            self.tree.remove(key)?;
        }
        self.tree.flush()?;
        Ok(())
    }

    /// Adds a site: checks everything first, so a refusal changes nothing.
    pub fn add(
        &self,
        name: &str,
        public_key: Option<&str>,
        prefix_length: u8,
        now: u64,
    ) -> Result<Site, SiteError> {
        if !valid_name(name) {
            return Err(SiteError::InvalidName(name.into()));
        }
        if self.tree.contains_key([b"S", name.as_bytes()].concat())? {
            return Err(SiteError::DuplicateName(name.into()));
        }
        if ![64, 60, 56].contains(&prefix_length) || prefix_length < self.pool.1 {
            return Err(SiteError::UnsupportedLength(prefix_length));
        }
        let (public, private) = match public_key {
            Some(k) => (check_public_key(k)?, None),
            None => {
                let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
                let public = x25519_dalek::PublicKey::from(&secret);
                (public.to_bytes(), Some(b64(secret.as_bytes())))
            }
        };
        if let Some(owner) = self.tree.get([b"K".as_slice(), &public].concat())? {
            return Err(SiteError::DuplicateKey(
                String::from_utf8_lossy(&owner).into_owned(),
            ));
        }
        self.release_expired(now)?;
        // Allocate; undo what was taken if a later step fails.
        let prefix = self.take_block(prefix_length)?;
        let t6 = match self.take_transfer(6, u128::from(u64::MAX)) {
            Ok(t) => t,
            Err(e) => {
                self.free_block(prefix, prefix_length)?;
                return Err(e);
            }
        };
        let limit4 = (block(128 - 32 + self.transfer4.1) - 1).min(u128::from(u32::MAX));
        let t4 = match self.take_transfer(4, limit4) {
            Ok(t) => t,
            Err(e) => {
                self.free_block(prefix, prefix_length)?;
                self.free_transfer(6, t6)?;
                return Err(e);
            }
        };
        let mut psk = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut psk);
        let site = Site {
            name: name.into(),
            prefix: Ipv6Addr::from(prefix),
            prefix_length,
            transfer6: Ipv6Addr::from(u128::from(self.transfer6_net()?) + t6),
            transfer4: Ipv4Addr::from(self.transfer4.0 + t4 as u32),
            public_key: b64(&public),
            private_key: private,
            preshared_key: b64(&psk),
            created: now,
        };
        let json = serde_json::to_vec(&site).map_err(|e| SiteError::Storage(e.to_string()))?;
        let mut batch = sled::Batch::default();
        batch.insert([b"S", name.as_bytes()].concat(), json);
        batch.insert([b"K".as_slice(), &public].concat(), name.as_bytes());
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(site)
    }

    /// A site by name.
    pub fn get(&self, name: &str) -> Result<Site, SiteError> {
        let v = self
            .tree
            .get([b"S", name.as_bytes()].concat())?
            .ok_or_else(|| SiteError::NotFound(name.into()))?;
        serde_json::from_slice(&v).map_err(|e| SiteError::Storage(e.to_string()))
    }

    /// Every site, by name.
    pub fn list(&self) -> Result<Vec<Site>, SiteError> {
        self.tree
            .scan_prefix(b"S")
            .map(|item| {
                let (_, v) = item?;
                serde_json::from_slice(&v).map_err(|e| SiteError::Storage(e.to_string()))
            })
            .collect()
    }

    /// Removes a site; its prefix and addresses are held back until
    /// `now + hold_down`.
    pub fn remove(&self, name: &str, now: u64) -> Result<Site, SiteError> {
        let site = self.get(name)?;
        let public = check_public_key(&site.public_key)?;
        let mut held = b"H".to_vec();
        held.extend_from_slice(&(now + self.hold_down).to_be_bytes());
        held.extend_from_slice(name.as_bytes());
        let json = serde_json::to_vec(&site).map_err(|e| SiteError::Storage(e.to_string()))?;
        let mut batch = sled::Batch::default();
        batch.remove([b"S", name.as_bytes()].concat());
        batch.remove([b"K".as_slice(), &public].concat());
        batch.insert(held, json);
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn store(dir: &Path, hold_down: u64) -> SiteStore {
        store4(dir, hold_down, "192.168.0.0", 22)
    }

    fn store4(dir: &Path, hold_down: u64, net: &str, len: u8) -> SiteStore {
        crate::reopen(|| {
            SiteStore::open(
                dir,
                ("2001:db8:1000::".parse().unwrap(), 48),
                (net.parse().unwrap(), len),
                hold_down,
            )
        })
    }

    fn overlaps(a: &Site, b: &Site) -> bool {
        let (sa, sb) = (u128::from(a.prefix), u128::from(b.prefix));
        let (ea, eb) = (
            sa + block(a.prefix_length) - 1,
            sb + block(b.prefix_length) - 1,
        );
        sa <= eb && sb <= ea
    }

    #[test]
    fn the_low_order_points_give_a_secret_known_in_advance() {
        // X25519 with any of them, whatever our secret, yields zero: the
        // list is what it says.
        for seed in [1u8, 7, 200] {
            let secret = x25519_dalek::StaticSecret::from([seed; 32]);
            for point in LOW_ORDER_POINTS {
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(point));
                assert_eq!(shared.as_bytes(), &[0; 32], "{point:02x?}");
            }
        }
    }

    #[test]
    fn mixed_lengths_never_overlap_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let sites = {
            let s = store(dir.path(), 0);
            let mut sites = Vec::new();
            for (i, len) in [64, 56, 60, 64, 56, 60, 64].into_iter().enumerate() {
                sites.push(s.add(&format!("site{i}"), None, len, 0).unwrap());
            }
            sites
        };
        for (i, a) in sites.iter().enumerate() {
            assert_eq!(u128::from(a.prefix) % block(a.prefix_length), 0, "aligned");
            for b in &sites[i + 1..] {
                assert!(
                    !overlaps(a, b),
                    "{} overlaps {}",
                    a.prefix_text(),
                    b.prefix_text()
                );
            }
            assert_ne!(
                a.prefix,
                "2001:db8:1000::".parse::<Ipv6Addr>().unwrap(),
                "the transfer /64 is not handed out"
            );
        }
        let s = store(dir.path(), 0);
        assert_eq!(s.get("site1").unwrap(), sites[1]);
        assert_eq!(s.list().unwrap().len(), 7);
        assert_eq!(
            sites[0].transfer4,
            "192.168.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            sites[0].transfer6,
            "2001:db8:1000::2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn a_thousand_adds_and_removes_leave_no_overlap_and_no_leak() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 0);
        let mut live: Vec<Site> = Vec::new();
        let mut now = 0;
        for i in 0..1000u32 {
            now += 1;
            let len = [64, 60, 64, 56][(i % 4) as usize];
            let site = s.add(&format!("s{i}"), None, len, now).unwrap();
            assert!(
                live.iter().all(|o| !overlaps(o, &site)),
                "{i}: {}",
                site.prefix_text()
            );
            live.push(site);
            if i % 3 != 0 {
                let gone = live.remove((i as usize * 7) % live.len());
                s.remove(&gone.name, now).unwrap();
            }
        }
        for site in live.drain(..) {
            s.remove(&site.name, now).unwrap();
        }
        s.release_expired(now + 1).unwrap();
        // Everything merged back: one free block for all but the transfer /64.
        let free: Vec<_> = s
            .tree
            .scan_prefix(b"F")
            .keys()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            free.len(),
            16,
            "the /48 minus the transfer /64 is 16 buddies: {}",
            free.len()
        );
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn removed_prefixes_are_held_down() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 100);
        let a = s.add("a", None, 56, 0).unwrap();
        s.remove("a", 10).unwrap();
        let b = s.add("b", None, 56, 50).unwrap();
        assert_ne!(a.prefix, b.prefix, "still held");
        assert_ne!(a.transfer4, b.transfer4);
        let c = s.add("c", None, 56, 111).unwrap();
        let used: HashSet<_> = [b.prefix, c.prefix].into();
        assert!(
            used.contains(&a.prefix) || c.transfer4 == a.transfer4,
            "released after the hold-down"
        );
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 0);
        let key = b64(
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([7u8; 32])).as_bytes(),
        );
        let first = s.add("home", Some(&key), 64, 0).unwrap();
        assert!(
            first.private_key.is_none(),
            "no private key when the site brought its own"
        );
        assert_eq!(
            s.add("home", None, 64, 0),
            Err(SiteError::DuplicateName("home".into()))
        );
        assert_eq!(
            s.add("other", Some(&key), 64, 0),
            Err(SiteError::DuplicateKey("home".into()))
        );
        assert!(matches!(
            s.add("x", Some("not base64!"), 64, 0),
            Err(SiteError::InvalidPublicKey(_))
        ));
        assert!(matches!(
            s.add("x", Some("AAAA"), 64, 0),
            Err(SiteError::InvalidPublicKey(_))
        ));
        // Every point of small order, and with the top bit set (which
        // X25519 ignores), is refused; the all-zero PSK-like key too.
        for point in LOW_ORDER_POINTS {
            for top in [0, 0x80] {
                let mut p = point;
                p[31] |= top;
                let text = b64(&p);
                assert!(
                    matches!(
                        s.add("x", Some(&text), 64, 0),
                        Err(SiteError::InvalidPublicKey(why)) if why.contains("small order")
                    ),
                    "{text}"
                );
            }
        }
        assert_eq!(
            s.add("x", None, 48, 0),
            Err(SiteError::UnsupportedLength(48))
        );
        assert_eq!(
            s.add("Bad_Name", None, 64, 0),
            Err(SiteError::InvalidName("Bad_Name".into()))
        );
        // Exhaust the /48 with /56s: 256 of them, less the one the
        // transfer /64 lives in.
        for i in 0..255 {
            s.add(&format!("n{i}"), None, 56, 0).unwrap();
        }
        let before = s.list().unwrap().len();
        assert_eq!(
            s.add("late", None, 56, 0),
            Err(SiteError::PoolExhausted(56))
        );
        assert_eq!(s.list().unwrap().len(), before);
        // /64s still fit beside the transfer network.
        assert!(s.add("small", None, 64, 0).is_ok());
        assert_eq!(s.remove("nope", 0), Err(SiteError::NotFound("nope".into())));
    }

    #[test]
    fn running_out_of_ipv4_transfer_addresses_takes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A /29: the broker .1, sites .2 to .6.
        let s = store4(dir.path(), 0, "192.168.3.0", 29);
        for i in 0..5 {
            s.add(&format!("s{i}"), None, 64, 0).unwrap();
        }
        let free_before: usize = s.tree.scan_prefix(b"F").count();
        assert_eq!(s.add("s5", None, 64, 0), Err(SiteError::TransferExhausted));
        assert_eq!(
            s.tree.scan_prefix(b"F").count(),
            free_before,
            "the prefix went back"
        );
        s.remove("s0", 0).unwrap();
        s.release_expired(1).unwrap();
        assert_eq!(
            s.add("s5", None, 64, 1).unwrap().transfer4,
            "192.168.3.2".parse::<Ipv4Addr>().unwrap()
        );
    }
}
