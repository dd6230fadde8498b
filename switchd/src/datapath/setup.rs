//! The setup thread: everything slow about a port happens here, never on a
//! poll thread. It creates and binds a port's AF_XDP sockets (one per
//! queue, each sharing its poll thread's UMEM), hands them to the poll
//! threads, then points the XDP program's maps at them and attaches the
//! program; on detach it does the reverse and closes the sockets the poll
//! threads hand back (the close waits out the kernel's grace periods).
//!
//! Written by: this thread (`attached`, the BPF maps, socket lifetimes).
//! Read by: the API (`attached`), the kernel (maps).

use super::bpf::{XdpChoice, XdpProgram};
use super::poll::{NewPort, PollCmd, PollExport, OWNER_FREE};
use super::xsk::{RingSizes, UmemArea, XskSocket};
use super::{netdev, Attachment, DatapathConfig, SetupMsg};
use crate::pipeline::fdb::Slot;
use podswitch_shared::model::{Nic, NicKind};
use podswitch_shared::netns::NetNs;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an attach waits for the kernel to release a queue that a
/// just-closed socket still holds.
const BUSY_RETRY: Duration = Duration::from_secs(3);
/// How long a poll thread may take to take a new socket in.
const POLL_ANSWER: Duration = Duration::from_secs(5);
/// How often the ports' netdevs are checked for having vanished.
const NETDEV_CHECK: Duration = Duration::from_secs(1);

/// A poll thread as the setup thread sees it.
pub(crate) struct PollLink {
    pub cmds: mpsc::Sender<PollCmd>,
    pub wake: Arc<OwnedFd>,
    pub umem: UmemArea,
}

impl PollLink {
    fn send(&self, c: PollCmd) -> bool {
        let ok = self.cmds.send(c).is_ok();
        kick(&self.wake);
        ok
    }
}

/// Wakes a thread sleeping in poll() on `efd`.
pub(crate) fn kick(efd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a live u64 to our eventfd.
    unsafe {
        libc::write(
            efd.as_raw_fd(),
            &one as *const u64 as *const libc::c_void,
            8,
        )
    };
}

struct PortRecord {
    ifname: String,
    /// The tap's namespace (None: switchd's own).
    netns: Option<String>,
    /// A tap: its queue count follows its VMM, which opens them later.
    tap: bool,
    ifindex: u32,
    /// (thread, raw fd) of each queue's socket; the poll thread owns the
    /// socket, and only this thread closes it, so the fd stays valid while
    /// it is listed here.
    sockets: Vec<(usize, RawFd)>,
    attachment: Attachment,
}

impl PortRecord {
    /// One look at the netdev where it lives (for a tap in a pod's
    /// namespace, one short-lived thread inside it): whether it is still
    /// the one attached, and, if `queues`, how many receive queues it has
    /// now. A namespace path that is gone means the pod was deleted (our
    /// socket keeps the namespace alive until we let go of it). Errors that
    /// do not say "gone" (out of file descriptors, a thread that could not
    /// start) count as present: a live VM is not cut off for them.
    fn probe(&self, queues: bool) -> (bool, Option<u32>) {
        let here = || {
            let present = match netdev::ifindex(&self.ifname) {
                Ok(i) => i == self.ifindex,
                Err(netdev::NetdevError::NotFound { .. }) => false,
                Err(e) => {
                    log::debug!("checking {}: {e}", self.ifname);
                    true
                }
            };
            let n = (present && queues)
                .then(|| netdev::rx_queues(&self.ifname).ok())
                .flatten();
            (present, n)
        };
        match &self.netns {
            None => here(),
            Some(path) => match NetNs::open(Path::new(path)) {
                Ok(ns) => ns.run(here).unwrap_or((true, None)),
                Err(e) => (e.kind() != std::io::ErrorKind::NotFound, None),
            },
        }
    }

    fn as_nic(&self) -> Nic {
        let kind = if self.tap {
            NicKind::Tap
        } else {
            NicKind::Veth
        };
        Nic {
            netns: self.netns.clone(),
            ..Nic::new(kind, self.ifname.clone())
        }
    }
}

/// Why an attach failed.
enum Failure {
    /// A queue is still held by a socket being torn down.
    Busy(String),
    Other(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Busy(m) | Failure::Other(m) => m,
        }
    }
}

pub(crate) struct SetupThread {
    cfg: DatapathConfig,
    prog: XdpProgram,
    polls: Vec<PollLink>,
    msgs: mpsc::Receiver<SetupMsg>,
    ports: HashMap<Slot, PortRecord>,
    attached: Arc<Mutex<HashMap<Slot, Attachment>>>,
    /// Raised after a re-attach of our own (see `follow_tap_queues`).
    reattached: Arc<std::sync::atomic::AtomicBool>,
    next_instance: u32,
    /// Messages that arrived while an attach was waiting on the kernel.
    deferred: VecDeque<SetupMsg>,
    stop: bool,
    /// Sockets a predecessor handed over, by ifindex, until their port is
    /// attached again (adopted) or found gone.
    inherited: HashMap<u32, super::InheritedPort>,
    /// Handed over to a successor: touch nothing any more.
    frozen: bool,
}

impl SetupThread {
    pub(crate) fn new(
        cfg: DatapathConfig,
        prog: XdpProgram,
        polls: Vec<PollLink>,
        msgs: mpsc::Receiver<SetupMsg>,
        attached: Arc<Mutex<HashMap<Slot, Attachment>>>,
        reattached: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        SetupThread {
            cfg,
            prog,
            polls,
            msgs,
            reattached,
            ports: HashMap::new(),
            attached,
            next_instance: 1,
            deferred: VecDeque::new(),
            stop: false,
            inherited: HashMap::new(),
            frozen: false,
        }
    }

    /// Takes the sockets a predecessor handed over; each is adopted when
    /// its port is attached again.
    pub(crate) fn inherit(&mut self, ports: Vec<super::InheritedPort>) {
        for p in ports {
            for q in &p.queues {
                self.next_instance = self.next_instance.max(q.instance.saturating_add(1));
            }
            self.inherited.insert(p.ifindex, p);
        }
    }

    pub(crate) fn run(&mut self) {
        let mut last_check = Instant::now();
        while !self.stop {
            let msg = match self.deferred.pop_front() {
                Some(m) => Some(m),
                None => match self.msgs.recv_timeout(NETDEV_CHECK) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Some(m) = msg {
                self.handle(m);
            }
            if last_check.elapsed() >= NETDEV_CHECK && !self.frozen {
                last_check = Instant::now();
                self.check_netdevs();
            }
        }
        if self.frozen {
            // The kernel objects are a successor's now: detach nothing.
            for p in &self.polls {
                p.send(PollCmd::Stop);
            }
            return;
        }
        let slots: Vec<Slot> = self.ports.keys().copied().collect();
        let mut expected: usize = slots
            .iter()
            .filter_map(|s| self.ports.get(s))
            .map(|p| p.sockets.len())
            .sum();
        for s in slots {
            self.detach(s);
        }
        for p in &self.polls {
            p.send(PollCmd::Stop);
        }
        // Close what the poll threads hand back while they stop (each
        // socket of a detached port comes back once).
        while expected > 0 {
            match self.msgs.recv_timeout(Duration::from_millis(500)) {
                Ok(SetupMsg::Returned { sock, .. }) => {
                    drop(sock);
                    expected -= 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    fn handle(&mut self, m: SetupMsg) {
        if self.frozen {
            match m {
                SetupMsg::Attach { reply, .. } => {
                    let _ = reply.send(Err("switchd is handing over to a new process".into()));
                }
                SetupMsg::Thaw => self.thaw(),
                SetupMsg::Stop => self.stop = true,
                SetupMsg::Freeze { reply } => {
                    let _ = reply.send(Err("already frozen".into()));
                }
                // Sockets handed back are closed; the rest waits for a thaw.
                SetupMsg::Returned { sock, .. } => drop(sock),
                m => self.deferred.push_back(m),
            }
            return;
        }
        match m {
            SetupMsg::Freeze { reply } => {
                let r = self.freeze();
                let _ = reply.send(r);
            }
            SetupMsg::Thaw => {}
            SetupMsg::ForgetInherited => self.forget_inherited(),
            SetupMsg::Attach { slot, nic, reply } => {
                let r = self.attach_retrying(slot, &nic);
                if let Err(e) = &r {
                    log::warn!("attach {} as slot {slot}: {e}", nic.location());
                }
                let _ = reply.send(r);
            }
            SetupMsg::Detach { slot } => {
                // The port is deleted (a NIC that vanished keeps its count).
                self.detach(slot);
                self.prog.forget_slot(slot);
            }
            SetupMsg::Returned {
                thread,
                instance,
                sock,
            } => {
                // Closing waits for the kernel to stop using the socket's
                // frames; after that the poll thread may reuse them.
                drop(sock);
                if let Some(p) = self.polls.get(thread) {
                    p.send(PollCmd::Reclaim { instance });
                }
            }
            SetupMsg::Gone { slot } => {
                if self.ports.contains_key(&slot) {
                    log::warn!("slot {slot}: socket error; detaching");
                    self.detach(slot);
                }
            }
            SetupMsg::Stop => self.stop = true,
        }
    }

    /// Handles the messages that are waiting, except new attaches (kept for
    /// later): a socket handed back may be the one holding the queue.
    fn drain_returns(&mut self) {
        while let Ok(m) = self.msgs.try_recv() {
            match m {
                m @ SetupMsg::Returned { .. } => self.handle(m),
                m => self.deferred.push_back(m),
            }
        }
    }

    /// Freezes every poll thread and gathers what a successor needs: the
    /// program, each thread's UMEM and chunk owners, and each port's
    /// sockets. Sockets handed back before the freeze are closed first,
    /// so that their chunks travel as free.
    fn freeze(&mut self) -> Result<super::DatapathExport, String> {
        let mut answers = Vec::new();
        for (t, p) in self.polls.iter().enumerate() {
            let (reply, answer) = mpsc::sync_channel(1);
            p.send(PollCmd::Freeze { reply });
            answers.push((t, answer));
        }
        let mut threads: Vec<PollExport> = Vec::new();
        let mut failure = None;
        for (t, a) in answers {
            match a.recv_timeout(POLL_ANSWER) {
                Ok(Ok(e)) => threads.push(e),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(format!("poll thread {t} did not freeze"));
                }
            }
        }
        if let Some(e) = failure {
            for p in &self.polls {
                p.send(PollCmd::Thaw);
            }
            return Err(e);
        }
        // Close the sockets the poll threads handed back (they sent them
        // before answering): their chunks are free for the successor.
        let mut closed = Vec::new();
        while let Ok(m) = self.msgs.try_recv() {
            match m {
                SetupMsg::Returned {
                    thread,
                    instance,
                    sock,
                } => {
                    drop(sock);
                    closed.push((thread, instance));
                }
                m => self.deferred.push_back(m),
            }
        }
        for (t, e) in threads.iter_mut().enumerate() {
            let done: Vec<u32> = closed
                .iter()
                .filter(|(th, _)| *th == t)
                .map(|(_, i)| *i)
                .collect();
            for i in e.closing.iter().filter(|i| !done.contains(i)) {
                log::warn!("poll thread {t}: socket {i} was not closed before the handover; its frames stay unused");
            }
            for o in e.owner.iter_mut() {
                if done.contains(o) {
                    *o = OWNER_FREE;
                }
            }
        }
        let prog = self
            .prog
            .export()
            .map_err(|e| format!("duplicating BPF fds: {e}"))?;
        let mut ports = Vec::new();
        for (slot, p) in &self.ports {
            let mut queues = Vec::new();
            for (t, e) in threads.iter_mut().enumerate() {
                if let Some(i) = e.ports.iter().position(|x| x.slot == *slot) {
                    let x = e.ports.swap_remove(i);
                    queues.push(super::InheritedQueue {
                        thread: t,
                        instance: x.instance,
                        filled: x.filled,
                        fd: x.fd,
                    });
                }
            }
            ports.push(super::InheritedPort {
                slot: *slot,
                ifindex: p.ifindex,
                ifname: p.ifname.clone(),
                netns: p.netns.clone(),
                queues,
            });
        }
        self.frozen = true;
        Ok(super::DatapathExport {
            prog,
            threads,
            ports,
        })
    }

    fn thaw(&mut self) {
        self.frozen = false;
        for p in &self.polls {
            p.send(PollCmd::Thaw);
        }
        log::info!("handover abandoned; the data path is ours again");
    }

    /// Closes the handed-over sockets whose port did not come back (its
    /// NIC is gone): the poll threads get their chunks back, the program
    /// stops pointing at them.
    fn forget_inherited(&mut self) {
        for (ifindex, p) in std::mem::take(&mut self.inherited) {
            let served = self.ports.values().any(|r| r.ifindex == ifindex);
            if !served {
                if !self.ports.contains_key(&p.slot) {
                    self.prog.unbind(ifindex, p.slot, p.queues.len() as u32);
                } else {
                    self.prog.unbind_ifindex(ifindex);
                }
                self.prog.detach(ifindex);
            }
            for q in p.queues {
                drop(q.fd);
                if let Some(l) = self.polls.get(q.thread) {
                    l.send(PollCmd::Reclaim {
                        instance: q.instance,
                    });
                }
            }
            log::info!(
                "{} (slot {}) was handed over but did not come back; its sockets are closed",
                p.ifname,
                p.slot
            );
        }
    }

    /// The sockets a predecessor handed over for this netdev, mapped and
    /// ready to serve, if they are its queues 0..`queues`; otherwise (the
    /// netdev changed) they are closed and new ones are made.
    fn adopt(
        &mut self,
        ifindex: u32,
        ifname: &str,
        netns: Option<&str>,
        queues: u32,
    ) -> Option<Vec<(usize, u32, XskSocket, u32)>> {
        let p = self.inherited.remove(&ifindex)?;
        let fits = p.ifname == ifname
            && p.netns.as_deref() == netns
            && p.queues.len() as u32 == queues
            && p.queues.iter().enumerate().all(|(i, q)| q.thread == i);
        let mut out = Vec::new();
        let mut failed = !fits;
        for q in p.queues {
            let (thread, instance, filled) = (q.thread, q.instance, q.filled);
            if failed {
                drop(q);
            } else {
                match XskSocket::adopt(q.fd, RingSizes::default()) {
                    Ok(sock) => {
                        out.push((thread, instance, sock, filled));
                        continue;
                    }
                    Err(e) => {
                        log::warn!("{ifname}: adopting the socket of queue {thread}: {e}");
                        failed = true;
                    }
                }
            }
            if let Some(l) = self.polls.get(thread) {
                l.send(PollCmd::Reclaim { instance });
            }
        }
        if failed {
            // Closing what was mapped frees the queues for new sockets.
            for (t, instance, sock, _) in out {
                drop(sock);
                self.polls[t].send(PollCmd::Reclaim { instance });
            }
            log::info!(
                "{ifname}: the sockets handed over do not fit the netdev now; making new ones"
            );
            return None;
        }
        log::debug!("{ifname}: adopting {} socket(s) handed over", out.len());
        Some(out)
    }

    fn attach_retrying(&mut self, slot: Slot, nic: &Nic) -> Result<Attachment, String> {
        let deadline = Instant::now() + BUSY_RETRY;
        loop {
            match self.attach(slot, nic) {
                Ok(a) => return Ok(a),
                Err(Failure::Busy(m)) if Instant::now() < deadline => {
                    log::debug!("attach {}: {m}; retrying", nic.location());
                    self.drain_returns();
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(f) => return Err(f.message()),
            }
        }
    }

    fn instance(&mut self) -> u32 {
        let i = self.next_instance;
        // Never the poll threads' FREE/HELD markers, never 0.
        self.next_instance = if i >= u32::MAX - 16 { 1 } else { i + 1 };
        i
    }

    /// Live sockets of poll thread `t` whose UMEM registration a new
    /// socket may share, highest slot first (a fixed order).
    fn share_fds(&self, t: usize) -> Vec<RawFd> {
        let mut slots: Vec<&Slot> = self.ports.keys().collect();
        slots.sort_by(|a, b| b.cmp(a));
        slots
            .into_iter()
            .filter_map(|s| self.ports.get(s))
            .flat_map(|p| p.sockets.iter())
            .filter(|(thread, _)| *thread == t)
            .map(|(_, fd)| *fd)
            .collect()
    }

    /// A socket on thread `t`'s UMEM. It shares the registration of a live
    /// socket of that thread; a socket whose netdev was just deleted (its
    /// port not yet detached) is unbound by the kernel and refuses sharing
    /// (`NotConnected`), so the next one is tried, and with none left the socket
    /// registers the UMEM itself.
    fn umem_socket(&self, t: usize, ifindex: u32, queue: u32) -> std::io::Result<XskSocket> {
        let umem = self.polls[t].umem;
        let new = |share| XskSocket::new(umem, ifindex, queue, share, RingSizes::default(), true);
        for fd in self.share_fds(t) {
            match new(Some(fd)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
                    log::info!(
                        "poll thread {t}: the socket whose UMEM a new socket would share \
                         lost its netdev; trying another"
                    );
                }
                r => return r,
            }
        }
        new(None)
    }

    fn attach(&mut self, slot: Slot, nic: &Nic) -> Result<Attachment, Failure> {
        if let Some(p) = self.ports.get(&slot) {
            if p.ifname == nic.ifname && p.netns == nic.netns {
                return Ok(p.attachment);
            }
            self.detach(slot);
        }
        let Some(path) = &nic.netns else {
            return self.attach_here(slot, nic);
        };
        // A VM's tap in its pod's namespace: the socket (which belongs to
        // the namespace it is made in) and the XDP link are made from a
        // thread inside it.
        let ns = NetNs::open(Path::new(path))
            .map_err(|e| Failure::Other(format!("network namespace {path}: {e}")))?;
        ns.run(|| self.attach_here(slot, nic))
            .map_err(|e| Failure::Other(format!("entering {path}: {e}")))?
    }

    /// Attaches the NIC, which is in the calling thread's network namespace.
    fn attach_here(&mut self, slot: Slot, nic: &Nic) -> Result<Attachment, Failure> {
        let ifname = nic.ifname.as_str();
        let other = |e: netdev::NetdevError| Failure::Other(e.to_string());
        let ifindex = netdev::ifindex(ifname).map_err(other)?;
        // The XDP program finds a port by ifindex. Indexes are per
        // namespace: a tap moved in from the node's namespace keeps the
        // node-wide unique index it was born with; one that did not is
        // refused here rather than mixed up with another port.
        if let Some((s, p)) = self.ports.iter().find(|(_, p)| p.ifindex == ifindex) {
            return Err(Failure::Other(format!(
                "{ifname} has ifindex {ifindex}, which slot {s} ({}) has too; \
                 create the tap in switchd's namespace and move it (the CNI plugin does)",
                p.ifname
            )));
        }
        let mtu = netdev::mtu(ifname).map_err(other)?;
        let threads = self.polls.len() as u32;
        let queues = netdev::fit_queues(ifname, threads).map_err(other)?;
        // Queue q is served by thread q.
        let mut made = Vec::new();
        if let Some(adopted) =
            self.adopt(ifindex, ifname, nic.netns.as_deref(), queues.min(threads))
        {
            made = adopted;
        }
        for q in made.len() as u32..queues.min(threads) {
            let t = q as usize;
            let sock = self.umem_socket(t, ifindex, q).map_err(|e| {
                let m = format!("AF_XDP socket on {ifname} queue {q}: {e}");
                if e.kind() == std::io::ErrorKind::ResourceBusy {
                    Failure::Busy(m)
                } else {
                    Failure::Other(m)
                }
            })?;
            let instance = self.instance();
            made.push((t, instance, sock, 0));
        }
        // Hand the sockets to their poll threads; each fills its ring.
        let mut sockets = Vec::new();
        let mut fds = Vec::new();
        let mut failure = None;
        for (t, instance, sock, filled) in made {
            let fd = sock.fd();
            let (reply, answer) = mpsc::sync_channel(1);
            self.polls[t].send(PollCmd::Add {
                port: Box::new(NewPort {
                    slot,
                    instance,
                    ifname: ifname.to_string(),
                    mtu,
                    sock,
                    filled,
                }),
                reply,
            });
            match answer.recv_timeout(POLL_ANSWER) {
                Ok(Ok(())) => {
                    sockets.push((t, fd));
                    fds.push(fd);
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(format!("poll thread {t} did not take the socket in"));
                }
            }
        }
        let bound = match failure {
            Some(e) => Err(e),
            None => self
                .prog
                .bind(ifindex, slot, &fds)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    // An overlay port's veth gets its frames redirected by
                    // TC, which generic XDP passes over (skb_is_redirected):
                    // native, whatever --xdp-mode says, or no port.
                    let xdp = if nic.kind == NicKind::Vxlan {
                        XdpChoice::NativeOnly
                    } else if self.cfg.native_xdp {
                        XdpChoice::PreferNative
                    } else {
                        XdpChoice::Generic
                    };
                    self.prog.attach(ifindex, xdp).map_err(|e| e.to_string())
                }),
        };
        let mode = match bound {
            Ok(mode) => mode,
            Err(e) => {
                self.prog.unbind(ifindex, slot, queues);
                for (t, _) in &sockets {
                    self.polls[*t].send(PollCmd::Remove { slot });
                }
                return Err(Failure::Other(e));
            }
        };
        let attachment = Attachment {
            ifindex,
            mode,
            queues: sockets.len() as u32,
            mtu,
        };
        self.ports.insert(
            slot,
            PortRecord {
                ifname: ifname.to_string(),
                netns: nic.netns.clone(),
                tap: nic.kind == NicKind::Tap,
                ifindex,
                sockets,
                attachment,
            },
        );
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, attachment);
        log::info!(
            "attached {ifname} (ifindex {ifindex}, MTU {mtu}) as slot {slot}: {} queue(s), {} XDP",
            attachment.queues,
            mode.as_str()
        );
        Ok(attachment)
    }

    /// Stops frames reaching the port's sockets, then asks the poll
    /// threads to hand the sockets back for closing.
    fn detach(&mut self, slot: Slot) {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        let Some(p) = self.ports.remove(&slot) else {
            return;
        };
        self.prog.unbind(p.ifindex, slot, p.sockets.len() as u32);
        self.prog.detach(p.ifindex);
        for (t, _) in &p.sockets {
            self.polls[*t].send(PollCmd::Remove { slot });
        }
        log::info!("detached slot {slot} ({})", p.ifname);
    }

    /// Detaches ports whose netdev vanished (the pod was deleted under
    /// us) or was replaced by another of the same name, and follows the
    /// queues of multi-queue taps.
    fn check_netdevs(&mut self) {
        let threads = self.polls.len() as u32;
        let mut gone = Vec::new();
        let mut grown = Vec::new();
        for (s, p) in &self.ports {
            // A multi-queue tap gets its queues when the VMM opens them,
            // after the port was attached; a queue without a socket loses
            // its frames (counted `no-socket`).
            let follow = p.tap && p.attachment.queues < threads;
            match p.probe(follow) {
                (false, _) => gone.push(*s),
                (true, Some(n)) if n.min(threads) > p.attachment.queues => {
                    grown.push((*s, p.as_nic(), p.attachment.queues, n.min(threads)))
                }
                _ => {}
            }
        }
        for s in gone {
            log::warn!("slot {s}: its netdev is gone; detaching");
            self.detach(s);
        }
        self.follow_tap_queues(grown);
    }

    /// Attaches taps whose VMM opened more queues again, with a socket
    /// per queue (up to one per poll thread).
    fn follow_tap_queues(&mut self, grown: Vec<(Slot, Nic, u32, u32)>) {
        for (slot, nic, had, now) in grown {
            log::info!(
                "slot {slot} ({}): the tap now has {now} queues (had {had}); attaching again",
                nic.location()
            );
            self.detach(slot);
            if let Err(e) = self.attach_retrying(slot, &nic) {
                log::warn!("slot {slot}: attaching {} again: {e}", nic.location());
            }
            // The snapshot's served queues (which thread sends to the
            // port) come from the attachment: the control plane republishes.
            self.reattached
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}
