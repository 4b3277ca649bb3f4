//! Stateless cookies (RFC 7296 2.6) and the half-open accounting that
//! decides when to ask for them.
//!
//! A cookie is `version | HMAC(secret, Ni | IPi | SPIi)`: it proves the
//! initiator receives at its address before we keep any state for it. The
//! secret rotates; the previous one stays valid for one period so a cookie
//! handed out just before a rotation still works. The version octet says
//! which secret made it.
//!
//! Cookies are demanded when the half-open SAs pass a global threshold, or
//! when one source address holds more than its share. The per-source limit
//! does not refuse anyone: many clients behind one carrier-grade NAT share
//! an address, and each of them can still answer a cookie.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;
use ring::hmac;

use crate::crypto::constant_time_eq;

pub(crate) struct CookieJar {
    current: (u8, hmac::Key),
    previous: Option<(u8, hmac::Key)>,
    rotated_at: Instant,
    period: Duration,
}

fn new_key(rng: &mut dyn CryptoRngCore) -> hmac::Key {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    hmac::Key::new(hmac::HMAC_SHA256, &secret)
}

impl CookieJar {
    pub(crate) fn new(now: Instant, period: Duration, rng: &mut dyn CryptoRngCore) -> Self {
        CookieJar {
            current: (0, new_key(rng)),
            previous: None,
            rotated_at: now,
            period,
        }
    }

    /// Rotates the secret if its period is over.
    pub(crate) fn maybe_rotate(&mut self, now: Instant, rng: &mut dyn CryptoRngCore) {
        if now.saturating_duration_since(self.rotated_at) >= self.period {
            let version = self.current.0.wrapping_add(1);
            let old = std::mem::replace(&mut self.current, (version, new_key(rng)));
            self.previous = Some(old);
            self.rotated_at = now;
        }
    }

    fn compute(key: &(u8, hmac::Key), ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&key.1);
        ctx.update(ni);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        let mut out = vec![key.0];
        out.extend_from_slice(&ctx.sign().as_ref()[..16]);
        out
    }

    /// The cookie to hand to this initiator.
    pub(crate) fn cookie(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        Self::compute(&self.current, ni, ip, spi_i)
    }

    /// Whether `cookie` is one we made for this initiator recently.
    pub(crate) fn check(&self, cookie: &[u8], ni: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        let Some(&version) = cookie.first() else {
            return false;
        };
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .filter(|k| k.0 == version)
            .any(|k| constant_time_eq(&Self::compute(k, ni, ip, spi_i), cookie))
    }
}

/// Half-open IKE SAs, counted globally and per source address.
#[derive(Default)]
pub(crate) struct HalfOpen {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl HalfOpen {
    pub(crate) fn add(&mut self, ip: IpAddr) {
        self.total += 1;
        *self.by_source.entry(ip).or_default() += 1;
    }

    pub(crate) fn remove(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&ip);
            }
        }
    }

    pub(crate) fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn count_from(&self, ip: IpAddr) -> usize {
        self.by_source.get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn cookies_survive_one_rotation_only() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0, Duration::from_secs(60), &mut rng);
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let c = jar.cookie(b"nonce", ip, 7);
        assert!(jar.check(&c, b"nonce", ip, 7));
        assert!(!jar.check(&c, b"nonce", ip, 8));
        assert!(!jar.check(&c, b"nonce", "192.0.2.3".parse().unwrap(), 7));
        assert!(!jar.check(&c, b"other", ip, 7));
        jar.maybe_rotate(t0 + Duration::from_secs(61), &mut rng);
        assert!(
            jar.check(&c, b"nonce", ip, 7),
            "previous secret still valid"
        );
        jar.maybe_rotate(t0 + Duration::from_secs(122), &mut rng);
        assert!(!jar.check(&c, b"nonce", ip, 7), "two rotations later");
        assert!(!jar.check(&[], b"nonce", ip, 7));
    }
}
