//! Hand-off between poll threads.
//!
//! Each poll thread has its own UMEM, so a frame received on thread *a*
//! cannot be named in a TX ring of thread *b*. Two cases need *b* anyway:
//! - the egress port has fewer queues than there are threads (a tap, a
//!   single-queue NIC): only threads `0..served` have a socket on it;
//! - a port's rate limiters live on one thread, its home (so a limit holds
//!   however many queues its traffic spreads over).
//!
//! Thread *a* then pushes a `Handoff` naming its own chunks onto the
//! bounded lock-free queue (a → b); *b* copies the bytes into its own
//! chunks (one copy: the kernel's copy-mode TX copies again anyway) and
//! pushes the chunk addresses back on the return queue (b → a), which *a*
//! frees. A queue per ordered pair keeps each flow in order: a flow enters
//! on one queue, so on one thread, and crosses on one queue.
//!
//! Why not a TX lock on the single-queue port: the TX ring would still need
//! descriptors from the socket's own UMEM, so a copy is needed either way;
//! the hand-off keeps every ring single-threaded and lock-free.

use super::xsk::{Desc, Mapping};
use crate::pipeline::fdb::Slot;
use crate::pipeline::Limited;
use crossbeam_queue::ArrayQueue;
use podswitch_shared::model::MacAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

/// Most fragments of a frame that crosses threads (9000 bytes of MTU plus
/// headers take 3 chunks of 3840 bytes).
pub const MAX_FRAGS: usize = 4;
/// Frames in flight between two threads, each way.
const DEPTH: usize = 4096;

/// What the receiving thread does with a handed-over frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Send it on `slot` (the tag edit is done); admit it to the port's
    /// ingress-rate limiter first when `limit` is set.
    Transmit { limit: Option<Limited> },
    /// Process it as received on `slot` (its shaper or storm limit lives
    /// on this thread).
    Process,
    /// A mirror copy for `slot` (a mirroring destination): send it after
    /// the port's own frames, or drop it (counted `mirror`) if it does
    /// not fit.
    Mirror,
}

/// A MAC one poll thread learned, for the others' tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learn {
    /// `SwitchView::id`.
    pub switch: u32,
    pub vlan: u16,
    pub mac: MacAddr,
    pub slot: Slot,
}

/// One frame crossing threads, naming the sender's chunks.
#[derive(Debug, Clone, Copy)]
pub struct Handoff {
    pub kind: Kind,
    pub slot: Slot,
    pub nfrags: u8,
    pub frags: [Desc; MAX_FRAGS],
}

impl Handoff {
    pub fn frags(&self) -> &[Desc] {
        &self.frags[..self.nfrags as usize]
    }
}

/// The queues between every ordered pair of poll threads.
pub struct Mesh {
    n: usize,
    /// [src * n + dst]: frames from src for dst.
    frames: Vec<ArrayQueue<Handoff>>,
    /// [src * n + dst]: chunk addresses dst is done with, for src to free.
    returns: Vec<ArrayQueue<u64>>,
    /// [src * n + dst]: MACs src learned, for dst's tables.
    learns: Vec<ArrayQueue<Learn>>,
    umems: Vec<Arc<Mapping>>,
    wakes: Vec<Arc<OwnedFd>>,
    /// Set by a thread about to sleep in poll(), so senders know to wake it.
    sleeping: Vec<AtomicBool>,
}

impl Mesh {
    pub fn new(umems: Vec<Arc<Mapping>>, wakes: Vec<Arc<OwnedFd>>) -> Mesh {
        let n = umems.len();
        // One thread needs no queues.
        let pairs = if n > 1 { n * n } else { 0 };
        Mesh {
            n,
            frames: (0..pairs).map(|_| ArrayQueue::new(DEPTH)).collect(),
            returns: (0..pairs)
                .map(|_| ArrayQueue::new(DEPTH * MAX_FRAGS))
                .collect(),
            learns: (0..pairs).map(|_| ArrayQueue::new(DEPTH)).collect(),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            umems,
            wakes,
        }
    }

    /// Whether anything waits for thread `t`: frames, or chunks to free.
    /// (Learned MACs wait for its next round: they need no wake-up.)
    pub fn pending_for(&self, t: usize) -> bool {
        (0..self.n).any(|o| {
            self.frames
                .get(o * self.n + t)
                .is_some_and(|q| !q.is_empty())
                || self
                    .returns
                    .get(t * self.n + o)
                    .is_some_and(|q| !q.is_empty())
        })
    }

    /// Tells every other thread that `src` learned `l`. A full queue drops
    /// it: that thread floods to the MAC until it learns it itself.
    pub fn announce(&self, src: usize, l: Learn) {
        for dst in 0..self.n {
            if dst != src {
                if let Some(q) = self.learns.get(src * self.n + dst) {
                    let _ = q.push(l);
                }
            }
        }
    }

    /// The next MAC thread `src` learned, for `dst`.
    pub fn learned(&self, dst: usize, src: usize) -> Option<Learn> {
        self.learns.get(src * self.n + dst)?.pop()
    }

    /// Thread `t` is about to sleep; returns false (stay awake) if
    /// something is already waiting for it. Paired with `notify`, no
    /// wake-up is lost: either the sender sees the flag or the sleeper
    /// sees the item.
    pub fn about_to_sleep(&self, t: usize) -> bool {
        let Some(f) = self.sleeping.get(t) else {
            return true;
        };
        f.store(true, SeqCst);
        if self.pending_for(t) {
            f.store(false, SeqCst);
            return false;
        }
        true
    }

    pub fn awake(&self, t: usize) {
        if let Some(f) = self.sleeping.get(t) {
            f.store(false, SeqCst);
        }
    }

    /// Wakes thread `t` if it sleeps (call after pushing to it).
    pub fn notify(&self, t: usize) {
        if self.sleeping.get(t).is_some_and(|f| f.swap(false, SeqCst)) {
            self.wake(t);
        }
    }

    pub fn threads(&self) -> usize {
        self.n
    }

    /// Queues `h` from `src` for `dst`; gives it back if the queue is full.
    pub fn push(&self, src: usize, dst: usize, h: Handoff) -> Result<(), Handoff> {
        match self.frames.get(src * self.n + dst) {
            Some(q) => q.push(h),
            None => Err(h),
        }
    }

    /// The next frame another thread handed to `dst`, with its sender.
    pub fn pop_for(&self, dst: usize, src: usize) -> Option<Handoff> {
        self.frames.get(src * self.n + dst)?.pop()
    }

    /// `dst` is done with chunk `addr` of `src`.
    pub fn give_back(&self, src: usize, dst: usize, addr: u64) {
        if let Some(q) = self.returns.get(src * self.n + dst) {
            // Cannot overflow: at most DEPTH frames of MAX_FRAGS chunks are
            // out at once, and the queue holds that many.
            let _ = q.push(addr);
        }
    }

    /// A chunk address of `src`'s that `dst` gave back.
    pub fn returned(&self, src: usize, dst: usize) -> Option<u64> {
        self.returns.get(src * self.n + dst)?.pop()
    }

    /// The bytes of a handed-over fragment, in the sender's UMEM.
    ///
    /// The sender does not touch a chunk between `push` and getting it back,
    /// and no kernel ring holds it, so reading it here races nothing.
    pub fn bytes(&self, src: usize, d: &Desc) -> &[u8] {
        let Some(u) = self.umems.get(src) else {
            return &[];
        };
        let start = (d.addr as usize).min(u.len());
        let len = (d.len as usize).min(u.len() - start);
        // SAFETY: [start, start + len) lies inside src's UMEM (clamped
        // above), kept mapped by our Arc<Mapping>, and by the hand-off
        // protocol nobody writes these bytes until the receiver gives the
        // chunk back.
        unsafe { std::slice::from_raw_parts(u.base().add(start), len) }
    }

    /// Wakes thread `t` if it sleeps in poll().
    pub fn wake(&self, t: usize) {
        if let Some(w) = self.wakes.get(t) {
            super::setup::kick(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(slot: Slot) -> Handoff {
        Handoff {
            kind: Kind::Process,
            slot,
            nfrags: 1,
            frags: [Desc::default(); MAX_FRAGS],
        }
    }

    #[test]
    fn pairs_are_separate_and_ordered() {
        let m = Mesh::new(Vec::new(), Vec::new());
        let m = Mesh { n: 3, ..m };
        let m = Mesh {
            frames: (0..9).map(|_| ArrayQueue::new(4)).collect(),
            returns: (0..9).map(|_| ArrayQueue::new(4)).collect(),
            learns: (0..9).map(|_| ArrayQueue::new(4)).collect(),
            sleeping: (0..3).map(|_| AtomicBool::new(false)).collect(),
            ..m
        };
        assert!(m.about_to_sleep(2));
        m.awake(2);
        m.push(0, 2, h(1)).unwrap();
        m.push(0, 2, h(2)).unwrap();
        m.push(1, 2, h(3)).unwrap();
        assert!(!m.about_to_sleep(2), "a waiting frame keeps it awake");
        assert_eq!(m.pop_for(2, 0).map(|h| h.slot), Some(1));
        assert_eq!(m.pop_for(2, 0).map(|h| h.slot), Some(2));
        assert_eq!(m.pop_for(2, 0).map(|h| h.slot), None);
        assert_eq!(m.pop_for(2, 1).map(|h| h.slot), Some(3));
        assert!(m.pop_for(1, 0).is_none());
        m.give_back(0, 2, 4096);
        assert_eq!(m.returned(0, 2), Some(4096));
        assert_eq!(m.returned(0, 1), None);
        let l = Learn {
            switch: 1,
            vlan: 10,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            slot: 4,
        };
        m.announce(1, l);
        assert_eq!(m.learned(0, 1), Some(l));
        assert_eq!(m.learned(2, 1), Some(l));
        assert_eq!(m.learned(1, 1), None, "not to itself");
    }

    #[test]
    fn one_thread_has_no_queues() {
        let u = super::super::xsk::Umem::new(16).unwrap();
        let m = Mesh::new(vec![u.mapping()], Vec::new());
        assert!(m.push(0, 0, h(1)).is_err());
    }
}
