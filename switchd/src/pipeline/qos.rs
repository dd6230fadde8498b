//! Token buckets for per-port rate limits (bits per second, burst in bits)
//! and storm control (frames per second). Time is passed in (nanoseconds),
//! so the limiter is tested on a simulated clock. Refill is lazy, in
//! integer units with the fractional part carried, so long-run accuracy
//! does not drift. A frame larger than the whole bucket is let through
//! when the bucket is full (and empties it), so it never wedges a port.
//! Frames to a rate-limited port wait in a weighted fair queue
//! (`FairQueue`) until the port's bucket admits them.

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

/// Bits one unit of minimum-bandwidth weight may send per round of the
/// fair queue: one full-size Ethernet frame.
const QUANTUM_BITS: u64 = 1514 * 8;

#[derive(Debug)]
struct Flow<T> {
    from: u32,
    weight: u32,
    /// Deficit round robin credit, in bits.
    deficit: u64,
    bits: u64,
    items: std::collections::VecDeque<(u64, T)>,
}

/// The shaping queue of frames *to* a port (qos.ingressRate): one FIFO per
/// sending port, served by deficit round robin in proportion to the
/// senders' minimum-bandwidth weights, each frame leaving only when the
/// port's token bucket admits it. TCP into a shaped port sees a queue, not
/// a policer, so it settles at the rate instead of collapsing; when the
/// queue is full, the longest flow loses its newest frame, so a heavy
/// sender cannot take the buffer from a light one. Work-conserving: a
/// sender alone gets the whole rate; weights matter only under contention.
#[derive(Debug)]
pub struct FairQueue<T> {
    flows: Vec<Flow<T>>,
    frames: usize,
    bits: u64,
    /// The flow being served, and whether it has had its quantum for
    /// this visit.
    cursor: usize,
    credited: bool,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            flows: Vec::new(),
            frames: 0,
            bits: 0,
            cursor: 0,
            credited: false,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Frames waiting.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Queues `item` of `bits` from sender `from` (weight 1..=100). While
    /// the queue holds more than `max_frames` frames or `max_bits` bits,
    /// the longest flow's newest frame is dropped into `dropped` (the
    /// caller frees and counts it): possibly `item` itself.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        from: u32,
        weight: u32,
        bits: u64,
        item: T,
        max_frames: usize,
        max_bits: u64,
        dropped: &mut Vec<T>,
    ) {
        let weight = weight.clamp(1, 100);
        let i = match self.flows.iter().position(|f| f.from == from) {
            Some(i) => i,
            None => {
                self.flows.push(Flow {
                    from,
                    weight,
                    deficit: 0,
                    bits: 0,
                    items: Default::default(),
                });
                self.flows.len() - 1
            }
        };
        let f = &mut self.flows[i];
        f.weight = weight;
        f.bits += bits;
        f.items.push_back((bits, item));
        self.frames += 1;
        self.bits += bits;
        while self.frames > max_frames.max(1) || (self.bits > max_bits && self.frames > 1) {
            let Some(longest) = (0..self.flows.len()).max_by_key(|&i| self.flows[i].bits) else {
                break;
            };
            let f = &mut self.flows[longest];
            let Some((b, it)) = f.items.pop_back() else {
                break;
            };
            f.bits -= b;
            self.frames -= 1;
            self.bits -= b;
            dropped.push(it);
            if f.items.is_empty() {
                self.remove_flow(longest);
            }
        }
    }

    fn remove_flow(&mut self, i: usize) {
        self.flows.remove(i);
        if i < self.cursor {
            self.cursor -= 1;
        } else if i == self.cursor {
            self.credited = false;
        }
        if self.cursor >= self.flows.len() {
            self.cursor = 0;
        }
    }

    /// The flow whose head goes next in deficit round robin order.
    fn select(&mut self) -> Option<usize> {
        if self.flows.is_empty() {
            return None;
        }
        // Each visit credits a flow at least one quantum, so a head of
        // any size fits within (head / quantum + 1) passes over the flows.
        let most = self.flows.len() * (MAX_FRAME_QUANTA + 2);
        for _ in 0..most {
            let f = &mut self.flows[self.cursor];
            if !self.credited {
                f.deficit += f.weight as u64 * QUANTUM_BITS;
                self.credited = true;
            }
            match f.items.front() {
                Some((bits, _)) if *bits <= f.deficit => return Some(self.cursor),
                _ => {
                    self.cursor = (self.cursor + 1) % self.flows.len();
                    self.credited = false;
                }
            }
        }
        Some(self.cursor)
    }

    /// The next frame in weighted order, if `bucket` admits it now.
    pub fn pop(&mut self, bucket: &mut TokenBucket, now: u64) -> Option<T> {
        let i = self.select()?;
        let bits = self.flows[i].items.front()?.0;
        if bucket.admit(bits, now) == Admit::No {
            return None;
        }
        self.take(i)
    }

    fn take(&mut self, i: usize) -> Option<T> {
        let f = &mut self.flows[i];
        let (bits, item) = f.items.pop_front()?;
        f.deficit = f.deficit.saturating_sub(bits);
        f.bits -= bits;
        self.frames -= 1;
        self.bits -= bits;
        if f.items.is_empty() {
            // An emptied flow keeps no credit (DRR): it rejoins at the back.
            self.remove_flow(i);
        }
        Some(item)
    }

    /// Everything queued, in weighted order, without asking a bucket (the
    /// limit was removed, or the port goes away).
    pub fn drain_all(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.frames);
        while let Some(i) = self.select() {
            match self.take(i) {
                Some(t) => out.push(t),
                None => break,
            }
        }
        out
    }

    /// Nanoseconds until some queued frame could go (None: empty).
    pub fn wait_ns(&self, bucket: &TokenBucket, now: u64) -> Option<u64> {
        self.flows
            .iter()
            .filter_map(|f| f.items.front().map(|(b, _)| *b))
            .min()
            .map(|bits| bucket.wait_ns(bits, now))
    }
}

/// A jumbo frame (9216 bytes) is this many quanta.
const MAX_FRAME_QUANTA: usize = 7;

/// How much a port's to-port shaping queue holds: 50 ms at its rate plus
/// its burst (as the reference `bandwidth` plugin's TBF: latency × rate +
/// burst), in at most 4096 frames (they hold UMEM chunks).
pub fn shaper_queue_limit(rate_bps: u64, burst_bits: u64) -> (usize, u64) {
    (4096, burst_bits.saturating_add(rate_bps / 20))
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

    /// Two senders offering `offer` bits/s each of 1500-byte frames into
    /// a shaper of `rate` (default burst and queue), drained as a poll
    /// thread would (every 100 µs); returns what each got (bits/s) over
    /// `secs`, and the frames dropped.
    fn share(rate: u64, w: (u32, u32), offer: (u64, u64), secs: u64) -> (f64, f64, usize) {
        let burst = default_burst_bits(rate);
        let mut bucket = TokenBucket::new(rate, burst, 0);
        let mut q: FairQueue<u32> = FairQueue::default();
        let (max_frames, max_bits) = shaper_queue_limit(rate, burst);
        let frame = 1500 * 8;
        let gaps = (
            frame * 1_000_000_000 / offer.0,
            frame * 1_000_000_000 / offer.1,
        );
        let (mut next, mut got) = ((0u64, gaps.1 / 2), (0u64, 0u64));
        let mut dropped = Vec::new();
        let end = secs * 1_000_000_000;
        let mut t = 0;
        while t < end {
            while next.0 <= t {
                q.push(1, w.0, frame, 1, max_frames, max_bits, &mut dropped);
                next.0 += gaps.0;
            }
            while next.1 <= t {
                q.push(2, w.1, frame, 2, max_frames, max_bits, &mut dropped);
                next.1 += gaps.1;
            }
            while let Some(who) = q.pop(&mut bucket, t) {
                if who == 1 {
                    got.0 += frame;
                } else {
                    got.1 += frame;
                }
            }
            t += 100_000;
        }
        (
            got.0 as f64 / secs as f64,
            got.1 as f64 / secs as f64,
            dropped.len(),
        )
    }

    #[test]
    fn weights_divide_a_congested_port() {
        let rate = 100_000_000;
        let (a, b, dropped) = share(rate, (1, 3), (rate, rate), 4);
        let total = a + b;
        assert!(
            (total - rate as f64).abs() / (rate as f64) < 0.03,
            "total {total}"
        );
        let ratio = b / a;
        assert!((ratio - 3.0).abs() < 0.3, "shares {a} {b} ratio {ratio}");
        assert!(dropped > 0, "twice the rate offered: the queue overflowed");
        let (a, b, _) = share(rate, (1, 1), (rate, rate), 4);
        assert!((b / a - 1.0).abs() < 0.1, "equal weights {a} {b}");
    }

    #[test]
    fn no_congestion_holds_nobody_back() {
        let rate = 100_000_000;
        // Light senders (30 % + 20 % of the rate) pass entirely, whatever the weights.
        let (a, b, dropped) = share(rate, (1, 100), (30_000_000, 20_000_000), 4);
        assert!(
            (a - 30e6).abs() / 30e6 < 0.02 && (b - 20e6).abs() / 20e6 < 0.02,
            "{a} {b}"
        );
        assert_eq!(dropped, 0);
        // A heavy sender alone gets the whole port, not its weighted share.
        let (a, b, _) = share(rate, (1, 3), (200_000_000, 1), 4);
        assert!(a > 0.97 * rate as f64, "alone: {a} {b}");
    }

    #[test]
    fn a_full_queue_drops_from_the_longest_flow() {
        let mut q: FairQueue<(u32, u32)> = FairQueue::default();
        let mut dropped = Vec::new();
        for i in 0..8 {
            q.push(1, 1, 12_000, (1, i), 10, u64::MAX, &mut dropped);
        }
        for i in 0..4 {
            q.push(2, 1, 12_000, (2, i), 10, u64::MAX, &mut dropped);
        }
        // 12 offered into 10: the heavy flow lost its two newest.
        assert_eq!(dropped, vec![(1, 7), (1, 6)]);
        assert_eq!(q.frames(), 10);
        // Served alternately (equal weights, one frame per quantum).
        let order: Vec<u32> = q.drain_all().iter().map(|x| x.0).collect();
        assert_eq!(order[..8], [1, 2, 1, 2, 1, 2, 1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_bucket_holds_frames_until_tokens_arrive() {
        let mut b = TokenBucket::new(1_000_000, 12_000, 0); // 1 Mbit/s, one frame
        let mut q: FairQueue<u8> = FairQueue::default();
        let mut dropped = Vec::new();
        for i in 0..3 {
            q.push(7, 1, 12_000, i, 64, u64::MAX, &mut dropped);
        }
        assert_eq!(q.pop(&mut b, 0), Some(0));
        assert_eq!(q.pop(&mut b, 0), None);
        assert_eq!(q.wait_ns(&b, 0), Some(12 * MS + 1));
        assert_eq!(q.pop(&mut b, 12 * MS + 1), Some(1));
        assert_eq!(q.frames(), 1);
        // A jumbo frame at weight 1 still goes (several quanta of credit).
        q.push(8, 1, 9000 * 8, 9, 64, u64::MAX, &mut dropped);
        let mut big = TokenBucket::new(1_000_000_000, 1_000_000, 0);
        assert_eq!(q.drain_all().len(), 2);
        assert!(q.pop(&mut big, 0).is_none());
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
