//! Token buckets for per-port rate limits (bits per second, burst in bits)
//! and storm control (frames per second). Time is passed in (nanoseconds),
//! so the limiter is tested on a simulated clock. Refill is lazy, in
//! integer units with the fractional part carried, so long-run accuracy
//! does not drift. A frame larger than the whole bucket is let through
//! when the bucket is full (and empties it), so it never wedges a port.

const NS: u128 = 1_000_000_000;

/// A token bucket whose tokens are "units × 1e9" (bits or frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Units per second.
    rate: u64,
    /// Capacity in units.
    burst: u64,
    /// Tokens, scaled by 1e9.
    tokens: u128,
    last: u64,
}

/// The result of asking for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Admitted although larger than the bucket (the bucket was full).
    OverConsumed,
    No,
}

impl TokenBucket {
    /// A full bucket of `burst` units refilled at `rate` units per second.
    pub fn new(rate: u64, burst: u64, now: u64) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            rate: rate.max(1),
            burst,
            tokens: burst as u128 * NS,
            last: now,
        }
    }

    /// Changes rate and burst live, keeping the tokens it has (capped).
    pub fn reconfigure(&mut self, rate: u64, burst: u64, now: u64) {
        self.refill(now);
        self.rate = rate.max(1);
        self.burst = burst.max(1);
        self.tokens = self.tokens.min(self.burst as u128 * NS);
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now: u64) {
        if now > self.last {
            let cap = self.burst as u128 * NS;
            let add = (now - self.last) as u128 * self.rate as u128;
            self.tokens = (self.tokens + add).min(cap);
            self.last = now;
        }
    }

    /// Takes `units` if available.
    pub fn admit(&mut self, units: u64, now: u64) -> Admit {
        self.refill(now);
        let want = units as u128 * NS;
        let cap = self.burst as u128 * NS;
        if self.tokens >= want {
            self.tokens -= want;
            Admit::Yes
        } else if want > cap && self.tokens == cap {
            self.tokens = 0;
            Admit::OverConsumed
        } else {
            Admit::No
        }
    }

    /// Nanoseconds until `units` could be admitted (0 if now).
    pub fn wait_ns(&self, units: u64, now: u64) -> u64 {
        let mut b = self.clone();
        b.refill(now);
        let want = (units.min(b.burst)) as u128 * NS;
        if b.tokens >= want {
            0
        } else {
            ((want - b.tokens) / b.rate as u128 + 1) as u64
        }
    }
}

/// How long a sender counts as active at a congested port.
const ACTIVE_NS: u64 = 200_000_000;

#[derive(Debug, Clone)]
struct Sender {
    bucket: TokenBucket,
    weight: u32,
    seen: u64,
}

/// The rate limit of frames *to* a port, shared by the ports that send to
/// it in proportion to their minimum-bandwidth weights when it is
/// congested (its bucket below half full); when it is not, every sender
/// passes freely. Each active sender has a child bucket at its weighted
/// share of the rate; the port's own bucket is the hard cap.
#[derive(Debug, Clone)]
pub struct WeightedLimiter {
    total: TokenBucket,
    senders: std::collections::HashMap<u32, Sender>,
    weight_sum: u32,
}

impl WeightedLimiter {
    pub fn new(rate: u64, burst: u64, now: u64) -> Self {
        WeightedLimiter {
            total: TokenBucket::new(rate, burst, now),
            senders: Default::default(),
            weight_sum: 0,
        }
    }

    pub fn reconfigure(&mut self, rate: u64, burst: u64, now: u64) {
        self.total.reconfigure(rate, burst, now);
        self.weight_sum = 0; // child rates are recomputed on the next frame
    }

    pub fn rate(&self) -> u64 {
        self.total.rate()
    }

    pub fn burst(&self) -> u64 {
        self.total.burst()
    }

    fn congested(&mut self, now: u64) -> bool {
        self.total.refill(now);
        self.total.tokens < self.total.burst as u128 * NS / 2
    }

    /// Admits `bits` from sender `from` (weight 1..=100).
    pub fn admit(&mut self, from: u32, weight: u32, bits: u64, now: u64) -> Admit {
        let weight = weight.clamp(1, 100);
        self.senders
            .retain(|k, s| *k == from || now.saturating_sub(s.seen) < ACTIVE_NS);
        let (rate, burst) = (self.total.rate(), self.total.burst());
        let s = self.senders.entry(from).or_insert_with(|| Sender {
            bucket: TokenBucket::new(rate, burst, now),
            weight,
            seen: now,
        });
        s.seen = now;
        s.weight = weight;
        let sum: u32 = self.senders.values().map(|s| s.weight).sum();
        if sum != self.weight_sum {
            self.weight_sum = sum;
            for s in self.senders.values_mut() {
                let share = (rate as u128 * s.weight as u128 / sum as u128) as u64;
                let b = (burst as u128 * s.weight as u128 / sum as u128) as u64;
                s.bucket.reconfigure(share, b.max(2 * 1522 * 8), now);
            }
        }
        if !self.congested(now) {
            let r = self.total.admit(bits, now);
            if r != Admit::No {
                if let Some(s) = self.senders.get_mut(&from) {
                    let _ = s.bucket.admit(bits, now);
                }
            }
            return r;
        }
        let child = self
            .senders
            .get_mut(&from)
            .map(|s| s.bucket.admit(bits, now))
            .unwrap_or(Admit::No);
        if child == Admit::No {
            return Admit::No;
        }
        self.total.admit(bits, now)
    }
}

/// The default burst for a rate: 10 ms worth, at least two full frames.
pub fn default_burst_bits(rate_bps: u64) -> u64 {
    (rate_bps / 100).max(2 * 1522 * 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn starts_full_then_refills_at_rate() {
        let mut b = TokenBucket::new(8_000, 16_000, 0); // 1000 B/s, 2000 B burst
        assert_eq!(b.admit(16_000, 0), Admit::Yes);
        assert_eq!(b.admit(8, 0), Admit::No);
        assert_eq!(b.admit(8_000, 500 * MS), Admit::No);
        assert_eq!(b.admit(8_000, 1000 * MS), Admit::Yes);
        assert_eq!(b.wait_ns(4_000, 1000 * MS), 500 * MS + 1);
    }

    #[test]
    fn oversized_frame_does_not_wedge() {
        let mut b = TokenBucket::new(1_000, 100, 0);
        assert_eq!(b.admit(12_000, 0), Admit::OverConsumed);
        assert_eq!(b.admit(12_000, 1), Admit::No);
        // Once the bucket is full again, the next big frame passes.
        assert_eq!(b.admit(12_000, 100 * MS), Admit::OverConsumed);
    }

    #[test]
    fn live_reconfigure_keeps_tokens_capped() {
        let mut b = TokenBucket::new(1_000_000, 1_000_000, 0);
        b.reconfigure(10, 50, 0);
        assert_eq!(b.admit(50, 0), Admit::Yes);
        assert_eq!(b.admit(1, 0), Admit::No);
        assert_eq!(b.rate(), 10);
    }

    /// Offers `offered_bps` of `frame` bytes for `secs` on a simulated
    /// clock; returns the admitted rate in bits/s.
    fn admitted_rate(rate: u64, burst: u64, offered_bps: u64, frame: u64, secs: u64) -> f64 {
        let mut b = TokenBucket::new(rate, burst, 0);
        let gap = (frame * 8 * 1_000_000_000) / offered_bps;
        let mut bits = 0u64;
        let mut t = 0;
        while t < secs * 1_000_000_000 {
            if b.admit(frame * 8, t) != Admit::No {
                bits += frame * 8;
            }
            t += gap.max(1);
        }
        // Remove the initial burst from the long-run rate.
        (bits.saturating_sub(burst)) as f64 / secs as f64
    }

    /// Two senders offering `offer` bits/s each into a limiter of `rate`;
    /// returns what each got (bits/s) over `secs`.
    fn share(rate: u64, w: (u32, u32), offer: (u64, u64), secs: u64) -> (f64, f64) {
        let mut l = WeightedLimiter::new(rate, default_burst_bits(rate), 0);
        let frame = 1500 * 8;
        let gaps = (
            frame * 1_000_000_000 / offer.0,
            frame * 1_000_000_000 / offer.1,
        );
        let (mut next, mut got) = ((0u64, gaps.1 / 2), (0u64, 0u64));
        let end = secs * 1_000_000_000;
        while next.0 < end || next.1 < end {
            if next.0 <= next.1 {
                if l.admit(1, w.0, frame, next.0) != Admit::No {
                    got.0 += frame;
                }
                next.0 += gaps.0;
            } else {
                if l.admit(2, w.1, frame, next.1) != Admit::No {
                    got.1 += frame;
                }
                next.1 += gaps.1;
            }
        }
        (got.0 as f64 / secs as f64, got.1 as f64 / secs as f64)
    }

    #[test]
    fn weights_divide_a_congested_port() {
        let rate = 100_000_000;
        let (a, b) = share(rate, (1, 3), (rate, rate), 4);
        let total = a + b;
        assert!(
            (total - rate as f64).abs() / (rate as f64) < 0.03,
            "total {total}"
        );
        let ratio = b / a;
        assert!((ratio - 3.0).abs() < 0.3, "shares {a} {b} ratio {ratio}");
        let (a, b) = share(rate, (1, 1), (rate, rate), 4);
        assert!((b / a - 1.0).abs() < 0.1, "equal weights {a} {b}");
    }

    #[test]
    fn no_congestion_holds_nobody_back() {
        let rate = 100_000_000;
        // Light senders (30 % + 20 % of the rate) pass entirely, whatever the weights.
        let (a, b) = share(rate, (1, 100), (30_000_000, 20_000_000), 4);
        assert!(
            (a - 30e6).abs() / 30e6 < 0.02 && (b - 20e6).abs() / 20e6 < 0.02,
            "{a} {b}"
        );
        // A heavy sender alone gets the whole port, not its weighted share.
        let (a, b) = share(rate, (1, 3), (200_000_000, 1), 4);
        assert!(a > 0.95 * rate as f64, "alone: {a} {b}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn converges_to_configured_rate(
            rate_mbit in 1u64..1000,
            frame in prop::sample::select(vec![64u64, 512, 1500]),
            overload in 2u64..5,
        ) {
            let rate = rate_mbit * 1_000_000;
            let burst = default_burst_bits(rate);
            let got = admitted_rate(rate, burst, rate * overload, frame, 2);
            let err = (got - rate as f64).abs() / rate as f64;
            prop_assert!(err < 0.01, "rate {rate} got {got} ({:.3}%)", err * 100.0);
        }

        #[test]
        fn under_the_rate_nothing_is_dropped(rate_mbit in 1u64..1000, frame in 64u64..1500) {
            let rate = rate_mbit * 1_000_000;
            let mut b = TokenBucket::new(rate, default_burst_bits(rate), 0);
            let gap = frame * 8 * 1_000_000_000 / (rate / 2);
            for i in 0..2000u64 {
                prop_assert_ne!(b.admit(frame * 8, i * gap), Admit::No);
            }
        }

        #[test]
        fn burst_is_honoured(burst_frames in 1u64..200) {
            let mut b = TokenBucket::new(1, burst_frames * 1500 * 8, 0);
            for _ in 0..burst_frames {
                prop_assert_eq!(b.admit(1500 * 8, 0), Admit::Yes);
            }
            prop_assert_eq!(b.admit(1500 * 8, 0), Admit::No);
        }
    }
}
