//! One poll thread. It alone owns its UMEM, the frame bookkeeping and the
//! rings of the sockets it serves (queue *i* of every port, for thread
//! *i*); it reads the snapshot (published by the control plane) once per
//! round and writes the per-port counters.
//!
//! It never creates or closes a socket: the setup thread hands it ready
//! sockets (`PollCmd::Add`) and takes them back (`PollCmd::Remove`) for
//! closing, and the poll thread swaps its port set between rounds, as
//! OVS's PMD threads reload their port lists. A closed socket's frames are
//! reused only once the setup thread says the kernel let go of them
//! (`PollCmd::Reclaim`).
//!
//! Frame ownership: every UMEM chunk is FREE (on the free list), HELD (in
//! our hands during a round) or given to the kernel through one socket's
//! fill or TX ring (owner = that socket's instance number). Removing a
//! port reclaims every chunk its socket owned, so churn never leaks
//! buffers; `Budget` decides how many chunks each fill ring gets.

use super::budget::Budget;
use super::mesh::{Handoff, Kind, Learn, Mesh, MAX_FRAGS};
use super::xsk::{Desc, Umem, XskSocket, FRAME_SIZE, XDP_PKT_CONTD};
use super::{DatapathConfig, SetupMsg, ThreadStats};
use crate::pipeline::capture::CaptureTap;
use crate::pipeline::fdb::{Fdb, Row, Slot};
use crate::pipeline::qos::FairQueue;
use crate::pipeline::snapshot::{Snapshot, SwitchView, ThreadCounters};
use crate::pipeline::{forward, mcast, qos, DropReason, Egress, Limited, Limits};
use crate::wire::ethernet::{apply_tag_edit, HEADER_LEN, TAG_LEN};
use crate::wire::pcap::Dir;
use arc_swap::ArcSwap;
use podswitch_shared::model::PortMirroring;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FREE: u32 = u32::MAX;
const HELD: u32 = u32::MAX - 1;
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// A busy port's fill ring is sized to hold what it receives in this long
/// (within its share of the frame budget): the time the poll thread may
/// be kept off its CPU without the kernel finding the ring empty.
const RATE_WINDOW_NS: u64 = 25_000_000;

/// A socket the setup thread made, bound and ready to be filled.
pub(crate) struct NewPort {
    pub slot: Slot,
    /// Names this socket's chunks in the ownership table.
    pub instance: u32,
    pub ifname: String,
    /// Largest L2 payload the netdev takes (its MTU).
    pub mtu: u32,
    pub sock: XskSocket,
    /// Frames the socket already holds in its fill ring (or being written
    /// by the kernel): non-zero for a socket handed over by a predecessor.
    pub filled: u32,
}

/// What a poll thread hands a successor switchd (see handover.rs): its
/// UMEM, who owns each chunk, its sockets and its learned MACs. Frames in
/// the kernel's rings travel with the rings; frames in this thread's hands
/// (queued in a shaper, in flight to another thread) are dropped.
pub struct PollExport {
    pub memfd: OwnedFd,
    /// Owner of each chunk: FREE, or a socket's instance number.
    pub owner: Vec<u32>,
    pub ports: Vec<ExportedPort>,
    /// Instances of sockets handed back for closing (their chunks come
    /// back once the setup thread closed them).
    pub closing: Vec<u32>,
    /// Learned (not static) MACs per switch (`SwitchView::id`).
    pub fdbs: Vec<(u32, Vec<Row>)>,
    /// Frames queued in the ports' shapers: from each port (egress rate,
    /// flat descriptors) and to it (ingress rate, whole frames). Their
    /// chunks travel as HELD; the successor queues them again.
    pub shaped: Vec<(Slot, Vec<Desc>)>,
    pub to_port: Vec<(Slot, Vec<Vec<Desc>>)>,
    /// Frames that were in this thread's hands (between poll threads, or
    /// on their way to a mirror), dropped by the handover.
    pub dropped: u64,
}

/// Frames taken out of the shapers: (from ports, to ports).
pub type Queued = (Vec<(Slot, Vec<Desc>)>, Vec<(Slot, Vec<Vec<Desc>>)>);

pub struct ExportedPort {
    pub slot: Slot,
    pub instance: u32,
    pub filled: u32,
    pub fd: OwnedFd,
}

/// Marks every chunk in the owner table that is not a socket's as free.
pub const OWNER_FREE: u32 = FREE;

/// What a poll thread is connected to.
pub(crate) struct Links {
    pub cmds: mpsc::Receiver<PollCmd>,
    pub setup: mpsc::Sender<SetupMsg>,
    pub wake: Arc<OwnedFd>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub mesh: Arc<Mesh>,
    pub stats: Arc<ThreadStats>,
}

/// What the setup thread asks of a poll thread.
pub(crate) enum PollCmd {
    /// Serve this socket from the next round; answers once its fill ring
    /// holds frames (or why it cannot be served).
    Add {
        port: Box<NewPort>,
        reply: mpsc::SyncSender<Result<(), String>>,
    },
    /// Stop serving `slot` and hand its socket back (`SetupMsg::Returned`).
    Remove {
        slot: Slot,
    },
    /// Report this thread's table of switch `switch` (`SwitchView::id`):
    /// its size and counters, and its rows if `rows`.
    Fdb {
        switch: u32,
        rows: bool,
        reply: mpsc::SyncSender<FdbReport>,
    },
    /// The socket of `instance` is closed: its chunks are ours again.
    Reclaim {
        instance: u32,
    },
    /// Stop touching the rings and report everything a successor needs;
    /// then wait for `Thaw` (the handover failed early) or the end.
    Freeze {
        reply: mpsc::SyncSender<Result<PollExport, String>>,
    },
    Thaw,
    /// Start polling: a thread that starts on a predecessor's UMEM waits
    /// until every port handed over is adopted and published, so that no
    /// frame meets a switch that knows only some of its ports.
    Resume,
    /// Frames a predecessor's shapers held (chunks HELD in the owner
    /// table this thread started from): queue them again.
    Requeue {
        shaped: Vec<(Slot, Vec<Desc>)>,
        to_port: Vec<(Slot, Vec<Vec<Desc>>)>,
    },
    /// MACs a predecessor had learned on switch `switch`, as its poll
    /// thread of the same index held them.
    Learn {
        switch: u32,
        rows: Vec<Row>,
    },
    Stop,
}

/// One poll thread's view of one switch's forwarding table.
#[derive(Debug, Default, Clone)]
pub struct FdbReport {
    pub rows: Vec<Row>,
    pub len: usize,
    pub moves: u64,
    pub limit_hits: u64,
}

struct Port {
    slot: Slot,
    instance: u32,
    mtu: u32,
    sock: XskSocket,
    /// Frames in the fill ring or being written by the kernel.
    filled: u32,
    /// Frames received since the last refill.
    received: u32,
    /// Frames received in the current rate window, which began at
    /// `window_start` (ns), and in the last complete one.
    window_rx: u32,
    window_start: u64,
    last_window_rx: u32,
    /// Descriptors to queue on this port's TX ring at the end of the round
    /// (whole frames; all but a frame's last carry XDP_PKT_CONTD).
    tx_pending: Vec<Desc>,
    /// Mirror copies for this port (a mirroring destination), queued
    /// after `tx_pending` so that they never take its place in the TX
    /// ring; what does not fit is dropped (counted `mirror`).
    mirror_pending: Vec<Desc>,
    /// The TX ring holds frames the kernel has not sent yet.
    tx_backlog: bool,
    /// The socket reported an error (netdev gone); not polled any more.
    dead: bool,
}

pub(crate) struct PollThread {
    index: usize,
    cfg: DatapathConfig,
    umem: Umem,
    free: Vec<u64>,
    owner: Vec<u32>,
    budget: Budget,
    /// A mirror copy takes a free frame only while more than this many
    /// are free (half the budget's reserve stays for forwarding).
    mirror_floor: usize,
    /// Sockets handed back to be closed: instance → frames in their fill
    /// rings. They stay in the budget until their frames come back.
    closing: HashMap<u32, u32>,
    ports: HashMap<Slot, Port>,
    cmds: mpsc::Receiver<PollCmd>,
    setup: mpsc::Sender<SetupMsg>,
    wake: Arc<OwnedFd>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    last_housekeeping: Instant,
    rx_buf: Vec<Desc>,
    comp_buf: Vec<u64>,
    out: Vec<Egress>,
    /// Rate limiters of every port (poll-thread state, synced to the snapshot).
    limits: Limits,
    /// Frames from egress-rate-limited ports waiting for tokens (flat
    /// descriptors, whole frames).
    shaped: HashMap<Slot, VecDeque<Desc>>,
    /// Frames to ingress-rate-limited ports homed here, waiting for
    /// tokens in a fair queue per port (whole frames).
    to_port: HashMap<Slot, FairQueue<Vec<Desc>>>,
    pollfds: Vec<libc::pollfd>,
    poll_slots: Vec<Slot>,
    /// Queues to and from the other poll threads.
    mesh: Arc<Mesh>,
    /// Threads this round handed frames or chunks to (bit i: thread i).
    notify: u64,
    stats: Arc<ThreadStats>,
    /// This thread's learned MACs, per switch (`SwitchView::id`): owned
    /// here, no lock; kept in step with the other threads by `Learn`s.
    fdbs: HashMap<u32, Fdb>,
    /// Per slot, the `flush_gen` whose MACs the tables hold.
    flush_seen: Vec<u64>,
    /// Snapshot generation the tables were last synced to.
    fdb_generation: u64,
    stop: bool,
    /// Handed over: the rings are a successor's; wait for the end.
    frozen: bool,
    /// Taking over: ports are adopted but not polled until `Resume`.
    paused: bool,
    /// The shapers' frames a freeze exported, queued again on a thaw.
    taken: Queued,
    /// Fault injection for the test that a panicking poll thread takes
    /// the process down (tests/integration/test_hardening.py): read once.
    inject_panic: bool,
}

/// Total length of the frame made of `descs`.
fn frame_len(descs: &[Desc]) -> usize {
    descs.iter().map(|d| d.len as usize).sum()
}

/// Offers the whole frames of `descs` (our chunks, going `dir`) to the
/// port's live captures; only the frames' bytes are read.
fn offer(umem: &Umem, taps: &[Arc<CaptureTap>], dir: Dir, descs: &[Desc]) {
    if !taps.iter().any(|t| t.wants(dir)) {
        return;
    }
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    for f in frames(descs) {
        let len = frame_len(f);
        for t in taps {
            t.offer(
                dir,
                ts,
                len,
                f.iter().map(|d| umem.frame(d.addr, d.len as usize)),
            );
        }
    }
}

/// Splits a flat run of descriptors into whole frames.
fn frames(descs: &[Desc]) -> impl Iterator<Item = &[Desc]> {
    let mut rest = descs;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|d| d.options & XDP_PKT_CONTD == 0)
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        Some(f)
    })
}

impl PollThread {
    /// A poll thread; `owner` is a predecessor's chunk ownership table
    /// (its sockets come later, with `Add`), or None for a fresh UMEM.
    pub(crate) fn new(
        index: usize,
        cfg: DatapathConfig,
        umem: Umem,
        links: Links,
        owner: Option<Vec<u32>>,
    ) -> Self {
        let Links {
            cmds,
            setup,
            wake,
            snapshot,
            mesh,
            stats,
        } = links;
        let n = umem.frames();
        let batch = cfg.batch;
        let inherited = owner.is_some();
        let mut owner = owner.unwrap_or_default();
        owner.resize(n as usize, FREE);
        PollThread {
            index,
            cfg,
            umem,
            // Pop from the end: low addresses first (just tidier in dumps).
            free: (0..n as u64)
                .rev()
                .filter(|i| owner[*i as usize] == FREE)
                .map(|i| i * FRAME_SIZE)
                .collect(),
            owner,
            budget: Budget::new(n),
            mirror_floor: Budget::new(n).reserve() as usize / 2,
            closing: HashMap::new(),
            ports: HashMap::new(),
            cmds,
            setup,
            wake,
            snapshot,
            last_housekeeping: Instant::now(),
            rx_buf: Vec::with_capacity(batch * 2),
            comp_buf: Vec::with_capacity(1024),
            out: Vec::with_capacity(64),
            limits: Limits::new(index),
            shaped: HashMap::new(),
            to_port: HashMap::new(),
            pollfds: Vec::new(),
            poll_slots: Vec::new(),
            mesh,
            notify: 0,
            stats,
            fdbs: HashMap::new(),
            flush_seen: Vec::new(),
            fdb_generation: 0,
            stop: false,
            frozen: false,
            paused: inherited,
            taken: Default::default(),
            inject_panic: std::env::var_os("SWITCHD_TEST_PANIC_POLL_THREAD").is_some(),
        }
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

    fn release_all(&mut self, descs: &[Desc]) {
        for d in descs {
            self.release(d.addr);
        }
    }

    pub(crate) fn run(&mut self) {
        log::info!(
            "poll thread {} running: {} UMEM frames of {} bytes, up to {} ports",
            self.index,
            self.umem.frames(),
            FRAME_SIZE,
            self.budget.max_ports()
        );
        let mut last_work = Instant::now();
        while !self.stop {
            if self.frozen {
                // Only commands, and nothing that touches a ring.
                match self.cmds.recv() {
                    Ok(PollCmd::Thaw) => {
                        log::info!(
                            "poll thread {}: handover abandoned; forwarding again",
                            self.index
                        );
                        self.frozen = false;
                        let (shaped, to_port) = std::mem::take(&mut self.taken);
                        self.requeue(shaped, to_port);
                    }
                    Ok(PollCmd::Stop) | Err(_) => return,
                    Ok(PollCmd::Add { port, reply }) => {
                        let _ = reply.send(Err("switchd is handing over".into()));
                        drop(port);
                    }
                    Ok(PollCmd::Fdb { reply, .. }) => {
                        let _ = reply.send(FdbReport::default());
                    }
                    Ok(PollCmd::Freeze { reply }) => {
                        let _ = reply.send(Err("already handed over".into()));
                    }
                    Ok(_) => {}
                }
                continue;
            }
            self.commands();
            if self.stop {
                // Not one more round or sleep: the kick that brought the
                // stop is consumed, and a sleep would last its full timeout.
                break;
            }
            if self.frozen {
                continue;
            }
            if self.paused {
                // Frames wait in the adopted rings, as they did while the
                // predecessor was frozen.
                if let Ok(c) = self.cmds.recv_timeout(Duration::from_millis(5)) {
                    self.command(c);
                }
                continue;
            }
            let worked = self.round();
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING {
                self.housekeeping();
                if self.inject_panic {
                    panic!(
                        "poll thread {}: panic injected by SWITCHD_TEST_PANIC_POLL_THREAD",
                        self.index
                    );
                }
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
            self.remove(s);
        }
    }

    fn commands(&mut self) {
        while let Ok(c) = self.cmds.try_recv() {
            if self.command(c) {
                return;
            }
        }
    }

    /// Carries out one command; true if the thread must stop taking more
    /// this round (it froze).
    fn command(&mut self, c: PollCmd) -> bool {
        match c {
            PollCmd::Add { port, reply } => {
                let r = self.add(*port);
                let _ = reply.send(r);
            }
            PollCmd::Remove { slot } => self.remove(slot),
            PollCmd::Fdb {
                switch,
                rows,
                reply,
            } => {
                let now = self.now();
                let r = match self.fdbs.get(&switch) {
                    Some(f) => FdbReport {
                        rows: if rows { f.rows(now) } else { Vec::new() },
                        len: f.len(),
                        moves: f.moves,
                        limit_hits: f.limit_hits,
                    },
                    None => FdbReport::default(),
                };
                let _ = reply.send(r);
            }
            PollCmd::Reclaim { instance } => self.reclaim(instance),
            PollCmd::Freeze { reply } => {
                let r = self.freeze();
                let _ = reply.send(r);
                return true;
            }
            PollCmd::Thaw => {}
            PollCmd::Resume => {
                if self.paused {
                    log::info!(
                        "poll thread {}: polling the {} port(s) handed over",
                        self.index,
                        self.ports.len()
                    );
                }
                self.paused = false;
            }
            PollCmd::Requeue { shaped, to_port } => self.requeue(shaped, to_port),
            PollCmd::Learn { switch, rows } => {
                let snap = self.snapshot.load_full();
                self.sync_fdbs(&snap);
                let now = self.now();
                if let Some(f) = self.fdbs.get_mut(&switch) {
                    for r in &rows {
                        f.learn_remote(r.vlan, r.mac, r.slot, now.saturating_sub(r.age_ns));
                    }
                }
            }
            PollCmd::Stop => self.stop = true,
        }
        false
    }

    /// Sends what is queued for transmission, then stops: from here on
    /// the rings belong to whoever takes the export.
    fn freeze(&mut self) -> Result<PollExport, String> {
        let snap = self.snapshot.load_full();
        self.transmit(&snap);
        let dup = |fd: std::os::fd::RawFd| {
            // SAFETY: `fd` is a live fd of ours for the duration of the call.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .map_err(|e| format!("poll thread {}: dup: {e}", self.index))
        };
        let memfd = dup(self.umem.memfd())?;
        let mut ports = Vec::new();
        for p in self.ports.values().filter(|p| !p.dead) {
            ports.push(ExportedPort {
                slot: p.slot,
                instance: p.instance,
                filled: p.filled,
                fd: dup(p.sock.fd())?,
            });
        }
        // The shapers' queues travel (kept here too, for a thaw); their
        // chunks stay HELD, other held chunks go as free.
        let shaped: Vec<(Slot, Vec<Desc>)> = self
            .shaped
            .drain()
            .map(|(s, q)| (s, q.into_iter().collect()))
            .collect();
        let to_port: Vec<(Slot, Vec<Vec<Desc>>)> = self
            .to_port
            .drain()
            .map(|(s, mut q)| (s, q.drain_all()))
            .collect();
        let mut queued = vec![false; self.owner.len()];
        let descs = shaped
            .iter()
            .flat_map(|(_, q)| q.iter())
            .chain(to_port.iter().flat_map(|(_, q)| q.iter().flatten()));
        for d in descs {
            if let Some(q) = queued.get_mut(Self::frame_index(d.addr)) {
                *q = true;
            }
        }
        self.taken = (shaped.clone(), to_port.clone());
        let mut dropped = 0;
        let owner = self
            .owner
            .iter()
            .zip(&queued)
            .map(|(&o, &q)| {
                if o == HELD && !q {
                    dropped += 1;
                    FREE
                } else {
                    o
                }
            })
            .collect();
        let now = self.now();
        let fdbs = self
            .fdbs
            .iter()
            .map(|(id, f)| {
                let rows = f.rows(now).into_iter().filter(|r| !r.is_static).collect();
                (*id, rows)
            })
            .collect();
        self.frozen = true;
        log::info!(
            "poll thread {}: frozen for a handover ({} socket(s), {dropped} frame(s) in hand dropped)",
            self.index,
            ports.len()
        );
        Ok(PollExport {
            memfd,
            owner,
            ports,
            closing: self.closing.keys().copied().collect(),
            fdbs,
            shaped,
            to_port,
            dropped,
        })
    }

    /// Queues frames a predecessor's shapers (or this thread's, after a
    /// thaw) held: from a port behind its egress shaper, to a port through
    /// its ingress shaper (as the port's own sends: who sent them is not
    /// kept). A port without a limit any more just sends them.
    fn requeue(&mut self, shaped: Vec<(Slot, Vec<Desc>)>, to_port: Vec<(Slot, Vec<Vec<Desc>>)>) {
        let snap = self.snapshot.load_full();
        let now = self.now();
        self.limits.sync(&snap, now);
        let mut n = 0;
        for (slot, q) in shaped {
            n += q.iter().filter(|d| d.options & XDP_PKT_CONTD == 0).count();
            if snap.port(slot).is_some() {
                self.shaped.entry(slot).or_default().extend(q);
            } else {
                self.release_all(&q);
            }
        }
        for (slot, frames) in to_port {
            for f in frames {
                n += 1;
                if snap.port(slot).is_some() {
                    let from = Limited {
                        from: slot,
                        weight: 1,
                    };
                    self.shape_to(&snap, slot, from, f);
                } else {
                    self.release_all(&f);
                }
            }
        }
        if n > 0 {
            log::info!(
                "poll thread {}: {n} shaped frame(s) queued again",
                self.index
            );
        }
    }

    fn add(&mut self, p: NewPort) -> Result<(), String> {
        if self.ports.contains_key(&p.slot) {
            // The setup thread removes a slot before reusing it; a
            // duplicate would be a bug there: refuse, keep the old one.
            return Err(format!("slot {} is already served", p.slot));
        }
        if let Err(e) = self.budget.add_port() {
            // The socket goes back to be closed off this thread.
            let _ = self.setup.send(SetupMsg::Returned {
                thread: self.index,
                instance: p.instance,
                sock: Box::new(p.sock),
            });
            return Err(e.to_string());
        }
        let slot = p.slot;
        self.ports.insert(
            slot,
            Port {
                slot,
                instance: p.instance,
                mtu: p.mtu,
                sock: p.sock,
                filled: p.filled,
                received: 0,
                window_rx: 0,
                window_start: 0,
                last_window_rx: 0,
                tx_pending: Vec::new(),
                mirror_pending: Vec::new(),
                tx_backlog: false,
                dead: false,
            },
        );
        if p.filled > 0 {
            self.budget.set_filled(0, p.filled);
        }
        let now = self.now();
        self.refill(slot, now);
        self.rebuild_pollfds();
        log::debug!(
            "poll thread {}: serving {} as slot {slot}",
            self.index,
            p.ifname
        );
        Ok(())
    }

    /// Stops serving `slot`: frames in our hands go back to the free list
    /// now; the socket goes back to the setup thread to be closed, and the
    /// chunks it still owns come back with `Reclaim`.
    fn remove(&mut self, slot: Slot) {
        let Some(p) = self.ports.remove(&slot) else {
            return;
        };
        self.closing.insert(p.instance, p.filled);
        let mut pending: Vec<u64> = p.tx_pending.iter().map(|d| d.addr).collect();
        pending.extend(p.mirror_pending.iter().map(|d| d.addr));
        if let Some(q) = self.shaped.remove(&slot) {
            pending.extend(q.iter().map(|d| d.addr));
        }
        if let Some(mut q) = self.to_port.remove(&slot) {
            pending.extend(q.drain_all().iter().flatten().map(|d| d.addr));
        }
        for a in pending {
            self.release(a);
        }
        self.rebuild_pollfds();
        let _ = self.setup.send(SetupMsg::Returned {
            thread: self.index,
            instance: p.instance,
            sock: Box::new(p.sock),
        });
    }

    fn reclaim(&mut self, instance: u32) {
        if let Some(filled) = self.closing.remove(&instance) {
            self.budget.remove_port(filled);
        }
        let mut n = 0;
        for i in 0..self.owner.len() {
            if self.owner[i] == instance {
                self.owner[i] = FREE;
                self.free.push(i as u64 * FRAME_SIZE);
                n += 1;
            }
        }
        log::debug!(
            "poll thread {}: reclaimed {n} frames of socket {instance}",
            self.index
        );
    }

    fn refill(&mut self, slot: Slot, now: u64) {
        let Some(p) = self.ports.get_mut(&slot) else {
            return;
        };
        // Demand: what the port receives in one rate window (the time its
        // fill ring should cover if this thread is kept off its CPU), at
        // its recent rate, or a few refills' worth of its latest batch.
        let received = std::mem::take(&mut p.received);
        if now.saturating_sub(p.window_start) >= RATE_WINDOW_NS {
            p.last_window_rx = p.window_rx;
            p.window_rx = 0;
            p.window_start = now;
        }
        let demand = if received > 0 {
            p.last_window_rx
                .max(p.window_rx)
                .max(received.saturating_mul(4))
        } else {
            0
        };
        let want = self
            .budget
            .grant(p.filled, self.free.len() as u32, demand)
            .min(p.sock.fill_free()) as usize;
        if want == 0 {
            return;
        }
        // Give the top `want` of the free stack; whatever did not fit stays.
        let start = self.free.len() - want;
        let given = p.sock.fill(&self.free[start..]);
        for a in self.free.drain(start..start + given) {
            self.owner[(a / FRAME_SIZE) as usize] = p.instance;
        }
        let old = p.filled;
        p.filled += given as u32;
        self.budget.set_filled(old, p.filled);
    }

    /// One pass over every port: completions, RX batch, refill; then TX.
    fn round(&mut self) -> bool {
        let snap = self.snapshot.load_full();
        let now = self.now();
        self.limits.sync(&snap, now);
        self.sync_fdbs(&snap);
        let mut worked = false;
        if self.mesh.threads() > 1 {
            self.take_learns(&snap, now);
            self.collect_returns();
            worked |= self.take_handoffs(&snap, now);
        }
        let slots: Vec<Slot> = self.ports.keys().copied().collect();
        for &slot in &slots {
            self.reap_completions(slot);
            if self.shaped.contains_key(&slot) {
                self.drain_shaped(&snap, slot, now);
            }
            worked |= self.receive(&snap, slot, now);
            self.refill(slot, now);
        }
        if !self.to_port.is_empty() {
            self.drain_to_ports(&snap, now);
        }
        worked |= self.transmit(&snap);
        while self.notify != 0 {
            let t = self.notify.trailing_zeros() as usize;
            self.notify &= self.notify - 1;
            self.mesh.notify(t);
        }
        worked
    }

    /// Keeps the tables in step with the snapshot: one per switch with its
    /// settings and static entries, and no MAC behind a slot whose
    /// `flush_gen` moved on (a typed change touches only its own slots).
    fn sync_fdbs(&mut self, snap: &Snapshot) {
        if snap.generation == self.fdb_generation {
            return;
        }
        let seen = std::mem::replace(&mut self.fdb_generation, snap.generation);
        let now = self.now();
        let all: Vec<Slot>;
        let slots: &[Slot] = match snap.changed_since(seen) {
            Some(c) => c,
            None => {
                self.fdbs
                    .retain(|id, _| snap.switches.iter().any(|s| s.id == *id));
                for sw in &snap.switches {
                    let f = self
                        .fdbs
                        .entry(sw.id)
                        .or_insert_with(|| Fdb::new(sw.aging_seconds, sw.max_fdb_entries));
                    f.set_aging(sw.aging_seconds);
                    f.set_limit(sw.max_fdb_entries);
                    f.set_static(&sw.statics, now);
                }
                all = (0..snap.ports.len().max(self.flush_seen.len()) as Slot).collect();
                &all
            }
        };
        if self.flush_seen.len() < snap.ports.len() {
            self.flush_seen.resize(snap.ports.len(), u64::MAX);
        }
        for &s in slots {
            let want = snap.port(s).map(|p| p.flush_gen).unwrap_or(u64::MAX);
            if let Some(had) = self.flush_seen.get_mut(s as usize) {
                if *had != want {
                    *had = want;
                    for f in self.fdbs.values_mut() {
                        f.flush_port(s);
                    }
                }
            }
        }
    }

    /// Takes in the MACs the other threads learned (for ports that still
    /// are where they say).
    fn take_learns(&mut self, snap: &Snapshot, now: u64) {
        for src in 0..self.mesh.threads() {
            if src == self.index {
                continue;
            }
            while let Some(l) = self.mesh.learned(self.index, src) {
                let here = snap
                    .port(l.slot)
                    .and_then(|p| snap.switches.get(p.switch))
                    .is_some_and(|sw| sw.id == l.switch);
                if let (true, Some(f)) = (here, self.fdbs.get_mut(&l.switch)) {
                    f.learn_remote(l.vlan, l.mac, l.slot, now);
                }
            }
        }
    }

    /// Frees the chunks other threads are done with.
    fn collect_returns(&mut self) {
        for other in 0..self.mesh.threads() {
            if other == self.index {
                continue;
            }
            while let Some(a) = self.mesh.returned(self.index, other) {
                self.release(a);
            }
        }
    }

    /// Hands the frame `f` (our chunks) to thread `dst`; on a full queue
    /// the frame is dropped and counted on `count_on`.
    fn hand_off(
        &mut self,
        snap: &Snapshot,
        dst: usize,
        kind: Kind,
        slot: Slot,
        f: &[Desc],
        count_on: Slot,
    ) {
        if f.len() > MAX_FRAGS {
            if let Some(p) = snap.port(count_on) {
                p.counters.t(self.index).count_drop(DropReason::Oversize);
            }
            self.release_all(f);
            return;
        }
        let mut frags = [Desc::default(); MAX_FRAGS];
        frags[..f.len()].copy_from_slice(f);
        let h = Handoff {
            kind,
            slot,
            nfrags: f.len() as u8,
            frags,
        };
        match self.mesh.push(self.index, dst, h) {
            Ok(()) => {
                self.notify |= 1 << dst;
                ThreadStats::add(&self.stats.handoff_out, 1);
            }
            Err(_) => {
                if let Some(p) = snap.port(count_on) {
                    p.counters.t(self.index).count_drop(DropReason::NoBuffer);
                }
                self.release_all(f);
            }
        }
    }

    /// Takes the frames other threads handed here: copies them into our
    /// chunks, gives theirs back, then sends or processes them.
    fn take_handoffs(&mut self, snap: &Snapshot, now: u64) -> bool {
        let mut worked = false;
        let mesh = self.mesh.clone();
        for src in 0..mesh.threads() {
            if src == self.index {
                continue;
            }
            for _ in 0..self.cfg.batch * 4 {
                let Some(h) = mesh.pop_for(self.index, src) else {
                    break;
                };
                worked = true;
                ThreadStats::add(&self.stats.handoff_in, 1);
                let mine = self.copy_in(&mesh, src, h.frags());
                for d in h.frags() {
                    mesh.give_back(src, self.index, d.addr);
                }
                self.notify |= 1 << src;
                let Some(mine) = mine else {
                    let why = match h.kind {
                        Kind::Mirror => DropReason::Mirror,
                        _ => DropReason::NoBuffer,
                    };
                    if let Some(p) = snap.port(h.slot) {
                        p.counters.t(self.index).count_drop(why);
                    }
                    continue;
                };
                match h.kind {
                    Kind::Transmit { limit: Some(l) } => self.shape_to(snap, h.slot, l, mine),
                    Kind::Transmit { limit: None } => self.queue_tx(snap, h.slot, &mine),
                    Kind::Process => self.ingest(snap, h.slot, &mine, now),
                    Kind::Mirror => self.queue_mirror(snap, h.slot, &mine),
                }
            }
        }
        worked
    }

    /// Copies a handed-over frame from thread `src`'s chunks into ours.
    fn copy_in(&mut self, mesh: &Mesh, src: usize, f: &[Desc]) -> Option<Vec<Desc>> {
        if self.free.len() < f.len() {
            return None;
        }
        let mut out = Vec::with_capacity(f.len());
        for d in f {
            let chunk = self.free.pop()?;
            self.owner[Self::frame_index(chunk)] = HELD;
            let bytes = mesh.bytes(src, d);
            let addr = self.umem.write_frame(chunk, bytes);
            out.push(Desc {
                addr,
                len: bytes.len() as u32,
                options: d.options & XDP_PKT_CONTD,
            });
        }
        Some(out)
    }

    /// Puts a ready frame (our chunks) on `slot`'s TX queue, if we serve it.
    fn queue_tx(&mut self, snap: &Snapshot, slot: Slot, f: &[Desc]) {
        // A mirroring source's destinations get what it is sent, as it
        // leaves (after the egress tag edit).
        if let Some(v) = snap
            .port(slot)
            .filter(|v| v.mirroring == PortMirroring::Source)
        {
            if self.ports.get(&slot).is_some_and(|p| !p.dead) {
                self.mirror(snap, v.switch, f);
            }
        }
        self.enqueue(snap, slot, f, false);
    }

    /// Copies the frame `f` (our chunks, as a mirroring source of switch
    /// `sw` sees it) for each of the switch's mirroring destinations. A
    /// copy takes a free frame only while `mirror_floor` frames stay free,
    /// never waits, and goes to the destination's poll thread; one that
    /// cannot be made or handed over is counted there as `mirror`.
    fn mirror(&mut self, snap: &Snapshot, sw: usize, f: &[Desc]) {
        let Some(sw) = snap.switches.get(sw) else {
            return;
        };
        for &dst in &sw.mirror_dests {
            // A destination set down gets nothing, like any frame.
            let Some(d) = snap.port(dst).filter(|d| d.up) else {
                continue;
            };
            let target = d.tx_thread(self.index);
            let copy = match target {
                Some(_) if self.free.len() >= self.mirror_floor + f.len() => self.copy(f),
                _ => None,
            };
            let (Some(target), Some(copy)) = (target, copy) else {
                d.counters.t(self.index).count_drop(DropReason::Mirror);
                continue;
            };
            if target == self.index {
                self.queue_mirror(snap, dst, &copy);
                continue;
            }
            if copy.len() <= MAX_FRAGS {
                let mut frags = [Desc::default(); MAX_FRAGS];
                frags[..copy.len()].copy_from_slice(&copy);
                let h = Handoff {
                    kind: Kind::Mirror,
                    slot: dst,
                    nfrags: copy.len() as u8,
                    frags,
                };
                if self.mesh.push(self.index, target, h).is_ok() {
                    self.notify |= 1 << target;
                    ThreadStats::add(&self.stats.handoff_out, 1);
                    continue;
                }
            }
            d.counters.t(self.index).count_drop(DropReason::Mirror);
            self.release_all(&copy);
        }
    }

    /// Queues a mirror copy (our chunks) for `slot`, after its own frames.
    fn queue_mirror(&mut self, snap: &Snapshot, slot: Slot, f: &[Desc]) {
        self.enqueue(snap, slot, f, true);
    }

    /// Hands the frame `f` (our chunks) to `slot`'s socket: on its own TX
    /// queue, or on its queue of mirror copies; a port we do not serve
    /// (or whose netdev is gone) counts the loss (`link-down`, `mirror`).
    fn enqueue(&mut self, snap: &Snapshot, slot: Slot, f: &[Desc], mirror: bool) {
        match self.ports.get_mut(&slot).filter(|p| !p.dead) {
            Some(p) => {
                for d in f {
                    self.owner[Self::frame_index(d.addr)] = p.instance;
                }
                let q = if mirror {
                    &mut p.mirror_pending
                } else {
                    &mut p.tx_pending
                };
                q.extend_from_slice(f);
            }
            None => {
                let why = if mirror {
                    DropReason::Mirror
                } else {
                    DropReason::LinkDown
                };
                if let Some(p) = snap.port(slot) {
                    p.counters.t(self.index).count_drop(why);
                }
                self.release_all(f);
            }
        }
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
        if p.dead {
            return false;
        }
        self.rx_buf.clear();
        let n = p.sock.recv(&mut self.rx_buf, self.cfg.batch);
        if n == 0 {
            return false;
        }
        ThreadStats::add(&self.stats.rx_packets, n as u64);
        let old = p.filled;
        p.filled = p.filled.saturating_sub(n as u32);
        p.received = p.received.saturating_add(n as u32);
        p.window_rx = p.window_rx.saturating_add(n as u32);
        self.budget.set_filled(old, p.filled);
        let batch = std::mem::take(&mut self.rx_buf);
        for d in &batch {
            if let Some(o) = self.owner.get_mut(Self::frame_index(d.addr)) {
                *o = HELD;
            }
        }
        let view = snap.port(slot);
        if let Some(p) = view {
            let c = p.counters.t(self.index);
            for f in frames(&batch) {
                ThreadCounters::add(&c.rx_packets, 1);
                ThreadCounters::add(&c.rx_bytes, frame_len(f) as u64);
            }
            // Captures and mirror destinations see what the pod sent, as
            // it sent it (before the pipeline edits it in place).
            if let Some(taps) = p.captures.as_deref() {
                offer(&self.umem, taps, Dir::In, &batch);
            }
            if p.mirroring == PortMirroring::Source {
                for f in frames(&batch) {
                    self.mirror(snap, p.switch, f);
                }
            }
        }
        match view.filter(|p| p.limited_from() && p.home != self.index) {
            // Its shaper or storm limit lives on its home thread.
            Some(p) => {
                let home = p.home;
                for f in frames(&batch) {
                    self.hand_off(snap, home, Kind::Process, slot, f, slot);
                }
            }
            None => self.ingest(snap, slot, &batch, now),
        }
        self.rx_buf = batch;
        true
    }

    /// Frames (our chunks) that entered the switch on `slot`: shaped if the
    /// port has an egress rate, then forwarded.
    fn ingest(&mut self, snap: &Snapshot, slot: Slot, batch: &[Desc], now: u64) {
        if self.limits.egress(slot).is_some() {
            // Shaped port: queue (bounded, whole frames), then send what
            // the rate allows.
            let limit = self.limits.egress_queue_limit(slot);
            let q = self.shaped.entry(slot).or_default();
            let mut over = Vec::new();
            for f in frames(batch) {
                if q.len() < limit {
                    q.extend(f.iter().copied());
                } else {
                    over.extend(f.iter().map(|d| d.addr));
                    if let Some(p) = snap.port(slot) {
                        p.counters.t(self.index).count_drop(DropReason::Qos);
                    }
                }
            }
            for a in over {
                self.release(a);
            }
            self.drain_shaped(snap, slot, now);
            return;
        }
        self.forward_batch(snap, slot, batch, now);
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
                while let Some(end) = q
                    .iter()
                    .position(|d| d.options & XDP_PKT_CONTD == 0)
                    .map(|i| i + 1)
                {
                    let bits: u64 = q.iter().take(end).map(|d| d.len as u64 * 8).sum();
                    if bucket.admit(bits, now) == qos::Admit::No {
                        break;
                    }
                    go.extend(q.drain(..end));
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
                // Out of the map for the batch (fan_out needs &mut self).
                let mut fdb = self
                    .fdbs
                    .remove(&sw.id)
                    .unwrap_or_else(|| Fdb::new(sw.aging_seconds, sw.max_fdb_entries));
                let announce = self.mesh.threads() > 1;
                for f in frames(batch) {
                    let mut out = std::mem::take(&mut self.out);
                    let head = self.umem.frame(f[0].addr, f[0].len as usize);
                    match forward(
                        snap,
                        sw,
                        &mut fdb,
                        &mut self.limits,
                        ingress,
                        head,
                        now,
                        &mut out,
                    ) {
                        Err(why) => {
                            ingress.counters.t(self.index).count_drop(why);
                            self.release_all(f);
                        }
                        Ok(dec) => {
                            if dec.handover {
                                let c = ingress.counters.t(self.index);
                                ThreadCounters::add(&c.mac_handovers, 1);
                            }
                            if dec.snooped {
                                self.snoop(sw, slot, ingress.flush_gen, dec.fid, head);
                            }
                            if announce && dec.learned.announce() {
                                self.mesh.announce(
                                    self.index,
                                    Learn {
                                        switch: sw.id,
                                        vlan: dec.fid,
                                        mac: dec.src,
                                        slot,
                                    },
                                );
                            }
                            self.fan_out(snap, f, dec.tagged, ingress.pcp, &out)
                        }
                    }
                    self.out = out;
                }
                self.fdbs.insert(sw.id, fdb);
            }
            // A port mid-removal or not yet published: nothing to forward to.
            _ => self.release_all(batch),
        }
    }

    /// Sends the membership events of an IGMP/MLD frame that arrived on
    /// `slot` (in filtering database `vlan`: the VLAN, or a private VLAN's
    /// primary) to the snooper; a full queue loses them (counted), never
    /// waits.
    fn snoop(&self, sw: &SwitchView, slot: Slot, gen: u64, vlan: u16, frame: &[u8]) {
        let Some(m) = &sw.mcast else { return };
        let mut full = false;
        mcast::frame_events(frame, &mut |event| {
            if full {
                return;
            }
            let s = mcast::Snooped {
                switch: sw.id,
                epoch: m.epoch,
                vlan,
                slot,
                gen,
                event,
            };
            if m.events.try_send(mcast::ToSnooper::Snooped(s)).is_err() {
                m.shared.counters.add_overflow(self.index);
                full = true;
            }
        });
    }

    /// Queues a frame (our chunks, tag edited) for `slot`, a port homed
    /// here with an ingress rate, in the sender's flow of its fair queue.
    /// A full queue drops the longest flow's newest frame (counted `qos`).
    fn shape_to(&mut self, snap: &Snapshot, slot: Slot, from: Limited, f: Vec<Desc>) {
        let (max_frames, max_bits) = self.limits.ingress_queue_limit(slot);
        if max_frames == 0 {
            // The limit went away meanwhile (or the port left this thread).
            self.queue_tx(snap, slot, &f);
            return;
        }
        let bits = frame_len(&f) as u64 * 8;
        let mut dropped = Vec::new();
        self.to_port.entry(slot).or_default().push(
            from.from,
            from.weight,
            bits,
            f,
            max_frames,
            max_bits,
            &mut dropped,
        );
        for d in dropped {
            if let Some(p) = snap.port(slot) {
                p.counters.t(self.index).count_drop(DropReason::Qos);
            }
            self.release_all(&d);
        }
    }

    /// Sends the frames the ports' ingress rates allow now.
    fn drain_to_ports(&mut self, snap: &Snapshot, now: u64) {
        let slots: Vec<Slot> = self.to_port.keys().copied().collect();
        for slot in slots {
            let Some(mut q) = self.to_port.remove(&slot) else {
                continue;
            };
            let go: Vec<Vec<Desc>> = match self.limits.ingress(slot) {
                Some(bucket) => std::iter::from_fn(|| q.pop(bucket, now)).collect(),
                None => q.drain_all(),
            };
            for f in go {
                self.queue_tx(snap, slot, &f);
            }
            if !q.is_empty() {
                self.to_port.insert(slot, q);
            }
        }
    }

    /// Copies the frame `f` into free chunks; None (nothing taken) if the
    /// free list runs dry.
    fn copy(&mut self, f: &[Desc]) -> Option<Vec<Desc>> {
        if self.free.len() < f.len() {
            return None;
        }
        let mut copy = Vec::with_capacity(f.len());
        for d in f {
            let chunk = self.free.pop()?;
            self.owner[Self::frame_index(chunk)] = HELD;
            let addr = self.umem.copy_frame(d.addr, d.len as usize, chunk);
            copy.push(Desc {
                addr,
                len: d.len,
                options: d.options & XDP_PKT_CONTD,
            });
        }
        Some(copy)
    }

    /// Queues the frame `f` on every egress port: copies for all but the
    /// last, the original (edited in place) for the last. A port served by
    /// another thread (or rate-limited there) gets it through the mesh.
    /// Every port that does not get it counts why.
    /// `pcp`: the ingress port's 802.1p policy for frames that leave
    /// tagged (None: the frame's own bits).
    fn fan_out(
        &mut self,
        snap: &Snapshot,
        f: &[Desc],
        tagged: bool,
        pcp: Option<u8>,
        out: &[Egress],
    ) {
        let mut original_used = false;
        let len = frame_len(f);
        for (i, e) in out.iter().enumerate() {
            let last = i + 1 == out.len();
            let Some(eport) = snap.port(e.slot) else {
                continue;
            };
            let target = match e.limit {
                Some(_) => Some(eport.home),
                None => eport.tx_thread(self.index),
            };
            let local = target == Some(self.index);
            let mtu = if local {
                self.ports.get(&e.slot).filter(|p| !p.dead).map(|p| p.mtu)
            } else {
                target.map(|_| u32::MAX)
            };
            let (Some(target), Some(mtu)) = (target, mtu) else {
                eport
                    .counters
                    .t(self.index)
                    .count_drop(DropReason::LinkDown);
                continue;
            };
            // What the egress netdev would carry as payload: the frame
            // after the tag edit, less the Ethernet header and any tag.
            let payload = len - HEADER_LEN - if tagged { TAG_LEN } else { 0 };
            if payload > mtu as usize {
                eport
                    .counters
                    .t(self.index)
                    .count_drop(DropReason::Oversize);
                continue;
            }
            let frags: Vec<Desc> = if last {
                original_used = true;
                f.iter()
                    .map(|d| Desc {
                        options: d.options & XDP_PKT_CONTD,
                        ..*d
                    })
                    .collect()
            } else {
                match self.copy(f) {
                    Some(c) => c,
                    None => {
                        eport
                            .counters
                            .t(self.index)
                            .count_drop(DropReason::NoBuffer);
                        continue;
                    }
                }
            };
            let first = frags[0];
            let (chunk, off) = self.umem.chunk_mut(first.addr);
            let base = first.addr - off as u64;
            let Ok((noff, nlen)) =
                apply_tag_edit(chunk, off, first.len as usize, tagged, e.edit, pcp)
            else {
                // Received frames always have 256 bytes of headroom;
                // this would be a kernel surprise, not a user's frame.
                eport
                    .counters
                    .t(self.index)
                    .count_drop(DropReason::NoBuffer);
                self.release_all(&frags);
                continue;
            };
            let mut edited = frags;
            edited[0] = Desc {
                addr: base + noff as u64,
                len: nlen as u32,
                options: first.options,
            };
            if local {
                match e.limit {
                    Some(l) => self.shape_to(snap, e.slot, l, edited),
                    None => self.queue_tx(snap, e.slot, &edited),
                }
            } else {
                let kind = Kind::Transmit { limit: e.limit };
                self.hand_off(snap, target, kind, e.slot, &edited, e.slot);
            }
        }
        if !original_used {
            self.release_all(f);
        }
    }

    /// Moves each port's pending frames onto its TX ring and kicks it.
    fn transmit(&mut self, snap: &Snapshot) -> bool {
        let index = self.index;
        let mut worked = false;
        let mut unsent: Vec<u64> = Vec::new();
        for p in self.ports.values_mut() {
            if p.tx_pending.is_empty() && p.mirror_pending.is_empty() && !p.tx_backlog {
                continue;
            }
            let view = snap.port(p.slot);
            let counters = view.map(|v| v.counters.t(index));
            let taps = view.and_then(|v| v.captures.as_deref());
            if !p.tx_pending.is_empty() {
                worked = true;
                let n = p.sock.send(&p.tx_pending);
                ThreadStats::add(
                    &self.stats.tx_packets,
                    frames(&p.tx_pending[..n]).count() as u64,
                );
                if let Some(c) = counters {
                    let (sent, rest) = p.tx_pending.split_at(n);
                    let sent_frames = frames(sent).count() as u64;
                    ThreadCounters::add(&c.tx_packets, sent_frames);
                    ThreadCounters::add(&c.tx_bytes, frame_len(sent) as u64);
                    for _ in frames(rest) {
                        c.count_drop(DropReason::TxFull);
                    }
                }
                if let Some(taps) = taps {
                    offer(&self.umem, taps, Dir::Out, &p.tx_pending[..n]);
                }
                unsent.extend(p.tx_pending[n..].iter().map(|d| d.addr));
                p.tx_pending.clear();
            }
            if !p.mirror_pending.is_empty() {
                // Mirror copies take what room the port's own frames left.
                worked = true;
                let n = p.sock.send(&p.mirror_pending);
                let (sent, rest) = p.mirror_pending.split_at(n);
                let sent_frames = frames(sent).count() as u64;
                ThreadStats::add(&self.stats.tx_packets, sent_frames);
                if let Some(c) = counters {
                    ThreadCounters::add(&c.tx_packets, sent_frames);
                    ThreadCounters::add(&c.tx_bytes, frame_len(sent) as u64);
                    ThreadCounters::add(&c.mirror_copies, sent_frames);
                    for _ in frames(rest) {
                        c.count_drop(DropReason::Mirror);
                    }
                }
                if let Some(taps) = taps {
                    offer(&self.umem, taps, Dir::Out, sent);
                }
                unsent.extend(rest.iter().map(|d| d.addr));
                p.mirror_pending.clear();
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
        self.stats.ports.store(self.ports.len() as u32, Relaxed);
        self.stats
            .free_frames
            .store(self.free.len() as u32, Relaxed);
        self.pollfds.clear();
        self.poll_slots.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for p in self.ports.values().filter(|p| !p.dead) {
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
            .filter_map(|(s, q)| {
                let end = q.iter().position(|d| d.options & XDP_PKT_CONTD == 0)? + 1;
                Some((*s, q.iter().take(end).map(|d| d.len as u64 * 8).sum()))
            })
            .collect();
        let ms = |ns: u64| ns.div_ceil(1_000_000).clamp(1, 1000) as i32;
        let egress = fronts
            .into_iter()
            .map(|(slot, bits)| match self.limits.egress(slot) {
                Some(b) => ms(b.wait_ns(bits, now)),
                None => 1,
            })
            .min();
        let slots: Vec<Slot> = self.to_port.keys().copied().collect();
        let ingress = slots
            .into_iter()
            .filter_map(|slot| {
                let q = self.to_port.get(&slot)?;
                Some(match self.limits.ingress(slot) {
                    Some(b) => ms(q.wait_ns(b, now)?),
                    None => 1,
                })
            })
            .min();
        egress.into_iter().chain(ingress).min()
    }

    fn sleep(&mut self, timeout_ms: i32) {
        if self.pollfds.is_empty() {
            self.rebuild_pollfds();
        }
        if !self.mesh.about_to_sleep(self.index) {
            return;
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
        self.mesh.awake(self.index);
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
            // Stop polling it here; the setup thread detaches the port.
            if let Some(p) = self.ports.get_mut(&s) {
                log::warn!("slot {s}: socket error (netdev removed?); detaching");
                p.dead = true;
                let _ = self.setup.send(SetupMsg::Gone { slot: s });
            }
        }
        self.rebuild_pollfds();
    }

    fn housekeeping(&mut self) {
        self.last_housekeeping = Instant::now();
        self.stats
            .free_frames
            .store(self.free.len() as u32, Relaxed);
        self.stats.ports.store(self.ports.len() as u32, Relaxed);
        let now = self.now();
        let snap = self.snapshot.load();
        for f in self.fdbs.values_mut() {
            f.sweep(now);
        }
        for p in self.ports.values() {
            let Some(v) = snap.port(p.slot) else {
                continue;
            };
            let c = v.counters.t(self.index);
            if let Ok(st) = p.sock.stats() {
                // A frame that found the fill ring empty counts in both
                // rx_dropped and rx_fill_ring_empty_descs (the kernel's
                // __xsk_rcv and xp_alloc): count it once. A full RX ring
                // counts only in rx_ring_full.
                c.set_kernel_drops(st.rx_dropped + st.rx_ring_full);
            }
            // What waits in the shapers, once a second (a gauge).
            let from = self.shaped.get(&p.slot).map_or(0, |q| {
                q.iter().filter(|d| d.options & XDP_PKT_CONTD == 0).count()
            });
            let to = self.to_port.get(&p.slot).map_or(0, |q| q.frames());
            c.egress_queued.store(from as u64, Relaxed);
            c.ingress_queued.store(to as u64, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(addr: u64, len: u32, more: bool) -> Desc {
        Desc {
            addr,
            len,
            options: if more { XDP_PKT_CONTD } else { 0 },
        }
    }

    #[test]
    fn frames_split_on_the_last_fragment() {
        let v = [
            d(0, 60, false),
            d(4096, 3840, true),
            d(8192, 3840, true),
            d(12288, 1000, false),
            d(16384, 64, false),
        ];
        let f: Vec<&[Desc]> = frames(&v).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].len(), 3);
        assert_eq!(frame_len(f[1]), 8680);
        assert_eq!(frame_len(f[2]), 64);
    }
}
