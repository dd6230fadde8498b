//! What the data path reads: an immutable picture of the switches and
//! ports, published by the control plane (arc-swap) and loaded by a poll
//! thread once per batch. Per-port counters are shared atomics whose single
//! writer is the poll thread that owns the port.

use crate::pipeline::acl::Acl;
use crate::pipeline::fdb::{Fdb, Slot};
use crate::pipeline::vlan::PortVlan;
use crate::pipeline::DropReason;
use podswitch_shared::model::{MacAddr, PortStats, Qos};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counters of one port. Written by one poll thread, read by the API.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    /// Frames the kernel could not hand to the port's socket (RX ring full,
    /// fill ring empty), read from XDP_STATISTICS by the poll thread.
    kernel_drops: AtomicU64,
}

impl PortCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        // Single writer: a plain load/store avoids a locked RMW per frame.
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn count_drop(&self, why: DropReason) {
        Self::add(&self.drops[why as usize], 1);
    }
    pub fn dropped(&self, why: DropReason) -> u64 {
        let n = self.drops[why as usize].load(Relaxed);
        if why == DropReason::NoBuffer {
            n + self.kernel_drops.load(Relaxed)
        } else {
            n
        }
    }
    pub fn set_kernel_drops(&self, n: u64) {
        self.kernel_drops.store(n, Relaxed);
    }
    pub fn to_stats(&self, acl: &Acl) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.dropped(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            acl_hits: acl.hits(),
        }
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
    pub qos: Option<Qos>,
    pub dhcp_guard: bool,
    pub router_guard: bool,
    pub storm_limit: Option<u32>,
    /// Rules and their hit counters; replaced (counters reset) when the rules change.
    pub acl: Arc<Acl>,
    pub counters: Arc<PortCounters>,
}

#[cfg(test)]
impl PortView {
    /// A port with every feature off, for pipeline tests.
    pub fn plain(slot: Slot, vlan: PortVlan) -> PortView {
        PortView {
            id: format!("p{slot}"),
            slot,
            switch: 0,
            vlan,
            up: true,
            mac: None,
            spoof_check: false,
            qos: None,
            dhcp_guard: false,
            router_guard: false,
            storm_limit: None,
            acl: Arc::new(Acl::default()),
            counters: Arc::new(PortCounters::default()),
        }
    }
}

/// One switch as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct SwitchView {
    pub name: String,
    /// Slots of the switch's ports, the flood list before VLAN filtering.
    pub ports: Vec<Slot>,
    /// Learned by the poll thread, read and flushed by the control plane.
    pub fdb: Arc<Mutex<Fdb>>,
}

/// Everything the data path needs, immutable once published.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    /// Indexed by slot.
    pub ports: Vec<Option<PortView>>,
    pub switches: Vec<SwitchView>,
}

impl Snapshot {
    pub fn port(&self, slot: Slot) -> Option<&PortView> {
        self.ports.get(slot as usize).and_then(|p| p.as_ref())
    }
}
