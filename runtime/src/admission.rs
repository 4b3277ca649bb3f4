//! Address admission off the IKE path: the engine asks for a client's
//! address ([`Event::AddressRequested`]), a writer thread of its own finds
//! the lease and makes it durable, and the IKE task hands the answer back
//! to the engine ([`Endpoint::address_assigned`]). No client's IKE waits on
//! another client's disk write.
//!
//! The writer commits in groups: it takes every request that is waiting,
//! writes each, then flushes once for all of them, so concurrent
//! admissions share one fsync (the same idea as a database's group
//! commit). Leases are held by reference: an identity with two IKE SAs (a
//! reconnect overlapping the old SA) keeps its address until the last of
//! them goes.
//!
//! [`Event::AddressRequested`]: sixgate_proto::endpoint::Event::AddressRequested
//! [`Endpoint::address_assigned`]: sixgate_proto::endpoint::Endpoint::address_assigned

use std::collections::HashMap;
use std::io;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sixgate_proto::endpoint::SaId;
use sixgate_proto::identity::CanonicalIdentity;
use tokio::sync::mpsc;

/// Where leases live: sled on one broker, a shared store on several.
/// Called from the writer thread only, so implementations may block.
pub trait LeaseStore: Send + 'static {
    /// The address of `identity` (its own lease, or a new one), written
    /// but not necessarily durable; `None` when the pool is exhausted.
    fn assign(&mut self, identity: &CanonicalIdentity) -> io::Result<Option<Ipv6Addr>>;
    /// Its last holder is gone: the address stays the identity's until
    /// the pool needs it.
    fn release(&mut self, identity: &CanonicalIdentity, address: Ipv6Addr) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> io::Result<()>;
}

enum Job {
    Assign(SaId, CanonicalIdentity),
    Release(CanonicalIdentity, Ipv6Addr),
}

/// An admission's outcome, for the IKE task to give to the engine.
#[derive(Debug)]
pub struct Admitted {
    /// The IKE SA that asked.
    pub sa: SaId,
    /// Its identity.
    pub identity: CanonicalIdentity,
    /// The durable lease, or `None` (pool exhausted, or the store failed).
    pub address: Option<Ipv6Addr>,
}

/// What the writer has done, for status and for tests.
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    /// Leases assigned (and made durable).
    pub assigned: AtomicU64,
    /// Requests answered with no address.
    pub refused: AtomicU64,
    /// Flushes (group commits).
    pub flushes: AtomicU64,
    /// Store errors.
    pub errors: AtomicU64,
}

/// The IKE task's side of admission: the holder counts and the queue to
/// the writer thread.
pub struct Admission {
    jobs: std::sync::mpsc::Sender<Job>,
    /// SAs holding (or about to hold) each identity's lease.
    holders: HashMap<CanonicalIdentity, usize>,
    counters: Arc<AdmissionCounters>,
}

impl Admission {
    /// Starts the writer thread on `store`; outcomes arrive on the
    /// returned receiver.
    pub fn start(
        mut store: Box<dyn LeaseStore>,
    ) -> io::Result<(Admission, mpsc::UnboundedReceiver<Admitted>)> {
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(AdmissionCounters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || writer(&mut *store, jobs_rx, done_tx, &c))?;
        Ok((
            Admission {
                jobs: jobs_tx,
                holders: HashMap::new(),
                counters,
            },
            done_rx,
        ))
    }

    /// The writer's counters.
    pub fn counters(&self) -> Arc<AdmissionCounters> {
        self.counters.clone()
    }

    /// An SA asks for `identity`'s address.
    pub fn request(&mut self, sa: SaId, identity: CanonicalIdentity) {
        *self.holders.entry(identity.clone()).or_default() += 1;
        let _ = self.jobs.send(Job::Assign(sa, identity));
    }

    /// An SA no longer holds (or never got) `identity`'s address; the
    /// lease is released when nobody holds it.
    pub fn release(&mut self, identity: &CanonicalIdentity, address: Option<Ipv6Addr>) {
        let Some(n) = self.holders.get_mut(identity) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.holders.remove(identity);
            if let Some(address) = address {
                let _ = self.jobs.send(Job::Release(identity.clone(), address));
            }
        }
    }

    /// How many SAs hold `identity`'s lease.
    pub fn holders(&self, identity: &CanonicalIdentity) -> usize {
        self.holders.get(identity).copied().unwrap_or(0)
    }
}

/// The writer thread: a group of jobs at a time, one flush per group.
fn writer(
    store: &mut dyn LeaseStore,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Admitted>,
    counters: &AdmissionCounters,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let mut answers = Vec::new();
        for job in group {
            match job {
                Job::Assign(sa, identity) => {
                    let address = match store.assign(&identity) {
                        Ok(a) => a,
                        Err(e) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::error!("lease store: assigning {identity}: {e}");
                            None
                        }
                    };
                    answers.push(Admitted {
                        sa,
                        identity,
                        address,
                    });
                }
                Job::Release(identity, address) => {
                    if let Err(e) = store.release(&identity, address) {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("lease store: releasing {identity}'s {address}: {e}");
                    }
                }
            }
        }
        counters.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = store.flush() {
            // Not durable: nobody may be told otherwise.
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("lease store: flush: {e}; refusing this group's addresses");
            for a in &mut answers {
                a.address = None;
            }
        }
        for a in answers {
            let counter = match a.address {
                Some(_) => &counters.assigned,
                None => &counters.refused,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if done.send(a).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A store in memory whose flush takes its time, recording the
    /// releases it gets.
    struct SlowStore {
        next: u16,
        leases: HashMap<CanonicalIdentity, Ipv6Addr>,
        released: Arc<Mutex<Vec<Ipv6Addr>>>,
        fail_flush: bool,
    }

    impl LeaseStore for SlowStore {
        fn assign(&mut self, identity: &CanonicalIdentity) -> io::Result<Option<Ipv6Addr>> {
            if let Some(a) = self.leases.get(identity) {
                return Ok(Some(*a));
            }
            self.next += 1;
            let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, self.next);
            self.leases.insert(identity.clone(), a);
            Ok(Some(a))
        }
        fn release(&mut self, _: &CanonicalIdentity, address: Ipv6Addr) -> io::Result<()> {
            self.released.lock().unwrap().push(address);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            std::thread::sleep(Duration::from_millis(50));
            if self.fail_flush {
                Err(io::Error::other("disk full"))
            } else {
                Ok(())
            }
        }
    }

    fn id(s: &str) -> CanonicalIdentity {
        CanonicalIdentity::parse(s).unwrap()
    }

    fn store(released: &Arc<Mutex<Vec<Ipv6Addr>>>, fail_flush: bool) -> Box<SlowStore> {
        Box::new(SlowStore {
            next: 0,
            leases: HashMap::new(),
            released: released.clone(),
            fail_flush,
        })
    }

    #[tokio::test]
    async fn waiting_requests_share_a_flush_and_leases_are_held_by_reference() {
        let released = Arc::new(Mutex::new(Vec::new()));
        let (mut admission, mut done) = Admission::start(store(&released, false)).unwrap();
        for i in 0..50u64 {
            admission.request(SaId(i), id(&format!("c{i}@example.net")));
        }
        let mut answers = Vec::new();
        while answers.len() < 50 {
            answers.push(done.recv().await.unwrap());
        }
        assert!(answers.iter().all(|a| a.address.is_some()));
        let flushes = admission.counters().flushes.load(Ordering::Relaxed);
        assert!(
            flushes < 10,
            "{flushes} flushes for 50 requests: not grouped"
        );

        // Two SAs of one identity: the first going leaves the lease alone.
        let alice = id("alice@example.net");
        admission.request(SaId(100), alice.clone());
        admission.request(SaId(101), alice.clone());
        let a = done.recv().await.unwrap().address;
        let b = done.recv().await.unwrap().address;
        assert_eq!(a, b, "one identity, one address");
        admission.release(&alice, a);
        assert_eq!(admission.holders(&alice), 1);
        admission.release(&alice, a);
        assert_eq!(admission.holders(&alice), 0);
        // The release reaches the store on the writer thread.
        admission.request(SaId(102), id("bob@example.net"));
        done.recv().await.unwrap();
        assert_eq!(*released.lock().unwrap(), vec![a.unwrap()]);
    }

    #[tokio::test]
    async fn a_failed_flush_gives_no_address() {
        let released = Arc::new(Mutex::new(Vec::new()));
        let (mut admission, mut done) = Admission::start(store(&released, true)).unwrap();
        admission.request(SaId(1), id("c@example.net"));
        let a = done.recv().await.unwrap();
        assert_eq!(a.address, None, "not durable, not given");
        assert_eq!(admission.counters().errors.load(Ordering::Relaxed), 1);
    }
}
