//! The poll thread. It alone owns the UMEM, the sockets, their rings and
//! the frame bookkeeping; it reads the snapshot (published by the control
//! plane) once per round and writes the per-port counters.
//!
//! Frame ownership: every UMEM frame is FREE (on our free list), HELD (in
//! our hands during a round) or given to the kernel through one port's fill
//! or TX ring (owner = that slot). Detaching a port reclaims every frame it
//! owned, so port churn never leaks buffers.

use super::bpf::XdpProgram;
use super::xsk::{Desc, RingSizes, Umem, XskSocket, FRAME_SIZE};
use super::{netdev, AttachFailure, Attachment, Command, DatapathConfig};
use crate::pipeline::fdb::Slot;
use crate::pipeline::{forward, qos, DropReason, Egress, Limits};
use crate::snapshot::{PortCounters, Snapshot};
use crate::wire::ethernet::apply_tag_edit;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FREE: u32 = u32::MAX;
const HELD: u32 = u32::MAX - 1;
const HOUSEKEEPING: Duration = Duration::from_secs(1);

struct Port {
    slot: Slot,
    ifname: String,
    ifindex: u32,
    sock: XskSocket,
    /// Frames in the fill ring or being written by the kernel.
    filled: u32,
    /// Frames to queue on this port's TX ring at the end of the round.
    tx_pending: Vec<Desc>,
    /// The TX ring holds frames the kernel has not sent yet.
    tx_backlog: bool,
}

pub(crate) struct Worker {
    cfg: DatapathConfig,
    umem: Umem,
    free: Vec<u64>,
    owner: Vec<u32>,
    prog: XdpProgram,
    ports: HashMap<Slot, Port>,
    cmds: mpsc::Receiver<Command>,
    wake: Arc<OwnedFd>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    attached: Arc<Mutex<HashMap<Slot, Attachment>>>,
    last_housekeeping: Instant,
    rx_buf: Vec<Desc>,
    comp_buf: Vec<u64>,
    out: Vec<Egress>,
    /// Rate limiters of every port (poll-thread state, synced to the snapshot).
    limits: Limits,
    /// Frames from egress-rate-limited ports waiting for tokens.
    shaped: HashMap<Slot, std::collections::VecDeque<Desc>>,
    pollfds: Vec<libc::pollfd>,
    poll_slots: Vec<Slot>,
    stop: bool,
}

impl Worker {
    pub(crate) fn new(
        cfg: DatapathConfig,
        cmds: mpsc::Receiver<Command>,
        wake: Arc<OwnedFd>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        attached: Arc<Mutex<HashMap<Slot, Attachment>>>,
    ) -> Result<Self, String> {
        let umem = Umem::new(cfg.umem_frames).map_err(|e| e.to_string())?;
        let prog = XdpProgram::load().map_err(|e| e.to_string())?;
        let n = umem.frames();
        Ok(Worker {
            cfg,
            umem,
            // Pop from the end: low addresses first (just tidier in dumps).
            free: (0..n as u64).rev().map(|i| i * FRAME_SIZE).collect(),
            owner: vec![FREE; n as usize],
            prog,
            ports: HashMap::new(),
            cmds,
            wake,
            snapshot,
            attached,
            last_housekeeping: Instant::now(),
            rx_buf: Vec::with_capacity(cfg.batch),
            comp_buf: Vec::with_capacity(1024),
            out: Vec::with_capacity(64),
            limits: Limits::default(),
            shaped: HashMap::new(),
            pollfds: Vec::new(),
            poll_slots: Vec::new(),
            stop: false,
        })
    }

    fn now(&self) -> u64 {
        crate::clock::now_ns()
    }

    fn frame_index(addr: u64) -> usize {
        (addr / FRAME_SIZE) as usize
    }

    fn release(&mut self, addr: u64) {
        let base = addr & !(FRAME_SIZE - 1);
        if let Some(o) = self.owner.get_mut(Self::frame_index(base)) {
            if *o != FREE {
                *o = FREE;
                self.free.push(base);
            }
        }
    }

    pub(crate) fn run(&mut self) {
        log::info!(
            "data path running: {} UMEM frames of {} bytes",
            self.umem.frames(),
            FRAME_SIZE
        );
        let mut last_work = Instant::now();
        while !self.stop {
            self.commands();
            let worked = self.round();
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING {
                self.housekeeping();
            }
            if worked {
                last_work = Instant::now();
            } else if last_work.elapsed() < self.cfg.spin {
                // Traffic is flowing: stay awake briefly rather than pay a
                // cross-CPU wake-up for the next frame (an answer is often
                // a few microseconds away). An idle switch still sleeps.
                std::hint::spin_loop();
            } else {
                // A TX backlog retries in a millisecond; shaped frames wake
                // the thread when their tokens are due; otherwise sleep
                // until a frame, a command or housekeeping.
                let timeout = if self.ports.values().any(|p| p.tx_backlog) {
                    1
                } else {
                    self.shaped_wait_ms().unwrap_or(1000)
                };
                self.sleep(timeout);
            }
        }
        let slots: Vec<Slot> = self.ports.keys().copied().collect();
        for s in slots {
            self.detach(s);
        }
    }

    fn commands(&mut self) {
        while let Ok(c) = self.cmds.try_recv() {
            match c {
                Command::Attach {
                    slot,
                    ifname,
                    reply,
                } => {
                    let r = self.attach(slot, &ifname);
                    match &r {
                        Err(AttachFailure::Other(e)) => {
                            log::warn!("attach {ifname} as slot {slot}: {e}")
                        }
                        Err(AttachFailure::Busy(e)) => {
                            log::debug!("attach {ifname} as slot {slot}: {e}")
                        }
                        Ok(_) => {}
                    }
                    let _ = reply.send(r);
                }
                Command::Detach { slot, reply } => {
                    self.detach(slot);
                    let _ = reply.send(());
                }
                Command::Stop => self.stop = true,
            }
        }
    }

    fn attach(&mut self, slot: Slot, ifname: &str) -> Result<Attachment, AttachFailure> {
        if let Some(p) = self.ports.get(&slot) {
            if p.ifname == ifname {
                if let Some(a) = self.attachment(slot) {
                    return Ok(a);
                }
            }
            self.detach(slot);
        }
        let ifindex = netdev::ifindex(ifname).map_err(|e| AttachFailure::Other(e.to_string()))?;
        let share = self.ports.values().next().map(|p| p.sock.fd());
        let sock =
            XskSocket::new(&self.umem, ifindex, share, RingSizes::default()).map_err(|e| {
                let m = format!("AF_XDP socket on {ifname}: {e}");
                if e.kind() == std::io::ErrorKind::ResourceBusy {
                    AttachFailure::Busy(m)
                } else {
                    AttachFailure::Other(m)
                }
            })?;
        let fd = sock.fd();
        self.ports.insert(
            slot,
            Port {
                slot,
                ifname: ifname.to_string(),
                ifindex,
                sock,
                filled: 0,
                tx_pending: Vec::new(),
                tx_backlog: false,
            },
        );
        self.refill(slot);
        let bound = self
            .prog
            .bind(ifindex, slot, fd)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.prog
                    .attach(ifindex, self.cfg.native_xdp)
                    .map_err(|e| e.to_string())
            });
        match bound {
            Ok(mode) => {
                let a = Attachment { ifindex, mode };
                self.attached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(slot, a);
                self.rebuild_pollfds();
                log::info!(
                    "attached {ifname} (ifindex {ifindex}) as slot {slot}, {} XDP",
                    mode.as_str()
                );
                Ok(a)
            }
            Err(e) => {
                self.detach(slot);
                Err(AttachFailure::Other(e))
            }
        }
    }

    fn attachment(&self, slot: Slot) -> Option<Attachment> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .copied()
    }

    fn detach(&mut self, slot: Slot) {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        if let Some(p) = self.ports.remove(&slot) {
            self.prog.unbind(p.ifindex, slot);
            self.prog.detach(p.ifindex);
            let mut pending: Vec<u64> = p.tx_pending.iter().map(|d| d.addr).collect();
            if let Some(q) = self.shaped.remove(&slot) {
                pending.extend(q.iter().map(|d| d.addr));
            }
            drop(p); // closes the socket: the kernel lets go of its frames
            for a in pending {
                self.release(a);
            }
            let mut reclaimed = 0;
            for i in 0..self.owner.len() {
                if self.owner[i] == slot {
                    self.owner[i] = FREE;
                    self.free.push(i as u64 * FRAME_SIZE);
                    reclaimed += 1;
                }
            }
            log::info!("detached slot {slot}, reclaimed {reclaimed} frames");
            self.rebuild_pollfds();
        }
    }

    fn refill(&mut self, slot: Slot) {
        let nports = self.ports.len() as u32;
        let Some(p) = self.ports.get_mut(&slot) else {
            return;
        };
        // Each port may hold up to its share of half the UMEM in its fill
        // ring (bursts are absorbed there), capped by the configured depth.
        let share = self.umem.frames() / (2 * (nports + 1));
        let target = share.clamp(64, self.cfg.fill_per_port);
        let want = target.saturating_sub(p.filled) as usize;
        if want < 16 && p.filled > 0 {
            return; // refill in batches
        }
        let n = want.min(self.free.len()).min(p.sock.fill_free() as usize);
        if n == 0 {
            return;
        }
        // Give the top `n` of the free stack; whatever did not fit stays.
        let start = self.free.len() - n;
        let given = p.sock.fill(&self.free[start..]);
        for a in self.free.drain(start..start + given) {
            self.owner[(a / FRAME_SIZE) as usize] = slot;
        }
        p.filled += given as u32;
    }

    /// One pass over every port: completions, RX batch, refill; then TX.
    fn round(&mut self) -> bool {
        let snap = self.snapshot.load_full();
        let now = self.now();
        self.limits.sync(&snap, now);
        let mut worked = false;
        let slots: Vec<Slot> = self.ports.keys().copied().collect();
        for &slot in &slots {
            self.reap_completions(slot);
            if self.shaped.contains_key(&slot) {
                self.drain_shaped(&snap, slot, now);
            }
            worked |= self.receive(&snap, slot, now);
            self.refill(slot);
        }
        worked |= self.transmit(&snap);
        worked
    }

    fn reap_completions(&mut self, slot: Slot) {
        let Some(p) = self.ports.get_mut(&slot) else {
            return;
        };
        self.comp_buf.clear();
        p.sock.completed(&mut self.comp_buf, 1024);
        let done = std::mem::take(&mut self.comp_buf);
        for &a in &done {
            self.release(a);
        }
        self.comp_buf = done;
    }

    fn receive(&mut self, snap: &Snapshot, slot: Slot, now: u64) -> bool {
        let Some(p) = self.ports.get_mut(&slot) else {
            return false;
        };
        self.rx_buf.clear();
        let n = p.sock.recv(&mut self.rx_buf, self.cfg.batch);
        if n == 0 {
            return false;
        }
        p.filled = p.filled.saturating_sub(n as u32);
        let batch = std::mem::take(&mut self.rx_buf);
        for d in &batch {
            if let Some(o) = self.owner.get_mut(Self::frame_index(d.addr)) {
                *o = HELD;
            }
        }
        if let Some(p) = snap.port(slot) {
            for d in &batch {
                PortCounters::add(&p.counters.rx_packets, 1);
                PortCounters::add(&p.counters.rx_bytes, d.len as u64);
            }
        }
        if self.limits.egress(slot).is_some() {
            // Shaped port: queue (bounded), then send what the rate allows.
            let limit = self.limits.egress_queue_limit(slot);
            let q = self.shaped.entry(slot).or_default();
            let mut over = Vec::new();
            for d in &batch {
                if q.len() < limit {
                    q.push_back(*d);
                } else {
                    over.push(d.addr);
                }
            }
            if let Some(p) = snap.port(slot) {
                for _ in &over {
                    p.counters.count_drop(DropReason::Qos);
                }
            }
            for a in over {
                self.release(a);
            }
            self.rx_buf = batch;
            self.drain_shaped(snap, slot, now);
            return true;
        }
        self.forward_batch(snap, slot, &batch, now);
        self.rx_buf = batch;
        true
    }

    /// Forwards the frames of a shaped port that its rate allows now.
    /// Returns whether frames are still waiting.
    fn drain_shaped(&mut self, snap: &Snapshot, slot: Slot, now: u64) -> bool {
        let Some(mut q) = self.shaped.remove(&slot) else {
            return false;
        };
        let mut go = Vec::new();
        match self.limits.egress(slot) {
            Some(bucket) => {
                while let Some(d) = q.front() {
                    if bucket.admit(d.len as u64 * 8, now) == qos::Admit::No {
                        break;
                    }
                    go.push(*d);
                    q.pop_front();
                }
            }
            // The limit was removed: everything goes.
            None => go.extend(q.drain(..)),
        }
        if !go.is_empty() {
            self.forward_batch(snap, slot, &go, now);
        }
        let waiting = !q.is_empty();
        if waiting {
            self.shaped.insert(slot, q);
        }
        waiting
    }

    /// Runs the pipeline on frames received on `slot` and queues them for TX.
    fn forward_batch(&mut self, snap: &Snapshot, slot: Slot, batch: &[Desc], now: u64) {
        let ingress = snap.port(slot);
        let sw = ingress.and_then(|i| snap.switches.get(i.switch));
        match (ingress, sw) {
            (Some(ingress), Some(sw)) => {
                let mut fdb = sw.fdb.lock().unwrap_or_else(|e| e.into_inner());
                for d in batch {
                    let mut out = std::mem::take(&mut self.out);
                    let frame = self.umem.frame(d.addr, d.len as usize);
                    match forward(
                        snap,
                        sw,
                        &mut fdb,
                        &mut self.limits,
                        ingress,
                        frame,
                        now,
                        &mut out,
                    ) {
                        Err(why) => {
                            ingress.counters.count_drop(why);
                            self.release(d.addr);
                        }
                        Ok(dec) => self.fan_out(snap, *d, dec.tagged, &out),
                    }
                    self.out = out;
                }
            }
            // A port mid-removal or not yet published: nothing to forward to.
            _ => {
                for d in batch {
                    self.release(d.addr);
                }
            }
        }
    }

    /// Queues the frame `d` on every egress port: copies for all but the
    /// last, the original (edited in place) for the last.
    fn fan_out(&mut self, snap: &Snapshot, d: Desc, tagged: bool, out: &[Egress]) {
        let mut original_used = false;
        for (i, e) in out.iter().enumerate() {
            let last = i + 1 == out.len();
            let Some(eport) = snap.port(e.slot) else {
                continue;
            };
            if !self.ports.contains_key(&e.slot) {
                eport.counters.count_drop(DropReason::LinkDown);
                continue;
            }
            let addr = if last {
                original_used = true;
                d.addr
            } else {
                match self.free.pop() {
                    Some(chunk) => {
                        self.owner[Self::frame_index(chunk)] = HELD;
                        self.umem.copy_frame(d.addr, d.len as usize, chunk)
                    }
                    None => {
                        eport.counters.count_drop(DropReason::NoBuffer);
                        continue;
                    }
                }
            };
            let (chunk, off) = self.umem.chunk_mut(addr);
            let base = addr - off as u64;
            match apply_tag_edit(chunk, off, d.len as usize, tagged, e.edit) {
                Ok((noff, nlen)) => {
                    self.owner[Self::frame_index(base)] = e.slot;
                    if let Some(p) = self.ports.get_mut(&e.slot) {
                        p.tx_pending.push(Desc {
                            addr: base + noff as u64,
                            len: nlen as u32,
                            options: 0,
                        });
                    }
                }
                Err(_) => {
                    // Received frames always have 256 bytes of headroom;
                    // this would be a kernel surprise, not a user's frame.
                    eport.counters.count_drop(DropReason::NoBuffer);
                    self.release(addr);
                }
            }
        }
        if !original_used {
            self.release(d.addr);
        }
    }

    /// Moves each port's pending frames onto its TX ring and kicks it.
    fn transmit(&mut self, snap: &Snapshot) -> bool {
        let mut worked = false;
        let mut unsent: Vec<u64> = Vec::new();
        for p in self.ports.values_mut() {
            if p.tx_pending.is_empty() && !p.tx_backlog {
                continue;
            }
            let counters = snap.port(p.slot).map(|v| &v.counters);
            if !p.tx_pending.is_empty() {
                worked = true;
                let n = p.sock.send(&p.tx_pending);
                if let Some(c) = counters {
                    PortCounters::add(&c.tx_packets, n as u64);
                    let bytes: u64 = p.tx_pending[..n].iter().map(|d| d.len as u64).sum();
                    PortCounters::add(&c.tx_bytes, bytes);
                    for _ in n..p.tx_pending.len() {
                        c.count_drop(DropReason::NoBuffer);
                    }
                }
                unsent.extend(p.tx_pending[n..].iter().map(|d| d.addr));
                p.tx_pending.clear();
            }
            p.tx_backlog = match p.sock.kick() {
                Ok(()) => p.sock.tx_queued() > 0,
                Err(e) => matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
                ),
            };
        }
        for a in unsent {
            self.release(a);
        }
        worked
    }

    fn rebuild_pollfds(&mut self) {
        self.pollfds.clear();
        self.poll_slots.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for p in self.ports.values() {
            self.pollfds.push(libc::pollfd {
                fd: p.sock.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            self.poll_slots.push(p.slot);
        }
    }

    /// Milliseconds until the first queued frame of a shaped port may go.
    fn shaped_wait_ms(&mut self) -> Option<i32> {
        let now = self.now();
        let fronts: Vec<(Slot, u64)> = self
            .shaped
            .iter()
            .filter_map(|(s, q)| q.front().map(|d| (*s, d.len as u64 * 8)))
            .collect();
        fronts
            .into_iter()
            .map(|(slot, bits)| match self.limits.egress(slot) {
                Some(b) => b.wait_ns(bits, now).div_ceil(1_000_000).clamp(1, 1000) as i32,
                None => 1,
            })
            .min()
    }

    fn sleep(&mut self, timeout_ms: i32) {
        if self.pollfds.is_empty() {
            self.rebuild_pollfds();
        }
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        // SAFETY: pollfds is a valid array of the length passed.
        let r = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if r <= 0 {
            return;
        }
        if self.pollfds[0].revents & libc::POLLIN != 0 {
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes into a live u64 from our eventfd.
            unsafe {
                libc::read(
                    self.wake.as_raw_fd(),
                    &mut v as *mut u64 as *mut libc::c_void,
                    8,
                )
            };
        }
        let dead: Vec<Slot> = self.pollfds[1..]
            .iter()
            .zip(&self.poll_slots)
            .filter(|(p, _)| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
            .map(|(_, s)| *s)
            .collect();
        for s in dead {
            log::warn!("slot {s}: socket error (netdev removed?); detaching");
            self.detach(s);
        }
    }

    fn housekeeping(&mut self) {
        self.last_housekeeping = Instant::now();
        let now = self.now();
        let snap = self.snapshot.load();
        for sw in &snap.switches {
            let mut fdb = sw.fdb.lock().unwrap_or_else(|e| e.into_inner());
            fdb.sweep(now);
        }
        for p in self.ports.values() {
            if let (Ok(st), Some(v)) = (p.sock.stats(), snap.port(p.slot)) {
                v.counters.set_kernel_drops(
                    st.rx_dropped + st.rx_ring_full + st.rx_fill_ring_empty_descs,
                );
                log::debug!("slot {} kernel stats {:?}", p.slot, st);
            }
        }
        // A netdev that vanished (pod deleted under us) or was replaced.
        let gone: Vec<Slot> = self
            .ports
            .values()
            .filter(|p| netdev::ifindex(&p.ifname).ok() != Some(p.ifindex))
            .map(|p| p.slot)
            .collect();
        for s in gone {
            log::warn!("slot {s}: its netdev is gone; detaching");
            self.detach(s);
        }
    }
}
