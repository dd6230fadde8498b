//! The frame budget of one poll thread's UMEM: how many frames each port
//! may keep in its fill ring, so that any number of ports up to
//! `max_ports` can always receive and a flood always finds frames to copy
//! into, whatever order the ports joined in.
//!
//! Pure bookkeeping, no I/O; the poll thread owns one `Budget` and calls
//! it on every refill.
//!
//! Why this shape: a frame given to a fill ring cannot be taken back (the
//! kernel consumes fill entries only by receiving into them). So the
//! guarantee cannot rest on taking frames back from idle ports; it rests
//! on never handing out more than the UMEM can cover:
//! - every port is guaranteed `min_fill` frames, from a pool sized
//!   `min_fill × max_ports` (a port beyond `max_ports` is refused at attach
//!   with a clear error, never silently starved);
//! - frames above `min_fill` ("extras") come from a separate pool that all
//!   ports together never exceed, and only go to a port that is receiving,
//!   as many as its demand (what it receives in a few tens of
//!   milliseconds, so a fast port gets a fill ring deep enough to ride out
//!   the poll thread being descheduled, and a port that sees an ARP now
//!   and then gets none), up to its share `extra_pool / ports`, which shrinks as
//!   ports join, but never below `extra_pool / BUSY_PORTS` (the pool's own
//!   bound keeps the total right, and a few busy ports among many idle
//!   ones still get deep rings); a port over its target is not refilled
//!   until it has received its way back below it (frames come back
//!   through RX → TX → completion);
//! - `reserve` frames stay for what is in flight: flood copies, TX rings,
//!   shaping queues;
//! - a removed port stays in the budget until its socket is closed and
//!   its frames are back (the poll thread calls `remove_port` then), so
//!   frames in a closing socket are never promised to a new port.

/// Frames every port keeps in its fill ring, even when idle.
pub const MIN_FILL: u32 = 32;
/// Most frames one port keeps in its fill ring.
pub const MAX_FILL: u32 = 2048;
/// However many ports there are, a port's share of the extra pool is at
/// least `extra_pool / BUSY_PORTS`.
pub const BUSY_PORTS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    frames: u32,
    reserve: u32,
    extra_pool: u32,
    max_ports: u32,
    ports: u32,
    /// Σ over ports of max(0, filled − MIN_FILL).
    extra_held: u32,
    /// Σ over ports of max(0, MIN_FILL − filled).
    deficit: u32,
}

/// A port over the budget's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the poll thread's UMEM of {frames} frames serves at most {max_ports} ports; start switchd with a larger --umem-frames")]
pub struct Full {
    pub frames: u32,
    pub max_ports: u32,
}

impl Budget {
    pub fn new(frames: u32) -> Budget {
        let reserve = (frames / 8).max(256).min(frames / 2);
        let extra_pool = frames / 4;
        let min_pool = frames.saturating_sub(reserve + extra_pool);
        Budget {
            frames,
            reserve,
            extra_pool,
            max_ports: min_pool / MIN_FILL,
            ports: 0,
            extra_held: 0,
            deficit: 0,
        }
    }

    pub fn max_ports(&self) -> u32 {
        self.max_ports
    }

    /// Frames kept for what is in flight (flood copies, TX rings, shaping).
    pub fn reserve(&self) -> u32 {
        self.reserve
    }

    pub fn ports(&self) -> u32 {
        self.ports
    }

    /// Frames the free list should keep for minimum fills of ports below it.
    pub fn deficit(&self) -> u32 {
        self.deficit
    }

    /// Frames all ports hold above their minimum fill.
    pub fn extra_held(&self) -> u32 {
        self.extra_held
    }

    /// Admits one more port (holding nothing yet).
    pub fn add_port(&mut self) -> Result<(), Full> {
        if self.ports >= self.max_ports {
            return Err(Full {
                frames: self.frames,
                max_ports: self.max_ports,
            });
        }
        self.ports += 1;
        self.deficit += MIN_FILL;
        Ok(())
    }

    /// Forgets a port that held `filled` frames in its fill ring (they
    /// come back to the free list once its socket is closed).
    pub fn remove_port(&mut self, filled: u32) {
        self.set_filled(filled, 0);
        self.deficit -= MIN_FILL;
        self.ports = self.ports.saturating_sub(1);
    }

    /// Most extras one port may hold: its share of the extra pool, which
    /// shrinks as ports join, down to `extra_pool / BUSY_PORTS`.
    pub fn share(&self) -> u32 {
        (self.extra_pool / self.ports.max(1)).max(self.extra_pool / BUSY_PORTS)
    }

    /// The fill level a port with `demand` (frames it receives in the
    /// time its ring should cover, estimated by the caller) is refilled to.
    pub fn target(&self, demand: u32) -> u32 {
        let extras = demand.min(self.share());
        (MIN_FILL + extras).min(MAX_FILL)
    }

    /// How many frames to give a port that holds `filled`, with `free`
    /// frames on the free list; `demand`: what it receives in the time its
    /// ring should cover (0: it did not receive since its last refill).
    pub fn grant(&self, filled: u32, free: u32, demand: u32) -> u32 {
        let need_min = MIN_FILL.saturating_sub(filled);
        let base = need_min.min(free);
        let target = self.target(demand);
        let have = filled + base;
        if demand == 0 || have >= target || base < need_min {
            return base;
        }
        // Extras only from what is left once the other ports' minimums
        // and the in-flight reserve are covered.
        let others = self.deficit.saturating_sub(need_min);
        let spare = free.saturating_sub(base + others + self.reserve);
        let room = self.extra_pool.saturating_sub(self.extra_held);
        let extra = (target - have).min(spare).min(room);
        // Refill in batches: a trickle of extras is not worth a ring update.
        if extra < 16 {
            return base;
        }
        base + extra
    }

    /// Records that a port's fill level went from `old` to `new`.
    pub fn set_filled(&mut self, old: u32, new: u32) {
        let over = |f: u32| f.saturating_sub(MIN_FILL);
        let under = |f: u32| MIN_FILL.saturating_sub(f);
        self.extra_held = self.extra_held - over(old) + over(new);
        self.deficit = self.deficit - under(old) + under(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A toy UMEM: ports with fill levels, a free count.
    struct Sim {
        b: Budget,
        free: u32,
        filled: Vec<u32>,
    }

    impl Sim {
        fn new(frames: u32) -> Sim {
            Sim {
                b: Budget::new(frames),
                free: frames,
                filled: Vec::new(),
            }
        }
        fn join(&mut self) -> Result<usize, Full> {
            self.b.add_port()?;
            self.filled.push(0);
            let i = self.filled.len() - 1;
            self.refill(i, 0);
            Ok(i)
        }
        fn refill(&mut self, i: usize, demand: u32) {
            let g = self.b.grant(self.filled[i], self.free, demand);
            assert!(g <= self.free);
            self.free -= g;
            let old = self.filled[i];
            self.filled[i] += g;
            self.b.set_filled(old, self.filled[i]);
        }
        /// Port i receives n frames, which are forwarded and come back.
        fn receive(&mut self, i: usize, n: u32) {
            let n = n.min(self.filled[i]);
            let old = self.filled[i];
            self.filled[i] -= n;
            self.b.set_filled(old, self.filled[i]);
            self.free += n;
            // A window's worth at this rate: 16 batches.
            self.refill(i, n * 16);
        }
        fn leave(&mut self, i: usize) {
            let f = self.filled.remove(i);
            self.b.remove_port(f);
            self.free += f;
        }
    }

    #[test]
    fn the_reported_case_250_ports_all_get_their_minimum() {
        // Default UMEM; the first ports are busy before the others join
        // (the order that starved late ports before).
        let mut s = Sim::new(16384);
        for _ in 0..4 {
            let i = s.join().unwrap();
            for _ in 0..100 {
                s.receive(i, 64);
            }
        }
        for _ in 4..250 {
            s.join().unwrap();
        }
        assert!(s.filled.iter().all(|&f| f >= MIN_FILL), "{:?}", s.filled);
        assert!(s.free >= s.b.reserve, "free {} < reserve", s.free);
    }

    #[test]
    fn beyond_the_limit_is_refused_clearly() {
        let mut s = Sim::new(4096);
        let max = s.b.max_ports();
        for _ in 0..max {
            s.join().unwrap();
        }
        let e = s.join().unwrap_err();
        assert_eq!(e.max_ports, max);
        assert!(e.to_string().contains("--umem-frames"));
    }

    #[test]
    fn share_shrinks_as_ports_join_and_busy_ports_give_back() {
        let mut s = Sim::new(16384);
        let a = s.join().unwrap();
        for _ in 0..50 {
            s.receive(a, 64);
        }
        let alone = s.filled[a];
        assert!(alone > 1000, "a lone busy port gets a deep fill ({alone})");
        for _ in 0..99 {
            s.join().unwrap();
        }
        for _ in 0..200 {
            s.receive(a, 64);
        }
        assert!(
            s.filled[a] <= s.b.target(64 * 16),
            "{} > {}",
            s.filled[a],
            s.b.target(64 * 16)
        );
        assert!(s.b.target(64 * 16) < alone, "the share shrank");
    }

    #[test]
    fn busy_ports_among_many_idle_ones_keep_deep_rings() {
        // 2 busy ports among 100: each still gets extra_pool / BUSY_PORTS.
        let mut s = Sim::new(16384);
        for _ in 0..100 {
            s.join().unwrap();
        }
        for _ in 0..50 {
            s.receive(0, 64);
            s.receive(1, 64);
        }
        let floor = MIN_FILL + s.b.extra_pool / BUSY_PORTS;
        assert!(
            s.filled[0] >= floor - 64 && s.filled[1] >= floor - 64,
            "{:?}",
            &s.filled[..2]
        );
        assert!(s.filled[2..].iter().all(|&f| f == MIN_FILL));
    }

    #[test]
    fn extras_follow_demand() {
        let mut s = Sim::new(16384);
        let slow = s.join().unwrap();
        let fast = s.join().unwrap();
        for _ in 0..20 {
            s.receive(slow, 1);
            s.receive(fast, 64);
        }
        assert!(s.filled[slow] <= MIN_FILL + 16, "{}", s.filled[slow]);
        assert!(s.filled[fast] > s.filled[slow] * 4, "{:?}", s.filled);
    }

    #[test]
    fn idle_ports_hold_only_the_minimum() {
        let mut s = Sim::new(16384);
        for _ in 0..10 {
            s.join().unwrap();
        }
        assert!(s.filled.iter().all(|&f| f == MIN_FILL));
    }

    proptest! {
        /// Whatever the sequence of joins, leaves and traffic, every port
        /// keeps its minimum (when frames are back), extras never exceed
        /// their pool, and the reserve stays free.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec((0u8..4, 0usize..400, 0u32..300), 1..600),
                           frames in prop::sample::select(vec![2048u32, 4096, 16384, 65536])) {
            let mut s = Sim::new(frames);
            for (op, who, n) in ops {
                match op {
                    0 => { let _ = s.join(); }
                    1 if !s.filled.is_empty() => { let i = who % s.filled.len(); s.leave(i); }
                    _ if !s.filled.is_empty() => { let i = who % s.filled.len(); s.receive(i, n); }
                    _ => {}
                }
                for i in 0..s.filled.len() { s.refill(i, 0); }
                let total: u32 = s.filled.iter().sum::<u32>() + s.free;
                prop_assert_eq!(total, frames);
                prop_assert!(s.filled.iter().all(|&f| f >= MIN_FILL));
                prop_assert!(s.b.extra_held() <= s.b.extra_pool);
                prop_assert!(s.free >= s.b.reserve);
                prop_assert!(s.filled.len() as u32 <= s.b.max_ports());
            }
        }
    }
}
