//! A live capture's tap: the bounded ring of frame copies that poll
//! threads fill and the control plane drains into a pcap stream.
//!
//! Who writes what: the control plane creates a tap and publishes it on
//! the port's snapshot view (`PortView::captures`); the poll threads
//! serving the port offer it frames (`offer`, lock-free, a bounded
//! `ArrayQueue`, several threads at once); the capture's stream takes them
//! (`take`) and hands the buffers back for reuse (`recycle`). A full ring
//! drops the frame and counts it: a slow reader never holds back the
//! poll threads. Nothing here runs while nobody captures: the poll thread
//! only reads an empty `Option` on the port's view.
//!
//! Bounded in memory: at most `RING_FRAMES` frames and `RING_BYTES` bytes
//! are queued per capture, and as many spare buffers are kept.

use crate::wire::pcap::{CaptureRequest, Dir, Direction};
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Most frames waiting in one capture's ring.
pub const RING_FRAMES: usize = 2048;
/// Most bytes of frames waiting in one capture's ring.
pub const RING_BYTES: usize = 4 << 20;

/// One captured frame.
#[derive(Debug)]
pub struct Captured {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame's length on the wire (`data` holds at most the snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct CaptureTap {
    pub direction: Direction,
    pub snaplen: u32,
    /// Frames to take in all (None: until the reader goes away).
    pub count: Option<u64>,
    ring: ArrayQueue<Captured>,
    spare: ArrayQueue<Vec<u8>>,
    queued_bytes: AtomicUsize,
    /// Frames taken into the ring.
    frames: AtomicU64,
    /// Frames lost: the ring was full (the reader is slower than the port).
    dropped: AtomicU64,
    /// Set when the capture must end: its port was deleted, or its
    /// stream went away (the poll threads stop offering).
    closed: AtomicBool,
}

impl CaptureTap {
    pub fn new(r: &CaptureRequest) -> CaptureTap {
        CaptureTap {
            direction: r.direction,
            snaplen: r.snaplen,
            count: r.count,
            ring: ArrayQueue::new(RING_FRAMES),
            spare: ArrayQueue::new(RING_FRAMES),
            queued_bytes: AtomicUsize::new(0),
            frames: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether a frame going `dir` is for this capture (a cheap check
    /// before the caller gathers the frame's bytes).
    #[inline]
    pub fn wants(&self, dir: Dir) -> bool {
        self.direction.wants(dir)
            && !self.closed.load(Relaxed)
            && self.count.is_none_or(|c| self.frames.load(Relaxed) < c)
    }

    /// Offers a frame made of `frags` (its fragments in order, `len`
    /// bytes in all) seen at `ts_ns`. Copies at most the snap length;
    /// counts it as dropped if the ring is full.
    pub fn offer<'a>(
        &self,
        dir: Dir,
        ts_ns: u64,
        len: usize,
        frags: impl Iterator<Item = &'a [u8]>,
    ) {
        if !self.wants(dir) {
            return;
        }
        let caplen = len.min(self.snaplen as usize);
        if self.ring.is_full() || self.queued_bytes.load(Relaxed) + caplen > RING_BYTES {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        for f in frags {
            let room = caplen - data.len();
            if room == 0 {
                break;
            }
            data.extend_from_slice(&f[..f.len().min(room)]);
        }
        let n = data.len();
        self.queued_bytes.fetch_add(n, Relaxed);
        match self.ring.push(Captured {
            ts_ns,
            orig_len: len as u32,
            data,
        }) {
            Ok(()) => {
                self.frames.fetch_add(1, Relaxed);
            }
            Err(c) => {
                // Another thread filled the last place meanwhile.
                self.queued_bytes.fetch_sub(n, Relaxed);
                self.dropped.fetch_add(1, Relaxed);
                let _ = self.spare.push(c.data);
            }
        }
    }

    /// The oldest frame waiting, if any.
    pub fn take(&self) -> Option<Captured> {
        let c = self.ring.pop()?;
        self.queued_bytes.fetch_sub(c.data.len(), Relaxed);
        Some(c)
    }

    /// Gives a drained frame's buffer back for the poll threads to reuse.
    pub fn recycle(&self, buf: Vec<u8>) {
        let _ = self.spare.push(buf);
    }

    /// Ends the capture: nothing more is offered; the stream ends once it
    /// has drained what is queued.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    pub fn frames(&self) -> u64 {
        self.frames.load(Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(direction: Direction, count: Option<u64>, snaplen: u32) -> CaptureTap {
        CaptureTap::new(&CaptureRequest {
            direction,
            count,
            snaplen,
        })
    }

    #[test]
    fn keeps_the_snap_length_across_fragments() {
        let t = tap(Direction::Both, None, 20);
        let a = [1u8; 12];
        let b = [2u8; 30];
        t.offer(Dir::In, 7, 42, [&a[..], &b[..]].into_iter());
        let c = t.take().unwrap();
        assert_eq!((c.ts_ns, c.orig_len, c.data.len()), (7, 42, 20));
        assert_eq!(&c.data[..12], &a);
        assert_eq!(&c.data[12..], &[2u8; 8]);
        assert!(t.take().is_none());
        assert_eq!((t.frames(), t.dropped()), (1, 0));
    }

    #[test]
    fn filters_by_direction_and_stops_at_the_count() {
        let t = tap(Direction::Out, Some(2), 100);
        let f = [0u8; 60];
        t.offer(Dir::In, 1, 60, std::iter::once(&f[..]));
        assert_eq!(t.frames(), 0, "in is not out");
        for i in 0..5 {
            t.offer(Dir::Out, i, 60, std::iter::once(&f[..]));
        }
        assert_eq!((t.frames(), t.dropped()), (2, 0), "past the count: ignored");
        assert!(!t.wants(Dir::Out));
    }

    #[test]
    fn a_full_ring_drops_and_counts_and_buffers_are_reused() {
        let t = tap(Direction::Both, None, 64);
        let f = [0u8; 60];
        for i in 0..RING_FRAMES as u64 + 3 {
            t.offer(Dir::In, i, 60, std::iter::once(&f[..]));
        }
        assert_eq!(t.frames(), RING_FRAMES as u64);
        assert_eq!(t.dropped(), 3);
        let c = t.take().unwrap();
        let ptr = c.data.as_ptr();
        t.recycle(c.data);
        t.offer(Dir::In, 9, 60, std::iter::once(&f[..]));
        assert_eq!(t.dropped(), 3, "room again after a take");
        // The recycled buffer went to the newest frame.
        let mut last = None;
        while let Some(c) = t.take() {
            last = Some(c);
        }
        assert_eq!(last.unwrap().data.as_ptr(), ptr);
    }

    #[test]
    fn closed_takes_nothing_more() {
        let t = tap(Direction::Both, None, 64);
        t.close();
        t.offer(Dir::In, 1, 60, std::iter::once(&[0u8; 60][..]));
        assert!(t.is_closed() && t.take().is_none());
        assert_eq!((t.frames(), t.dropped()), (0, 0));
    }
}
