//! The AF_XDP data path: poll threads that forward, and one setup thread
//! that makes and breaks their sockets.
//!
//! - Poll thread *i* owns a UMEM and serves queue *i* of every port, so a
//!   forwarded frame moves by descriptor inside one thread. It reads the
//!   published snapshot once per round and runs the pure pipeline on each
//!   RX batch; it sleeps in poll() when no frame is pending.
//! - The setup thread creates, binds and closes sockets, updates the XDP
//!   program's maps and attaches the program; poll threads only swap ready
//!   ports in and out between rounds, so a pod's ADD or DEL never pauses
//!   forwarding for the others.
//!
//! The control plane talks to it through `Datapath`: attach and detach are
//! messages to the setup thread, configuration changes are new snapshots.

pub mod bpf;
pub mod budget;
mod mesh;
pub use podswitch_shared::netdev;
pub(crate) mod poll;
mod setup;
pub mod xsk;

use crate::pipeline::fdb::Slot;
use crate::pipeline::snapshot::Snapshot;
use arc_swap::ArcSwap;
use podswitch_shared::model::Nic;
use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use bpf::Mode;

/// Data-path sizing.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// UMEM frames (4 KiB each) of each poll thread.
    pub umem_frames: u32,
    /// Descriptors taken from one RX ring per round.
    pub batch: usize,
    /// Attach XDP in the driver where possible (else the generic skb path).
    pub native_xdp: bool,
    /// One entry per poll thread: the CPU it is pinned to, if any.
    pub poll_cpus: Vec<Option<usize>>,
    /// How long a poll thread keeps polling after its last frame before
    /// it sleeps in poll().
    pub spin: Duration,
    /// Nice value of the poll threads (-20..=19; 0 leaves them as they
    /// are). Below 0 a poll thread woken by a frame preempts the pods'
    /// processes on its CPU, as the kernel's own softirq processing would.
    pub nice: i32,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            umem_frames: 16384,
            batch: 128,
            native_xdp: true,
            poll_cpus: vec![None],
            spin: Duration::from_micros(50),
            nice: 0,
        }
    }
}

impl DatapathConfig {
    pub fn threads(&self) -> usize {
        self.poll_cpus.len().max(1)
    }
}

/// A port the data path is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub mode: Mode,
    /// Queues with a socket (one per poll thread, at most).
    pub queues: u32,
    /// The netdev's MTU when attached.
    pub mtu: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{0}")]
    Attach(String),
    #[error("the data path thread is not running")]
    Gone,
    #[error("the data path did not answer within {0:?}")]
    Timeout(Duration),
    #[error("starting the data path: {0}")]
    Start(String),
}

/// A poll thread's own counters. Single writer (that thread, plain
/// load/store), read by the API.
#[derive(Debug, Default)]
pub struct ThreadStats {
    pub tid: AtomicU32,
    pub ports: AtomicU32,
    pub free_frames: AtomicU32,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub handoff_out: AtomicU64,
    pub handoff_in: AtomicU64,
}

impl ThreadStats {
    #[inline]
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    fn info(&self, index: usize, cpu: Option<usize>) -> podswitch_shared::model::PollThreadInfo {
        let tid = self.tid.load(Relaxed);
        podswitch_shared::model::PollThreadInfo {
            index,
            cpu,
            tid,
            ports: self.ports.load(Relaxed),
            free_frames: self.free_frames.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            handoff_out: self.handoff_out.load(Relaxed),
            handoff_in: self.handoff_in.load(Relaxed),
            cpu_seconds: thread_cpu_seconds(tid),
        }
    }
}

/// CPU seconds (user + system) of thread `tid` of this process.
fn thread_cpu_seconds(tid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// What the setup thread is asked (by the control plane and the poll threads).
pub(crate) enum SetupMsg {
    Attach {
        slot: Slot,
        nic: Nic,
        reply: mpsc::SyncSender<Result<Attachment, String>>,
    },
    Detach {
        slot: Slot,
    },
    /// A poll thread let go of a socket: close it, then let the poll
    /// thread reuse its frames.
    Returned {
        thread: usize,
        instance: u32,
        sock: Box<xsk::XskSocket>,
    },
    /// A poll thread saw the socket fail (netdev removed).
    Gone {
        slot: Slot,
    },
    /// Hand everything over (see `Datapath::freeze`).
    Freeze {
        reply: mpsc::SyncSender<Result<DatapathExport, String>>,
    },
    /// The handover failed before the successor took anything: resume.
    Thaw,
    /// Restore is over: close handed-over sockets nobody adopted.
    ForgetInherited,
    Stop,
}

/// One queue's socket of a port, handed from one switchd to the next.
pub struct InheritedQueue {
    /// The poll thread that serves it (= the queue number).
    pub thread: usize,
    /// The socket's name in that thread's chunk ownership table.
    pub instance: u32,
    /// Frames in its fill ring (or being written by the kernel).
    pub filled: u32,
    pub fd: OwnedFd,
}

/// A port's sockets, handed from one switchd to the next.
pub struct InheritedPort {
    pub slot: Slot,
    pub ifindex: u32,
    pub ifname: String,
    pub netns: Option<String>,
    pub queues: Vec<InheritedQueue>,
}

/// Everything the data path hands a successor: the XDP program, its maps
/// and links; each poll thread's UMEM, chunk owners and learned MACs;
/// each port's sockets.
pub struct DatapathExport {
    pub prog: bpf::ProgramFds,
    pub threads: Vec<poll::PollExport>,
    pub ports: Vec<InheritedPort>,
}

/// What a successor starts from (`DatapathExport` after the trip).
pub struct Inherited {
    pub prog: bpf::ProgramFds,
    /// Per poll thread: its UMEM memfd and chunk owners.
    pub umems: Vec<(OwnedFd, Vec<u32>)>,
    pub ports: Vec<InheritedPort>,
}

/// The control plane's handle on the data path. Every method takes
/// `&self` and none holds a lock across the kernel's work, so the API can
/// call it from many requests at once.
pub struct Datapath {
    cfg: DatapathConfig,
    setup: mpsc::Sender<SetupMsg>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Slots being served; written by the setup thread.
    attached: Arc<Mutex<HashMap<Slot, Attachment>>>,
    stats: Vec<Arc<ThreadStats>>,
    /// Each poll thread's command queue and wake-up (for FDB reports).
    polls: Vec<(mpsc::Sender<poll::PollCmd>, Arc<OwnedFd>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Frames the XDP program dropped per slot for want of a socket.
    no_socket: bpf::NoSocketCounts,
    /// Set by the setup thread when it attached a port again on its own
    /// (a tap whose VMM opened more queues): the snapshot's served-queue
    /// counts are stale until the control plane publishes again.
    reattached: Arc<std::sync::atomic::AtomicBool>,
}

/// What the registry and the reconciler need of a data path. `Datapath`
/// is the AF_XDP one; tests of the layers above use a fake, so they run
/// without root.
pub trait Dataplane: Send + Sync {
    /// Attaches the NIC (in its network namespace) as port `slot`;
    /// returns once frames flow.
    fn attach(&self, slot: Slot, nic: &Nic) -> Result<Attachment, DatapathError>;
    /// Stops serving `slot` (teardown happens off the caller's thread).
    fn detach(&self, slot: Slot) -> Result<(), DatapathError>;
    /// Hands the poll threads a new configuration.
    fn publish(&self, snap: Snapshot);
    fn attachment(&self, slot: Slot) -> Option<Attachment>;
    fn config(&self) -> &DatapathConfig;
    /// Switch `id`'s forwarding table as the poll threads hold it.
    fn fdb(&self, id: u32, rows: bool) -> Option<FdbView>;
    /// Each poll thread's counters.
    fn threads(&self) -> Vec<podswitch_shared::model::PollThreadInfo>;
    /// Frames of `slot` that arrived on a queue without a socket (counted
    /// by the XDP program: `no-socket` drops).
    fn no_socket_drops(&self, _slot: Slot) -> u64 {
        0
    }
    /// Whether the data path re-attached a port on its own since the last
    /// call (the control plane then publishes again).
    fn take_reattached(&self) -> bool {
        false
    }
}

/// A switch's forwarding table as the poll threads hold it.
#[derive(Debug, Default, Clone)]
pub struct FdbView {
    /// Thread 0's rows (every thread learns what the others announce).
    pub rows: Vec<crate::pipeline::fdb::Row>,
    pub len: usize,
    /// Summed over the threads (each counts what it saw itself).
    pub moves: u64,
    pub limit_hits: u64,
}

/// Sets this thread's nice value; a refusal (no CAP_SYS_NICE) is logged,
/// not fatal: the thread then competes with the pods as an equal.
fn renice(thread: usize, nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority on this thread's own TID (gettid has no
    // preconditions); no memory is passed.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if r != 0 {
        log::warn!(
            "poll thread {thread}: cannot set nice {nice} ({}); it runs at the default priority",
            io::Error::last_os_error()
        );
    }
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: Option<usize>) -> Result<(), String> {
    let Some(cpu) = cpu else { return Ok(()) };
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; the call
    // applies to this thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning the poll thread to CPU {cpu}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

fn eventfd() -> Result<Arc<OwnedFd>, DatapathError> {
    // SAFETY: eventfd(2) with valid flags; the fd is owned right below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(DatapathError::Start(format!(
            "eventfd: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh fd we own.
    Ok(Arc::new(unsafe { OwnedFd::from_raw_fd(efd) }))
}

impl Datapath {
    /// Loads the XDP program, maps one UMEM per poll thread and starts the
    /// poll threads and the setup thread.
    pub fn start(cfg: DatapathConfig) -> Result<Datapath, DatapathError> {
        Self::start_with(cfg, None)
    }

    /// Starts on what a predecessor handed over: its program, maps and
    /// links, its UMEMs (frames in the rings included) and its sockets,
    /// which the setup thread adopts as the registry attaches the ports
    /// again. Nothing is loaded, registered or attached anew.
    pub fn start_inherited(
        cfg: DatapathConfig,
        from: Inherited,
    ) -> Result<Datapath, DatapathError> {
        if from.umems.len() != cfg.threads() {
            return Err(DatapathError::Start(format!(
                "the predecessor ran {} poll thread(s), this switchd is configured for {}",
                from.umems.len(),
                cfg.threads()
            )));
        }
        Self::start_with(cfg, Some(from))
    }

    fn start_with(cfg: DatapathConfig, from: Option<Inherited>) -> Result<Datapath, DatapathError> {
        let (prog, mut umems_in, ports_in) = match from {
            None => (
                bpf::XdpProgram::load().map_err(|e| DatapathError::Start(e.to_string()))?,
                Vec::new(),
                Vec::new(),
            ),
            Some(i) => (
                bpf::XdpProgram::adopt(i.prog).map_err(|e| DatapathError::Start(e.to_string()))?,
                i.umems,
                i.ports,
            ),
        };
        let no_socket = prog.no_socket_counts();
        let reattached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let attached = Arc::new(Mutex::new(HashMap::new()));
        let (setup_tx, setup_rx) = mpsc::channel();
        let mut links = Vec::new();
        let mut threads = Vec::new();
        let mut umems = Vec::new();
        let mut wakes = Vec::new();
        let stats: Vec<Arc<ThreadStats>> = (0..cfg.threads()).map(|_| Arc::default()).collect();
        let mut owners = Vec::new();
        umems_in.reverse();
        for i in 0..cfg.threads() {
            let umem = match umems_in.pop() {
                None => xsk::Umem::new(cfg.umem_frames),
                Some((fd, owner)) => {
                    owners.push(Some(owner));
                    xsk::Umem::from_memfd(fd, cfg.umem_frames)
                }
            }
            .map_err(|e| DatapathError::Start(format!("UMEM of poll thread {i}: {e}")))?;
            wakes.push(eventfd()?);
            umems.push(umem);
        }
        owners.resize_with(cfg.threads(), || None);
        owners.reverse();
        let mesh = Arc::new(mesh::Mesh::new(
            umems.iter().map(|u| u.mapping()).collect(),
            wakes.clone(),
        ));
        for (i, (umem, wake)) in umems.into_iter().zip(wakes).enumerate() {
            let cpu = cfg.poll_cpus.get(i).copied().flatten();
            let (tx, rx) = mpsc::channel();
            links.push(setup::PollLink {
                cmds: tx,
                wake: wake.clone(),
                umem: umem.area(),
            });
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let (c, s, st, m) = (
                cfg.clone(),
                snapshot.clone(),
                setup_tx.clone(),
                mesh.clone(),
            );
            let ts = stats[i].clone();
            let owner = owners.pop().flatten();
            let t = std::thread::Builder::new()
                .name(format!("switchd-poll{i}"))
                .spawn(move || match pin(cpu) {
                    Ok(()) => {
                        renice(i, c.nice);
                        let _ = ready_tx.send(Ok(()));
                        // SAFETY: gettid has no preconditions.
                        ts.tid.store(unsafe { libc::gettid() } as u32, Relaxed);
                        let links = poll::Links {
                            cmds: rx,
                            setup: st,
                            wake,
                            snapshot: s,
                            mesh: m,
                            stats: ts,
                        };
                        poll::PollThread::new(i, c, umem, links, owner).run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| DatapathError::Start(e.to_string()))?;
            threads.push(t);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(DatapathError::Start(e)),
                Err(_) => return Err(DatapathError::Gone),
            }
        }
        let polls = links
            .iter()
            .map(|l| (l.cmds.clone(), l.wake.clone()))
            .collect();
        let (c, a, r) = (cfg.clone(), attached.clone(), reattached.clone());
        let t = std::thread::Builder::new()
            .name("switchd-setup".into())
            .spawn(move || {
                let mut s = setup::SetupThread::new(c, prog, links, setup_rx, a, r);
                s.inherit(ports_in);
                s.run()
            })
            .map_err(|e| DatapathError::Start(e.to_string()))?;
        threads.push(t);
        Ok(Datapath {
            cfg,
            setup: setup_tx,
            snapshot,
            attached,
            stats,
            polls,
            threads,
            no_socket,
            reattached,
        })
    }

    fn send(&self, m: SetupMsg) -> Result<(), DatapathError> {
        self.setup.send(m).map_err(|_| DatapathError::Gone)
    }

    /// Freezes the data path for a handover: the poll threads stop
    /// touching their rings (frames keep arriving into them) and the
    /// setup thread stops changing anything; returns duplicates of every
    /// kernel object a successor needs, with the bookkeeping to use them.
    pub fn freeze(&self) -> Result<DatapathExport, DatapathError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(SetupMsg::Freeze { reply })?;
        match answer.recv_timeout(ANSWER_TIMEOUT) {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(m)) => Err(DatapathError::Attach(m)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(DatapathError::Timeout(ANSWER_TIMEOUT)),
            Err(_) => Err(DatapathError::Gone),
        }
    }

    /// After a handover: the threads end, closing this process's copies
    /// of the sockets, UMEMs, program, maps and links, and detach nothing
    /// (the successor holds its own).
    pub fn release(&self) {
        let _ = self.send(SetupMsg::Stop);
        self.no_socket.release();
    }

    /// Resumes after a freeze whose handover did not happen.
    pub fn thaw(&self) {
        let _ = self.send(SetupMsg::Thaw);
    }

    /// Starts polling what was handed over (every adopted port is in the
    /// published snapshot by now).
    pub fn resume(&self) {
        for (tx, wake) in &self.polls {
            let _ = tx.send(poll::PollCmd::Resume);
            setup::kick(wake);
        }
    }

    /// Closes the handed-over sockets that no port adopted.
    pub fn forget_inherited(&self) {
        let _ = self.send(SetupMsg::ForgetInherited);
    }

    /// Gives poll thread `thread` the frames its predecessor's shapers
    /// held (their chunks came as HELD in the owner table).
    pub fn requeue(&self, thread: usize, q: poll::Queued) {
        if let Some((tx, wake)) = self.polls.get(thread) {
            let (shaped, to_port) = q;
            let _ = tx.send(poll::PollCmd::Requeue { shaped, to_port });
            setup::kick(wake);
        }
    }

    /// Gives poll thread `thread` the MACs its predecessor had learned on
    /// switch `switch` (ports as slots of this switchd).
    pub fn learn(&self, thread: usize, switch: u32, rows: Vec<crate::pipeline::fdb::Row>) {
        if let Some((tx, wake)) = self.polls.get(thread) {
            let _ = tx.send(poll::PollCmd::Learn { switch, rows });
            setup::kick(wake);
        }
    }

    /// Attaches the netdev `ifname` as port `slot`; returns once frames
    /// flow. The socket work happens on the setup thread; the caller only
    /// waits (holding no lock of the control plane's).
    pub fn attach(&self, slot: Slot, nic: &Nic) -> Result<Attachment, DatapathError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(SetupMsg::Attach {
            slot,
            nic: nic.clone(),
            reply,
        })?;
        match answer.recv_timeout(ANSWER_TIMEOUT) {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(m)) => Err(DatapathError::Attach(m)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(DatapathError::Timeout(ANSWER_TIMEOUT)),
            Err(_) => Err(DatapathError::Gone),
        }
    }

    /// Stops serving port `slot`. Returns at once: the port is already out
    /// of the published snapshot, so nothing is forwarded to or from it,
    /// and the teardown (which waits out kernel grace periods) happens on
    /// the setup thread. Messages run in order: a later attach of the same
    /// slot or NIC comes after this detach.
    pub fn detach(&self, slot: Slot) -> Result<(), DatapathError> {
        self.send(SetupMsg::Detach { slot })
    }

    /// Publishes a new configuration; poll threads use it from their next round.
    pub fn publish(&self, snap: Snapshot) {
        self.snapshot.store(Arc::new(snap));
    }

    pub fn config(&self) -> &DatapathConfig {
        &self.cfg
    }

    /// The forwarding table of switch `id` (`SwitchView::id`), asked of the
    /// poll threads that own it (each answers between two rounds); rows
    /// only if `rows`. None if a thread did not answer within a second.
    pub fn fdb(&self, id: u32, rows: bool) -> Option<FdbView> {
        let mut answers = Vec::new();
        for (i, (tx, wake)) in self.polls.iter().enumerate() {
            let (reply, answer) = mpsc::sync_channel(1);
            tx.send(poll::PollCmd::Fdb {
                switch: id,
                rows: rows && i == 0,
                reply,
            })
            .ok()?;
            setup::kick(wake);
            answers.push(answer);
        }
        let mut v = FdbView::default();
        for (i, a) in answers.into_iter().enumerate() {
            let r = a.recv_timeout(Duration::from_secs(1)).ok()?;
            if i == 0 {
                v.rows = r.rows;
                v.len = r.len;
            }
            v.moves += r.moves;
            v.limit_hits += r.limit_hits;
        }
        Some(v)
    }

    /// Each poll thread's counters and CPU time.
    pub fn threads(&self) -> Vec<podswitch_shared::model::PollThreadInfo> {
        self.stats
            .iter()
            .enumerate()
            .map(|(i, s)| s.info(i, self.cfg.poll_cpus.get(i).copied().flatten()))
            .collect()
    }

    pub fn attachment(&self, slot: Slot) -> Option<Attachment> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .copied()
    }
}

impl Dataplane for Datapath {
    fn attach(&self, slot: Slot, nic: &Nic) -> Result<Attachment, DatapathError> {
        Datapath::attach(self, slot, nic)
    }
    fn detach(&self, slot: Slot) -> Result<(), DatapathError> {
        Datapath::detach(self, slot)
    }
    fn publish(&self, snap: Snapshot) {
        Datapath::publish(self, snap)
    }
    fn attachment(&self, slot: Slot) -> Option<Attachment> {
        Datapath::attachment(self, slot)
    }
    fn config(&self) -> &DatapathConfig {
        Datapath::config(self)
    }
    fn fdb(&self, id: u32, rows: bool) -> Option<FdbView> {
        Datapath::fdb(self, id, rows)
    }
    fn threads(&self) -> Vec<podswitch_shared::model::PollThreadInfo> {
        Datapath::threads(self)
    }
    fn no_socket_drops(&self, slot: Slot) -> u64 {
        self.no_socket.get(slot)
    }
    fn take_reattached(&self) -> bool {
        self.reattached
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // The setup thread detaches every port and stops the poll threads.
        let _ = self.send(SetupMsg::Stop);
        let t0 = std::time::Instant::now();
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("?").to_string();
            let _ = t.join();
            log::debug!("{name} joined after {} ms", t0.elapsed().as_millis());
        }
    }
}

/// A data path that records what it is asked, for tests of the layers
/// above it (no root, no kernel objects).
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Default)]
    pub struct FakeDataplane {
        cfg: DatapathConfig,
        pub published: Mutex<Vec<Arc<Snapshot>>>,
        pub attached: Mutex<HashMap<Slot, Attachment>>,
        pub detached: Mutex<Vec<Slot>>,
    }

    impl FakeDataplane {
        pub fn last(&self) -> Arc<Snapshot> {
            self.published
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    impl Dataplane for FakeDataplane {
        fn attach(&self, slot: Slot, _nic: &Nic) -> Result<Attachment, DatapathError> {
            let a = Attachment {
                ifindex: 100 + slot,
                mode: Mode::Native,
                queues: 1,
                mtu: 1500,
            };
            self.attached.lock().unwrap().insert(slot, a);
            Ok(a)
        }
        fn detach(&self, slot: Slot) -> Result<(), DatapathError> {
            self.attached.lock().unwrap().remove(&slot);
            self.detached.lock().unwrap().push(slot);
            Ok(())
        }
        fn publish(&self, snap: Snapshot) {
            self.published.lock().unwrap().push(Arc::new(snap));
        }
        fn attachment(&self, slot: Slot) -> Option<Attachment> {
            self.attached.lock().unwrap().get(&slot).copied()
        }
        fn config(&self) -> &DatapathConfig {
            &self.cfg
        }
        fn fdb(&self, _id: u32, _rows: bool) -> Option<FdbView> {
            Some(FdbView::default())
        }
        fn threads(&self) -> Vec<podswitch_shared::model::PollThreadInfo> {
            Vec::new()
        }
    }
}
