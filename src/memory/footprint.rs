//! What requests to one model version hold, learned from the requests it served, so the next one reserves about
//! what it will use before its body is read.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Bodies up to this size are small: their requests read the body before reserving (it is bounded by this), and
/// are estimated from the largest small request seen rather than per body byte.
pub const SMALL_BODY: usize = 64 << 10;

/// Bytes per body byte before a version has served a large request, in sixteenths: a JSON body, the tensors
/// decoded from it, outputs of about the input's size and their encoding.
const DEFAULT_PER_BODY_BYTE: u32 = 4 * 16;

/// A version's learned request footprint.
#[derive(Debug)]
pub struct Footprint {
    /// Peak bytes per body byte of large requests, in sixteenths; follows increases at once and decreases slowly.
    per_body_byte: AtomicU32,
    /// The most a small request held, decaying slowly.
    small_peak: AtomicUsize,
}

impl Default for Footprint {
    fn default() -> Self {
        Footprint {
            per_body_byte: AtomicU32::new(DEFAULT_PER_BODY_BYTE),
            small_peak: AtomicUsize::new(0),
        }
    }
}

impl Footprint {
    /// The bytes a request with a body of `body` bytes is expected to hold at its peak.
    pub fn estimate(&self, body: usize) -> usize {
        let per = self.per_body_byte.load(Ordering::Relaxed) as usize;
        let proportional = body.saturating_mul(per) / 16;
        if body <= SMALL_BODY {
            (proportional + (16 << 10)).max(self.small_peak.load(Ordering::Relaxed))
        } else {
            proportional
        }
    }

    /// Learns from a request that held `peak` bytes for a body of `body` bytes.
    pub fn observe(&self, body: usize, peak: usize) {
        if body <= SMALL_BODY {
            let _ = self
                .small_peak
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(peak.max(old - old / 16))
                });
            return;
        }
        let seen = u32::try_from(peak.saturating_mul(16) / body)
            .unwrap_or(u32::MAX)
            .max(16);
        let _ = self
            .per_body_byte
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                // A sixteenth of the way down, at least one step, so it settles on `seen`.
                Some(if seen >= old {
                    seen
                } else {
                    old - (old - seen).div_ceil(16)
                })
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_what_requests_held() {
        let f = Footprint::default();
        assert_eq!(f.estimate(1 << 20), 4 << 20);
        assert_eq!(f.estimate(1000), 4000 + (16 << 10));
        // A larger peak is taken at once; a smaller one lowers the estimate slowly.
        f.observe(1 << 20, 7 << 20);
        assert_eq!(f.estimate(1 << 20), 7 << 20);
        for _ in 0..200 {
            f.observe(1 << 20, 2 << 20);
        }
        let settled = f.estimate(1 << 20);
        assert!((2 << 20..(5 << 19)).contains(&settled), "{settled}");
        // Never below the body itself.
        f.observe(1 << 20, 0);
        assert!(f.estimate(1 << 20) >= 1 << 20);
        // Small requests: the largest seen.
        f.observe(100, 10 << 20);
        assert_eq!(f.estimate(100), 10 << 20);
    }
}
