//! What the data path reads: an immutable picture of the switches and
//! ports, published by the control plane (arc-swap) and loaded by a poll
//! thread once per batch. Per-port counters have one slot per poll thread,
//! whose single writer is that thread.

use super::acl::Acl;
use super::fdb::Slot;
use super::vlan::PortVlan;
use super::DropReason;
use podswitch_shared::model::{MacAddr, PortMirroring, PortStats, Qos};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One poll thread's counters of one port. Single writer (that thread),
/// so a plain load/store replaces a locked read-modify-write per frame;
/// aligned to a cache line so threads do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ThreadCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// The port's own MAC moved here from another port (live migration).
    pub mac_handovers: AtomicU64,
    /// Frames waiting in the port's shapers (gauges, set by its home
    /// thread once a second): to the port (ingressRate) and from it
    /// (egressRate).
    pub ingress_queued: AtomicU64,
    pub egress_queued: AtomicU64,
    /// Mirror copies queued to this port (a mirroring destination).
    pub mirror_copies: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    /// Frames the kernel could not hand to this thread's socket of the
    /// port (RX ring full, fill ring empty), read from XDP_STATISTICS.
    kernel_drops: AtomicU64,
}

impl ThreadCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn count_drop(&self, why: DropReason) {
        Self::add(&self.drops[why as usize], 1);
    }
    pub fn set_kernel_drops(&self, n: u64) {
        self.kernel_drops.store(n, Relaxed);
    }
}

/// Counters of one port: one slot per poll thread (written by that
/// thread only), summed when the API or /metrics reads them.
#[derive(Debug)]
pub struct PortCounters {
    threads: Box<[ThreadCounters]>,
}

impl Default for PortCounters {
    fn default() -> Self {
        PortCounters::new(1)
    }
}

impl PortCounters {
    pub fn new(threads: usize) -> Self {
        PortCounters {
            threads: (0..threads.max(1))
                .map(|_| ThreadCounters::default())
                .collect(),
        }
    }

    /// The slot poll thread `thread` writes.
    #[inline]
    pub fn t(&self, thread: usize) -> &ThreadCounters {
        &self.threads[thread % self.threads.len()]
    }

    fn sum(&self, f: impl Fn(&ThreadCounters) -> u64) -> u64 {
        self.threads.iter().map(f).fold(0, u64::wrapping_add)
    }

    pub fn dropped(&self, why: DropReason) -> u64 {
        self.sum(|t| {
            let n = t.drops[why as usize].load(Relaxed);
            if why == DropReason::RxOverrun {
                n + t.kernel_drops.load(Relaxed)
            } else {
                n
            }
        })
    }

    pub fn to_stats(&self, acl: &Acl) -> PortStats {
        PortStats {
            rx_packets: self.sum(|t| t.rx_packets.load(Relaxed)),
            rx_bytes: self.sum(|t| t.rx_bytes.load(Relaxed)),
            tx_packets: self.sum(|t| t.tx_packets.load(Relaxed)),
            tx_bytes: self.sum(|t| t.tx_bytes.load(Relaxed)),
            mac_handovers: self.sum(|t| t.mac_handovers.load(Relaxed)),
            ingress_queued: self.sum(|t| t.ingress_queued.load(Relaxed)),
            egress_queued: self.sum(|t| t.egress_queued.load(Relaxed)),
            mirror_copies: self.sum(|t| t.mirror_copies.load(Relaxed)),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.dropped(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            acl_hits: acl.hits(),
            ..PortStats::default()
        }
    }
}

/// The counts of one port that a successor switchd goes on from (the
/// kernel's own socket drop counts travel with the sockets).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterSeed {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub mac_handovers: u64,
    pub mirror_copies: u64,
    /// Drops by reason name (DropReason::as_str).
    pub drops: Vec<(String, u64)>,
}

impl PortCounters {
    pub fn seed(&self) -> CounterSeed {
        CounterSeed {
            rx_packets: self.sum(|t| t.rx_packets.load(Relaxed)),
            rx_bytes: self.sum(|t| t.rx_bytes.load(Relaxed)),
            tx_packets: self.sum(|t| t.tx_packets.load(Relaxed)),
            tx_bytes: self.sum(|t| t.tx_bytes.load(Relaxed)),
            mac_handovers: self.sum(|t| t.mac_handovers.load(Relaxed)),
            mirror_copies: self.sum(|t| t.mirror_copies.load(Relaxed)),
            drops: DropReason::ALL
                .iter()
                .map(|r| {
                    (
                        r.as_str().to_string(),
                        self.sum(|t| t.drops[*r as usize].load(Relaxed)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// Adds a predecessor's counts (to thread 0's slot; only sums are read).
    pub fn add_seed(&self, s: &CounterSeed) {
        let t = self.t(0);
        ThreadCounters::add(&t.rx_packets, s.rx_packets);
        ThreadCounters::add(&t.rx_bytes, s.rx_bytes);
        ThreadCounters::add(&t.tx_packets, s.tx_packets);
        ThreadCounters::add(&t.tx_bytes, s.tx_bytes);
        ThreadCounters::add(&t.mac_handovers, s.mac_handovers);
        ThreadCounters::add(&t.mirror_copies, s.mirror_copies);
        for (name, n) in &s.drops {
            if let Some(r) = DropReason::ALL.iter().find(|r| r.as_str() == name) {
                ThreadCounters::add(&t.drops[*r as usize], *n);
            }
        }
    }
}

#[cfg(test)]
mod counter_tests {
    use super::*;

    #[test]
    fn per_thread_slots_sum_when_read() {
        let c = PortCounters::new(3);
        ThreadCounters::add(&c.t(0).rx_packets, 5);
        ThreadCounters::add(&c.t(2).rx_packets, 7);
        c.t(1).count_drop(DropReason::Oversize);
        c.t(2).count_drop(DropReason::Oversize);
        c.t(0).set_kernel_drops(4);
        c.t(1).count_drop(DropReason::RxOverrun);
        let s = c.to_stats(&Acl::default());
        assert_eq!(s.rx_packets, 12);
        assert_eq!(c.dropped(DropReason::Oversize), 2);
        assert_eq!(c.dropped(DropReason::RxOverrun), 5);
        assert_eq!(std::mem::align_of::<ThreadCounters>(), 64);
    }

    #[test]
    fn a_seed_carries_every_count_but_the_kernels() {
        let c = PortCounters::new(2);
        ThreadCounters::add(&c.t(1).rx_packets, 9);
        ThreadCounters::add(&c.t(0).tx_bytes, 1500);
        c.t(1).count_drop(DropReason::Oversize);
        c.t(0).set_kernel_drops(4);
        let seed = c.seed();
        let n = PortCounters::new(2);
        n.add_seed(&seed);
        assert_eq!(n.seed(), seed);
        assert_eq!(n.dropped(DropReason::Oversize), 1);
        // The kernel's count comes from the socket itself, not the seed.
        assert_eq!(n.dropped(DropReason::RxOverrun), 0);
    }
}

/// One port as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct PortView {
    pub id: String,
    pub slot: Slot,
    /// Index into `Snapshot::switches`.
    pub switch: usize,
    pub vlan: PortVlan,
    /// Admin state: a down port forwards nothing either way.
    pub up: bool,
    pub mac: Option<MacAddr>,
    pub spoof_check: bool,
    /// ipSpoofCheck: the allowed addresses (None: off).
    pub ip_guard: Option<Arc<super::ipguard::IpGuard>>,
    /// 802.1p: the PCP the port's frames leave tagged with (None: their own).
    pub pcp: Option<u8>,
    pub qos: Option<Qos>,
    pub dhcp_guard: bool,
    pub router_guard: bool,
    pub storm_limit: Option<u32>,
    /// Port mirroring: a source's frames both ways are copied to the
    /// switch's destinations (`SwitchView::mirror_dests`).
    pub mirroring: PortMirroring,
    /// The live captures of the port (None while nobody captures: the
    /// poll thread's only cost then). Replaced when one starts or ends.
    pub captures: Option<Arc<[Arc<super::capture::CaptureTap>]>>,
    /// Rules and their hit counters; replaced (counters reset) when the rules change.
    pub acl: Arc<Acl>,
    pub counters: Arc<PortCounters>,
    /// Poll threads with a socket on the port (threads 0..served serve
    /// its queues 0..served); 0 while it is not attached. A thread beyond
    /// hands the port's frames to thread `index % served`.
    pub served: u32,
    /// The poll thread that owns the port's rate limiters and shaping
    /// queue (one of the serving threads).
    pub home: usize,
    /// Changes whenever the MACs learned behind this slot must be
    /// forgotten (VLAN role, MAC or admin state changed, a new port took
    /// the slot); poll threads flush their tables when it does.
    pub flush_gen: u64,
}

impl PortView {
    /// The poll thread that transmits to this port for a frame decided
    /// on `thread`, or None when no thread serves it.
    pub fn tx_thread(&self, thread: usize) -> Option<usize> {
        match self.served as usize {
            0 => None,
            n if thread < n => Some(thread),
            n => Some(thread % n),
        }
    }

    /// Frames from this port must be processed on its home thread: its
    /// egress shaper or storm limit lives there.
    pub fn limited_from(&self) -> bool {
        self.storm_limit.is_some() || self.qos.as_ref().is_some_and(|q| q.egress_rate.is_some())
    }
}

impl PortView {
    /// A port with every feature off, for pipeline tests and fuzzing.
    pub fn plain(slot: Slot, vlan: PortVlan) -> PortView {
        PortView {
            id: format!("p{slot}"),
            slot,
            switch: 0,
            vlan,
            up: true,
            mac: None,
            spoof_check: false,
            ip_guard: None,
            pcp: None,
            qos: None,
            dhcp_guard: false,
            router_guard: false,
            storm_limit: None,
            mirroring: PortMirroring::None,
            captures: None,
            acl: Arc::new(Acl::default()),
            counters: Arc::new(PortCounters::default()),
            served: 1,
            home: 0,
            flush_gen: 0,
        }
    }
}

/// One switch as the pipeline sees it. Its learned MACs are not here:
/// each poll thread keeps its own table (see `fdb`); the static entries
/// and the table's settings are.
#[derive(Debug, Clone, Default)]
pub struct SwitchView {
    /// Stable for the switch's life (names the poll threads' tables).
    pub id: u32,
    pub name: String,
    /// Slots of the switch's ports, the flood list before VLAN filtering.
    pub ports: Vec<Slot>,
    pub aging_seconds: u32,
    pub max_fdb_entries: u32,
    /// (VLAN, MAC, slot): each port's own MAC on its home VLAN.
    pub statics: Vec<(u16, MacAddr, Slot)>,
    /// Multicast snooping (None: off, multicast floods).
    pub mcast: Option<super::mcast::McastView>,
    /// Slots of the switch's mirroring destinations (`portMirroring:
    /// destination`), which get copies of its sources' frames.
    pub mirror_dests: Vec<Slot>,
    /// The filtering database of each VLAN (private VLANs share one).
    pub fids: super::vlan::Fids,
}

/// Everything the data path needs, immutable once published.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    /// Indexed by slot.
    pub ports: Vec<Option<PortView>>,
    pub switches: Vec<SwitchView>,
    /// The slots whose view differs from generation − 1 (a typed change:
    /// a poll thread that saw that generation updates only these); None
    /// when anything may have changed (switches, the first snapshot).
    pub changed: Option<Vec<Slot>>,
}

impl Snapshot {
    pub fn port(&self, slot: Slot) -> Option<&PortView> {
        self.ports.get(slot as usize).and_then(|p| p.as_ref())
    }

    /// The slots a reader that last saw generation `seen` must look at
    /// again: the typed change when it saw the previous one, else all.
    pub fn changed_since(&self, seen: u64) -> Option<&[Slot]> {
        match &self.changed {
            Some(c) if seen + 1 == self.generation => Some(c),
            _ => None,
        }
    }
}

impl PortView {
    /// Whether the data path would treat the two views alike (the
    /// counters and ACL are compared by identity).
    pub fn same_as(&self, o: &PortView) -> bool {
        self.id == o.id
            && self.slot == o.slot
            && self.switch == o.switch
            && self.vlan == o.vlan
            && self.up == o.up
            && self.mac == o.mac
            && self.spoof_check == o.spoof_check
            && self.ip_guard == o.ip_guard
            && self.pcp == o.pcp
            && self.qos == o.qos
            && self.dhcp_guard == o.dhcp_guard
            && self.router_guard == o.router_guard
            && self.storm_limit == o.storm_limit
            && self.mirroring == o.mirroring
            && match (&self.captures, &o.captures) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && Arc::ptr_eq(&self.acl, &o.acl)
            && Arc::ptr_eq(&self.counters, &o.counters)
            && self.served == o.served
            && self.home == o.home
            && self.flush_gen == o.flush_gen
    }
}
