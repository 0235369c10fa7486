//! Randomness for the egress backends: [`OsEntropy`] (a `getrandom` call per draw) and
//! [`ThreadEntropy`] (a ChaCha12 generator per thread, seeded from it). Both implement
//! [`egress_core::rt::Entropy`]; the core itself draws no randomness, and this crate keeps the
//! random-number crates out of its dependency tree.
//!
//! ```
//! use egress_core::rt::Entropy;
//! use egress_entropy::ThreadEntropy;
//!
//! let mut seed = [0u8; 8];
//! ThreadEntropy.fill(&mut seed);
//! ```

use std::time::SystemTime;

use egress_core::rt::Entropy;

/// The operating system's random number generator (through `getrandom`).
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) {
        if let Err(error) = getrandom::fill(dest) {
            // Only possible on a system whose generator is unavailable. IDs and jitter stay
            // usable (not secret) from the clock's low bits; say so loudly.
            tracing::error!(%error, "the OS random number generator failed; using a time-based fallback");
            let mut x = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            for b in dest.iter_mut() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (x >> 56) as u8;
            }
        }
    }
}

/// Random bytes from a ChaCha12 generator of each thread (`rand`'s `StdRng`), seeded from
/// [`OsEntropy`] and reseeded from it after every 64 KiB: the operating system's randomness for
/// one system call per many calls instead of one per call (a `getrandom` system call is a
/// sizeable part of a whole loopback call). What the backends' builders use.
///
/// Like `rand`'s own thread generator, it is not reseeded when the process forks: a child that
/// keeps using a client built before the fork should use [`OsEntropy`] (through
/// `egress_core::Client::new` with a [`Runtime`](egress_core::Runtime) of its own).
#[derive(Debug, Default)]
pub struct ThreadEntropy;

/// Bytes a thread's generator gives before it is reseeded (as `rand`'s `ThreadRng`).
const RESEED_AFTER: usize = 64 * 1024;

thread_local! {
    static GENERATOR: std::cell::RefCell<Option<(rand::rngs::StdRng, usize)>> =
        const { std::cell::RefCell::new(None) };
}

impl Entropy for ThreadEntropy {
    fn fill(&self, dest: &mut [u8]) {
        use rand::{RngCore, SeedableRng};
        GENERATOR.with_borrow_mut(|slot| {
            if slot
                .as_ref()
                .is_none_or(|(_, given)| *given >= RESEED_AFTER)
            {
                let mut seed = [0u8; 32];
                OsEntropy.fill(&mut seed);
                *slot = Some((rand::rngs::StdRng::from_seed(seed), 0));
            }
            let (generator, given) = slot.as_mut().expect("invariant: seeded just above");
            generator.fill_bytes(dest);
            *given += dest.len();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_entropy_never_repeats_itself_across_calls_reseeds_or_threads() {
        let draw = || {
            let mut bytes = [0u8; 32];
            ThreadEntropy.fill(&mut bytes);
            bytes
        };
        let mut seen = std::collections::HashSet::new();
        // Past two reseeds (64 KiB each) on this thread.
        for _ in 0..(3 * RESEED_AFTER / 32) {
            assert!(seen.insert(draw()), "a 32-byte draw repeated");
        }
        let other = std::thread::spawn(move || (0..100).map(|_| draw()).collect::<Vec<_>>())
            .join()
            .expect("the drawing thread does not panic");
        for bytes in other {
            assert!(seen.insert(bytes), "another thread repeated a draw");
        }
        assert!(seen.iter().all(|b| b.iter().any(|x| *x != 0)));
    }
}
