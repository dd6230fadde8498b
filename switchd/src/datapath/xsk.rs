//! AF_XDP sockets and the one UMEM they share, on raw syscalls.
//!
//! Why not xsk-rs: it wraps libxdp, whose frame descriptors cannot be
//! re-addressed, so a VLAN push or pop would have to move the whole payload;
//! here a TX descriptor may point 4 bytes before or after the RX address
//! (the headroom is ours), so tag edits move 12 bytes. It also vendors and
//! compiles libxdp and libbpf in C; this file is the few hundred lines of
//! it that switchd needs.
//!
//! Every socket binds one queue of one netdev in copy mode and shares its
//! poll thread's UMEM, each with its own fill and completion ring (the
//! kernel requires that when sockets on different netdevs share a UMEM). A
//! frame is named by its byte address in the UMEM; forwarding moves the
//! address from one socket's RX ring to another's TX ring without copying
//! the frame.
//!
//! Multi-buffer (XDP_USE_SG): a frame longer than one chunk arrives as
//! several descriptors, all but the last flagged `XDP_PKT_CONTD`; RX and TX
//! here move whole frames only, never part of one.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const AF_XDP: i32 = 44;
const SOL_XDP: i32 = 283;
const XDP_MMAP_OFFSETS: i32 = 1;
const XDP_RX_RING: i32 = 2;
const XDP_TX_RING: i32 = 3;
const XDP_UMEM_REG: i32 = 4;
const XDP_UMEM_FILL_RING: i32 = 5;
const XDP_UMEM_COMPLETION_RING: i32 = 6;
const XDP_STATISTICS: i32 = 7;
/// Linux 6.16+: how many frames one copy-mode `sendto` may transmit.
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;
const XDP_SHARED_UMEM: u16 = 1;
const XDP_COPY: u16 = 2;
const XDP_USE_SG: u16 = 1 << 4;
/// Descriptor option: more fragments of this frame follow.
pub const XDP_PKT_CONTD: u32 = 1;
const XDP_PGOFF_RX_RING: i64 = 0;
const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

/// Size of one UMEM frame (chunk).
pub const FRAME_SIZE: u64 = 4096;
/// Where the kernel puts received data inside a chunk in copy mode
/// (XDP_PACKET_HEADROOM); we place copies at the same offset.
pub const RX_OFFSET: u64 = 256;
/// Bytes of one fragment: a chunk less the headroom.
pub const FRAG_SIZE: u64 = FRAME_SIZE - RX_OFFSET;

#[repr(C)]
#[derive(Default)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

/// One RX/TX ring entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// Kernel-side drop counters of one socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn setsockopt<T>(fd: RawFd, opt: i32, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live reference to a repr(C)/integer value of the size
    // we pass; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            val as *const T as *const c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(last_err("setsockopt(SOL_XDP)"))
    } else {
        Ok(())
    }
}

fn getsockopt<T: Default>(fd: RawFd, opt: i32) -> io::Result<T> {
    let mut val = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is writable for `len` bytes and `len` is a valid in/out
    // length; T is a plain repr(C) struct of integers.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            opt,
            &mut val as *mut T as *mut c_void,
            &mut len,
        )
    };
    if r < 0 {
        Err(last_err("getsockopt(SOL_XDP)"))
    } else {
        Ok(val)
    }
}

/// The packet buffer area: `frames` chunks of FRAME_SIZE bytes.
pub struct Umem {
    base: NonNull<u8>,
    len: usize,
    map: Arc<Mapping>,
    /// The memfd behind the mapping: a successor switchd maps the same
    /// pages (see handover.rs).
    memfd: OwnedFd,
}

// SAFETY: the mapping is plain memory; the poll thread that owns the Umem
// is the only one that writes it from userspace (other threads only read
// chunks handed to them, see mesh.rs).
unsafe impl Send for Umem {}

/// The UMEM's memory, unmapped when the last holder lets go: its poll
/// thread, or the hand-off mesh through which other poll threads read
/// chunks handed to them (so a thread that stops first cannot pull the
/// memory from under a reader).
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory; who may touch which chunk when is the hand-off
// protocol's business (mesh.rs), not this handle's.
unsafe impl Send for Mapping {}
// SAFETY: as above; the handle itself is immutable.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn base(&self) -> *const u8 {
        self.base.as_ptr()
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what Umem::new mapped, once, when no
        // holder is left; sockets that registered it pinned the pages in
        // the kernel, so this only removes our view.
        unsafe { libc::munmap(self.base.as_ptr() as *mut c_void, self.len) };
    }
}

/// Where a UMEM lives, for registering it from another thread (the setup
/// thread creates sockets; the poll thread owns the memory).
#[derive(Debug, Clone, Copy)]
pub struct UmemArea {
    addr: u64,
    len: u64,
}

impl UmemArea {
    fn reg(&self) -> UmemReg {
        UmemReg {
            addr: self.addr,
            len: self.len,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }
}

impl Umem {
    /// A UMEM of `frames` chunks in a fresh memfd (shared memory, so that
    /// a successor switchd can map the very pages the kernel pinned).
    pub fn new(frames: u32) -> io::Result<Umem> {
        let name = c"podswitch-umem";
        // SAFETY: memfd_create with a NUL-terminated name and valid flags;
        // the fd is owned right below.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(last_err("memfd_create"));
        }
        // SAFETY: `raw` is a fresh fd we own.
        let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = frames as usize * FRAME_SIZE as usize;
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(last_err("ftruncate UMEM memfd"));
        }
        Self::map_memfd(memfd, frames)
    }

    /// Maps a UMEM memfd received from a predecessor (`frames` chunks).
    pub fn from_memfd(memfd: OwnedFd, frames: u32) -> io::Result<Umem> {
        let mut st: libc::stat = {
            // SAFETY: stat is plain data; zero is a valid value.
            unsafe { std::mem::zeroed() }
        };
        // SAFETY: fstat writes into `st`, which is live and writable.
        if unsafe { libc::fstat(memfd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_err("fstat UMEM memfd"));
        }
        if st.st_size as u64 != frames as u64 * FRAME_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the UMEM handed over holds {} bytes, not {frames} frames",
                    st.st_size
                ),
            ));
        }
        Self::map_memfd(memfd, frames)
    }

    fn map_memfd(memfd: OwnedFd, frames: u32) -> io::Result<Umem> {
        let len = frames as usize * FRAME_SIZE as usize;
        // SAFETY: shared mapping of our memfd of at least `len` bytes, no
        // address hint; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                memfd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err("mmap UMEM"));
        }
        let base =
            NonNull::new(p as *mut u8).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Umem {
            base,
            len,
            map: Arc::new(Mapping { base, len }),
            memfd,
        })
    }

    /// The memfd behind the UMEM (for a handover).
    pub fn memfd(&self) -> RawFd {
        self.memfd.as_raw_fd()
    }

    /// A handle that keeps the memory mapped (for the hand-off mesh).
    pub fn mapping(&self) -> Arc<Mapping> {
        self.map.clone()
    }

    pub fn frames(&self) -> u32 {
        (self.len as u64 / FRAME_SIZE) as u32
    }

    /// The whole chunk that holds `addr`, and `addr`'s offset in it.
    pub fn chunk_mut(&mut self, addr: u64) -> (&mut [u8], usize) {
        let base = (addr & !(FRAME_SIZE - 1)) as usize;
        let base = base.min(self.len - FRAME_SIZE as usize);
        // SAFETY: base + FRAME_SIZE <= len (clamped above), the mapping lives
        // as long as self, and &mut self makes this the only userspace view.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(base), FRAME_SIZE as usize)
        };
        (chunk, (addr as usize - base).min(FRAME_SIZE as usize))
    }

    /// The `len` bytes at `addr` (clamped to the chunk that holds `addr`).
    pub fn frame(&self, addr: u64, len: usize) -> &[u8] {
        let (start, len) = self.span(addr, len);
        // SAFETY: span() keeps [start, start+len) inside one chunk of the
        // live mapping.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) }
    }

    fn span(&self, addr: u64, len: usize) -> (usize, usize) {
        let start = (addr as usize).min(self.len - 1);
        let chunk_end = (start & !(FRAME_SIZE as usize - 1)) + FRAME_SIZE as usize;
        (start, len.min(chunk_end - start))
    }

    /// Copies the frame at `from` into the chunk starting at `to_chunk`,
    /// at RX_OFFSET; returns the copy's address.
    pub fn copy_frame(&mut self, from: u64, len: usize, to_chunk: u64) -> u64 {
        let (src, len) = self.span(from, len);
        let dst = (to_chunk & !(FRAME_SIZE - 1)) + RX_OFFSET;
        let (dst_start, len) = self.span(dst, len);
        if src & !(FRAME_SIZE as usize - 1) != dst_start & !(FRAME_SIZE as usize - 1) {
            // SAFETY: both ranges lie inside the mapping (span) and in
            // different chunks, so they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.base.as_ptr().add(src),
                    self.base.as_ptr().add(dst_start),
                    len,
                )
            };
        }
        dst
    }

    /// Writes `bytes` (at most one fragment's worth) into the chunk
    /// `to_chunk` at RX_OFFSET; returns their address.
    pub fn write_frame(&mut self, to_chunk: u64, bytes: &[u8]) -> u64 {
        let dst = (to_chunk & !(FRAME_SIZE - 1)) + RX_OFFSET;
        let (start, len) = self.span(dst, bytes.len());
        // SAFETY: span() keeps [start, start+len) inside one chunk of the
        // live mapping; `bytes` is another thread's UMEM or ours, never
        // this chunk (a free chunk is in no one's hands).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr().add(start), len)
        };
        dst
    }

    pub fn area(&self) -> UmemArea {
        UmemArea {
            addr: self.base.as_ptr() as u64,
            len: self.len as u64,
        }
    }
}

/// A mapped single-producer/single-consumer ring shared with the kernel.
struct Ring<T: Copy> {
    map: NonNull<c_void>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    /// Our view of the other side's index, refreshed only when needed.
    cached_other: u32,
    /// Our own index (producer for fill/TX, consumer for RX/completion).
    local: u32,
}

impl<T: Copy> Ring<T> {
    fn map(
        fd: RawFd,
        off: &RingOffset,
        size: u32,
        pgoff: i64,
        producer_side: bool,
    ) -> io::Result<Self> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mapping the ring the kernel created for this socket at its
        // documented page offset; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err("mmap XDP ring"));
        }
        let b = p as *mut u8;
        // SAFETY: offsets come from XDP_MMAP_OFFSETS for this mapping.
        let (producer, consumer, descs) = unsafe {
            (
                b.add(off.producer as usize) as *const AtomicU32,
                b.add(off.consumer as usize) as *const AtomicU32,
                b.add(off.desc as usize) as *mut T,
            )
        };
        let mut r = Ring {
            map: NonNull::new(p).ok_or_else(|| io::Error::other("mmap returned null"))?,
            map_len,
            producer,
            consumer,
            descs,
            mask: size - 1,
            size,
            cached_other: 0,
            local: 0,
        };
        // SAFETY: producer/consumer point into the live mapping.
        unsafe {
            if producer_side {
                r.local = (*r.producer).load(Ordering::Relaxed);
                r.cached_other = (*r.consumer).load(Ordering::Acquire).wrapping_add(size);
            } else {
                r.local = (*r.consumer).load(Ordering::Relaxed);
                r.cached_other = (*r.producer).load(Ordering::Acquire);
            }
        }
        Ok(r)
    }

    // --- producer side (fill, TX): cached_other = consumer + size ---

    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_other.wrapping_sub(self.local);
        if free >= want {
            return free;
        }
        // SAFETY: `consumer` points into the live mapping.
        self.cached_other =
            unsafe { (*self.consumer).load(Ordering::Acquire) }.wrapping_add(self.size);
        self.cached_other.wrapping_sub(self.local)
    }

    fn produce(&mut self, items: &[T]) -> usize {
        let n = (self.free(items.len() as u32) as usize).min(items.len());
        for (i, item) in items[..n].iter().enumerate() {
            let idx = self.local.wrapping_add(i as u32) & self.mask;
            // SAFETY: idx <= mask < size, inside the mapped descriptor array;
            // entries between local and consumer+size belong to us.
            unsafe { self.descs.add(idx as usize).write_volatile(*item) };
        }
        self.local = self.local.wrapping_add(n as u32);
        // SAFETY: `producer` points into the live mapping; Release publishes
        // the descriptors written above.
        unsafe { (*self.producer).store(self.local, Ordering::Release) };
        n
    }

    /// Entries produced but not yet consumed by the kernel.
    fn in_flight(&mut self) -> u32 {
        // SAFETY: `consumer` points into the live mapping.
        let cons = unsafe { (*self.consumer).load(Ordering::Acquire) };
        self.local.wrapping_sub(cons)
    }

    // --- consumer side (RX, completion): cached_other = producer ---

    fn available(&mut self, want: u32) -> u32 {
        let avail = self.cached_other.wrapping_sub(self.local);
        if avail >= want {
            return avail;
        }
        // SAFETY: `producer` points into the live mapping.
        self.cached_other = unsafe { (*self.producer).load(Ordering::Acquire) };
        self.cached_other.wrapping_sub(self.local)
    }

    fn consume(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        self.consume_until(out, max, |_| true)
    }

    /// Takes up to `max` entries (more if needed to finish a group), and
    /// only up to the last entry for which `ends` is true, so that a group
    /// of entries (a multi-buffer frame) is never split.
    fn consume_until(&mut self, out: &mut Vec<T>, max: usize, ends: impl Fn(&T) -> bool) -> usize {
        let avail = self.available(max as u32) as usize;
        let start = out.len();
        let mut take = 0;
        for i in 0..avail {
            let idx = self.local.wrapping_add(i as u32) & self.mask;
            // SAFETY: idx < size; entries between our consumer and the
            // kernel's producer (Acquire-loaded) are complete.
            let item = unsafe { self.descs.add(idx as usize).read_volatile() };
            out.push(item);
            if ends(&item) {
                take = i + 1;
                if take >= max {
                    break;
                }
            }
        }
        out.truncate(start + take);
        self.local = self.local.wrapping_add(take as u32);
        // SAFETY: `consumer` points into the live mapping; Release hands the
        // slots back after we read them.
        unsafe { (*self.consumer).store(self.local, Ordering::Release) };
        take
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the ring mapping made in `map`.
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

/// Ring sizes of every socket (powers of two).
#[derive(Clone, Copy, Debug)]
pub struct RingSizes {
    pub rx: u32,
    pub tx: u32,
    pub fill: u32,
    pub comp: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            rx: 2048,
            tx: 2048,
            fill: 4096,
            comp: 2048,
        }
    }
}

type Rings = (Ring<Desc>, Ring<Desc>, Ring<u64>, Ring<u64>);

/// Maps a socket's RX, TX, fill and completion rings (sized `sizes`).
fn map_rings(raw: RawFd, sizes: RingSizes) -> io::Result<Rings> {
    let off: MmapOffsets = getsockopt(raw, XDP_MMAP_OFFSETS)?;
    Ok((
        Ring::map(raw, &off.rx, sizes.rx, XDP_PGOFF_RX_RING, false)?,
        Ring::map(raw, &off.tx, sizes.tx, XDP_PGOFF_TX_RING, true)?,
        Ring::map(raw, &off.fr, sizes.fill, XDP_UMEM_PGOFF_FILL_RING, true)?,
        Ring::map(
            raw,
            &off.cr,
            sizes.comp,
            XDP_UMEM_PGOFF_COMPLETION_RING,
            false,
        )?,
    ))
}

/// One AF_XDP socket bound to one queue of a netdev.
pub struct XskSocket {
    // Rings are declared before the fd so they are unmapped before close.
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    fd: OwnedFd,
}

// SAFETY: the raw ring pointers point into mappings owned by this value;
// the socket is moved to and then used by one poll thread only.
unsafe impl Send for XskSocket {}

impl XskSocket {
    /// Creates a socket on `ifindex` queue `queue`. With `share_with`, it
    /// shares that live socket's UMEM (and its multi-buffer setting);
    /// without, it registers `umem` itself, multi-buffer if `sg`.
    pub fn new(
        umem: UmemArea,
        ifindex: u32,
        queue: u32,
        share_with: Option<RawFd>,
        sizes: RingSizes,
        sg: bool,
    ) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned right below.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(last_err("socket(AF_XDP)"));
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if share_with.is_none() {
            setsockopt(raw, XDP_UMEM_REG, &umem.reg())?;
        }
        setsockopt(raw, XDP_UMEM_FILL_RING, &sizes.fill)?;
        setsockopt(raw, XDP_UMEM_COMPLETION_RING, &sizes.comp)?;
        setsockopt(raw, XDP_RX_RING, &sizes.rx)?;
        setsockopt(raw, XDP_TX_RING, &sizes.tx)?;
        let (rx, tx, fill, comp) = map_rings(raw, sizes)?;
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            // Shared sockets inherit copy mode; the kernel refuses flags on them.
            flags: if share_with.is_some() {
                XDP_SHARED_UMEM
            } else if sg {
                XDP_COPY | XDP_USE_SG
            } else {
                XDP_COPY
            },
            ifindex,
            queue_id: queue,
            shared_umem_fd: share_with.unwrap_or(0) as u32,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                &sa as *const SockaddrXdp as *const libc::sockaddr,
                std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if share_with.is_some() && e.raw_os_error() == Some(libc::EBADF) {
                // The kernel unbinds a socket whose netdev is unregistered.
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "bind(AF_XDP): the socket whose UMEM is shared is no longer bound",
                ));
            }
            return Err(last_err("bind(AF_XDP)"));
        }
        // Older kernels lack the option: the default budget (32) still works.
        let _ = setsockopt(raw, XDP_MAX_TX_SKB_BUDGET, &256u32);
        Ok(XskSocket {
            rx,
            tx,
            fill,
            comp,
            fd,
        })
    }

    /// Takes over a live, bound socket that a predecessor switchd handed
    /// over: maps its rings (the kernel keeps their indexes, so frames
    /// waiting in them are picked up where the predecessor left off).
    pub fn adopt(fd: OwnedFd, sizes: RingSizes) -> io::Result<Self> {
        let (rx, tx, fill, comp) = map_rings(fd.as_raw_fd(), sizes)?;
        Ok(XskSocket {
            rx,
            tx,
            fill,
            comp,
            fd,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Gives free frames (chunk addresses) to the kernel for receiving.
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        self.fill.produce(addrs)
    }

    pub fn fill_free(&mut self) -> u32 {
        self.fill.free(self.fill.size)
    }

    /// Takes received descriptors: whole frames only, about `max`
    /// descriptors (a frame's fragments are never split).
    pub fn recv(&mut self, out: &mut Vec<Desc>, max: usize) -> usize {
        self.rx
            .consume_until(out, max, |d| d.options & XDP_PKT_CONTD == 0)
    }

    /// Queues descriptors for sending, whole frames only; returns how many
    /// descriptors went (a prefix of `descs` that ends a frame).
    pub fn send(&mut self, descs: &[Desc]) -> usize {
        let free = self.tx.free(descs.len() as u32) as usize;
        let mut n = free.min(descs.len());
        while n > 0 && descs[n - 1].options & XDP_PKT_CONTD != 0 {
            n -= 1;
        }
        self.tx.produce(&descs[..n])
    }

    /// Frames queued for TX that the kernel has not taken yet.
    pub fn tx_queued(&mut self) -> u32 {
        self.tx.in_flight()
    }

    /// Takes addresses of frames the kernel finished sending.
    pub fn completed(&mut self, out: &mut Vec<u64>, max: usize) -> usize {
        self.comp.consume(out, max)
    }

    /// Copy mode transmits only inside sendto(): kick after queueing.
    pub fn kick(&self) -> io::Result<()> {
        // SAFETY: zero-length sendto with null buffers on our own socket.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn stats(&self) -> io::Result<XdpStats> {
        getsockopt(self.fd.as_raw_fd(), XDP_STATISTICS)
    }
}
