//! The ESP seal and open paths allocate nothing per packet: counted with a
//! global allocator that tallies the allocations of the measuring thread
//! (the test harness's own threads may allocate meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sixgate_dataplane::esp::EspSa;
use sixgate_proto::crypto::{ChildSaKeys, Encryption, EspKeys, Integrity};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised: reading it never allocates.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged, only counting.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn seal_and_open_do_not_allocate() {
    COUNTING.with(|c| c.set(true));
    // The counter counts (or this test could not fail).
    let probe = ALLOCATIONS.load(Ordering::Relaxed);
    let v: Vec<u8> = Vec::with_capacity(64);
    std::hint::black_box(&v);
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > probe);

    // One key of each algorithm family, from a KEYMAT as IKE derives it.
    let keys: Vec<EspKeys> = [
        (Encryption::AesGcm16 { key_bits: 256 }, None),
        (Encryption::ChaCha20Poly1305, None),
        (
            Encryption::AesCbc { key_bits: 256 },
            Some(Integrity::HmacSha256_128),
        ),
    ]
    .into_iter()
    .map(|(encr, integ)| {
        let keymat: Vec<u8> = (0..ChildSaKeys::keymat_len(encr, integ) as u8).collect();
        ChildSaKeys::from_keymat(encr, integ, &keymat)
            .expect("keys")
            .initiator_to_responder
    })
    .collect();
    for k in &keys {
        let mut tx = EspSa::new(0x100, k, true).unwrap();
        let mut rx = EspSa::new(0x100, k, true).unwrap();
        let inner = vec![0x60u8; 1400];
        let mut sealed = Vec::with_capacity(2048);
        let mut copy = Vec::with_capacity(2048);
        tx.seal(&inner, 41, &mut sealed).unwrap();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            tx.seal(&inner, 41, &mut sealed).unwrap();
            copy.clear();
            copy.extend_from_slice(&sealed);
            let (got, _) = rx.open(&mut copy).unwrap();
            assert_eq!(got.len(), inner.len());
        }
        let after = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(
            after - before,
            0,
            "{k:?}: {} allocations in 1000 packets",
            after - before
        );
    }
}
