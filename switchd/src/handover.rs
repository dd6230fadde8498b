//! Handing the data path from one switchd to the next (an upgrade, a
//! planned restart) without rebuilding it.
//!
//! The serving switchd listens on a handover socket next to its control
//! socket. A new switchd started on the same control socket connects and
//! says hello (its handover format and data path shape). If they match,
//! the old one stops taking requests, waits for those in flight, freezes
//! its poll threads (frames keep arriving into the rings) and sends, as a
//! JSON offer plus file descriptors (`SCM_RIGHTS`):
//!
//! - the XDP program, its maps (PORTS, XSKS, NOSOCK) and its links;
//! - each poll thread's UMEM (a memfd) and which socket owns each chunk;
//! - each port's AF_XDP sockets, with their fill counts;
//! - the learned MACs, the counters users read, and each port's slot;
//! - the control and metrics listeners (requests queue in them meanwhile).
//!
//! The new switchd maps the same UMEM and rings, adopts the sockets as its
//! registry restores the ports from the state directory (slots kept, so
//! the maps stay right), starts polling, and says "taken"; the old one
//! exits at once without detaching anything (its fds were duplicates).
//!
//! A format or shape mismatch is refused: the old switchd stops as on
//! SIGTERM and the new one, once it is gone, restarts from the state
//! directory, as after a crash.

use crate::datapath::bpf::{Mode, ProgramFds};
use crate::datapath::xsk::Desc;
use crate::datapath::{DatapathExport, Inherited, InheritedPort, InheritedQueue};
use crate::overlay::OverlaySeed;
use crate::pipeline::fdb::{Row, Slot};
use crate::pipeline::snapshot::CounterSeed;
use podswitch_shared::model::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The handover format this switchd speaks. Bump it whenever the offer
/// or the meaning of what travels (chunk ownership, ring sizes, the BPF
/// maps' layout) changes.
pub const FORMAT: u32 = 1;
const MAGIC: &str = "podswitch-handover";
/// Most fds in one message (the kernel's SCM_MAX_FD is 253).
const FDS_PER_MESSAGE: usize = 200;
/// Largest JSON message accepted.
const MAX_MESSAGE: u32 = 64 << 20;

/// The format this process claims: FORMAT, unless the test hook
/// PODSWITCH_HANDOVER_FORMAT says otherwise (to show a mismatch falls
/// back to a restart).
pub fn format() -> u32 {
    std::env::var("PODSWITCH_HANDOVER_FORMAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FORMAT)
}

/// The handover socket of a control socket: the same path plus ".handover".
pub fn socket_path(control: &Path) -> PathBuf {
    let mut s = control.as_os_str().to_owned();
    s.push(".handover");
    PathBuf::from(s)
}

/// A descriptor on its way: (address, length, options).
type WireDesc = (u64, u32, u32);
pub use crate::datapath::poll::Queued;

fn wire(d: &Desc) -> WireDesc {
    (d.addr, d.len, d.options)
}

fn unwire(w: &WireDesc) -> Desc {
    Desc {
        addr: w.0,
        len: w.1,
        options: w.2,
    }
}

/// A learned MAC on its way: (VLAN, MAC, port ID, age in ns).
pub type LearnedRow = (u16, [u8; 6], String, u64);
/// One switch's learned MACs, by switch name.
pub type SwitchRows = (String, Vec<LearnedRow>);

/// What the new switchd says first.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub magic: String,
    pub format: u32,
    pub pid: u32,
    pub version: String,
    pub threads: usize,
    pub umem_frames: u32,
}

impl Hello {
    pub fn new(threads: usize, umem_frames: u32) -> Hello {
        Hello {
            magic: MAGIC.into(),
            format: format(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            threads,
            umem_frames,
        }
    }

    /// Why the serving switchd (with this shape) cannot hand over to it.
    pub fn mismatch(&self, threads: usize, umem_frames: u32) -> Option<String> {
        if self.magic != MAGIC {
            return Some("not a podswitch handover".into());
        }
        if self.format != format() {
            return Some(format!(
                "handover format {} asked, this switchd (version {}) speaks {}",
                self.format,
                env!("CARGO_PKG_VERSION"),
                format()
            ));
        }
        if self.threads != threads || self.umem_frames != umem_frames {
            return Some(format!(
                "data path shape differs: {} poll thread(s) of {} frames asked, {} of {} served",
                self.threads, self.umem_frames, threads, umem_frames
            ));
        }
        None
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "camelCase")]
pub enum Answer {
    /// The old switchd stops as on SIGTERM; restart from the state dir.
    Refused {
        format: u32,
        pid: u32,
        reason: String,
    },
    Offer(Box<Offer>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    pub format: u32,
    pub pid: u32,
    pub version: String,
    pub threads: Vec<ThreadOffer>,
    pub links: Vec<(u32, String)>,
    pub ports: Vec<PortOffer>,
    /// Port ID → slot.
    pub slots: HashMap<String, Slot>,
    pub counters: HashMap<String, CounterSeed>,
    /// The overlay programs' counters and learned MACs, by overlay ifname
    /// (absent from a predecessor without them).
    #[serde(default)]
    pub overlays: BTreeMap<String, OverlaySeed>,
    /// Whether a metrics listener's fd follows the control listener's.
    pub metrics_listener: bool,
    /// Frames that were in the poll threads' hands (shaper queues, in
    /// flight between threads), dropped by the handover.
    pub frames_dropped: u64,
    /// How many fds follow.
    pub fds: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadOffer {
    /// (chunk index, owner instance) of every chunk a socket owns.
    pub owned: Vec<(u32, u32)>,
    /// Learned MACs per switch name: (VLAN, MAC, port ID, age in ns).
    pub fdbs: Vec<SwitchRows>,
    /// Frames in the shapers (their chunks are HELD in `owned`): from
    /// each port (flat descriptors) and to it (whole frames).
    pub shaped: Vec<(Slot, Vec<WireDesc>)>,
    pub to_port: Vec<(Slot, Vec<Vec<WireDesc>>)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PortOffer {
    pub slot: Slot,
    pub ifindex: u32,
    pub ifname: String,
    pub netns: Option<String>,
    /// (thread, instance, filled) per queue.
    pub queues: Vec<(usize, u32, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Taken {
    taken: bool,
    pid: u32,
}

fn write_msg<T: Serialize>(s: &mut UnixStream, m: &T) -> io::Result<()> {
    let b = serde_json::to_vec(m).map_err(io::Error::other)?;
    s.write_all(&(b.len() as u32).to_be_bytes())?;
    s.write_all(&b)
}

fn read_msg<T: for<'de> Deserialize<'de>>(s: &mut UnixStream) -> io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handover message of {len} bytes"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    s.read_exact(&mut b)?;
    serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn iovec(b: &mut [u8; 1]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    }
}

/// A message of one byte (`iov`) and a control buffer of `space` bytes;
/// it points into both, which must outlive its use.
fn msghdr(iov: &mut libc::iovec, cbuf: &mut [u64], space: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zero is a valid start.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    msg
}

/// Sends `fds` in messages of up to FDS_PER_MESSAGE, one byte each.
fn send_fds(s: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let bytes = std::mem::size_of_val(chunk);
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        let mut byte = [b'F'];
        let mut iov = iovec(&mut byte);
        let msg = msghdr(&mut iov, &mut cbuf, space);
        // SAFETY: msg_control points to `space` writable bytes (aligned for
        // cmsghdr), so CMSG_FIRSTHDR is non-null and the header plus
        // `bytes` of data fit; the fds are copied into it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(chunk.as_ptr() as *const u8, libc::CMSG_DATA(c), bytes);
        }
        // SAFETY: msg and everything it points to are live for the call.
        let r = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives `n` fds sent by `send_fds`.
fn recv_fds(s: &UnixStream, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = (n - out.len()).min(FDS_PER_MESSAGE);
        let bytes = want * std::mem::size_of::<RawFd>();
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        let mut byte = [0u8];
        let mut iov = iovec(&mut byte);
        let mut msg = msghdr(&mut iov, &mut cbuf, space);
        // SAFETY: msg points to live buffers of the sizes given.
        let r = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old switchd closed the handover socket",
            ));
        }
        let mut got = 0;
        // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR/NXTHDR walk
        // it within msg_controllen, and each SCM_RIGHTS payload holds
        // (cmsg_len - CMSG_LEN(0)) / 4 fds that are now ours.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let k = len / std::mem::size_of::<RawFd>();
                    let data = libc::CMSG_DATA(c) as *const RawFd;
                    for i in 0..k {
                        out.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                    got += k;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("handover fds were truncated"));
        }
        if got == 0 {
            return Err(io::Error::other("a handover message carried no fds"));
        }
    }
    Ok(out)
}

fn mode_name(m: Mode) -> &'static str {
    m.as_str()
}

fn mode_of(s: &str) -> Mode {
    if s == "generic" {
        Mode::Generic
    } else {
        Mode::Native
    }
}

/// What the serving switchd hands over besides the data path.
pub struct ControlPlane {
    pub control: RawFd,
    pub metrics: Option<RawFd>,
    pub slots: HashMap<String, Slot>,
    pub counters: HashMap<String, CounterSeed>,
    pub overlays: BTreeMap<String, OverlaySeed>,
    /// Switch ID (as the poll threads know it) → name.
    pub switch_names: HashMap<u32, String>,
}

/// Old side: sends the offer and every fd; the fds are duplicates, so the
/// caller's copies may be closed afterwards.
pub fn send_offer(s: &mut UnixStream, dp: DatapathExport, cp: ControlPlane) -> io::Result<u64> {
    let slot_ids: HashMap<Slot, &String> = cp.slots.iter().map(|(id, s)| (*s, id)).collect();
    let mut fds: Vec<RawFd> = Vec::new();
    let mut keep: Vec<OwnedFd> = Vec::new();
    let mut push = |fd: OwnedFd, fds: &mut Vec<RawFd>| {
        fds.push(fd.as_raw_fd());
        keep.push(fd);
    };
    let ProgramFds { prog, maps, links } = dp.prog;
    push(prog, &mut fds);
    for m in maps {
        push(m, &mut fds);
    }
    fds.push(cp.control);
    if let Some(m) = cp.metrics {
        fds.push(m);
    }
    let mut threads = Vec::new();
    let mut dropped = 0;
    for t in dp.threads {
        dropped += t.dropped;
        push(t.memfd, &mut fds);
        let owned = t
            .owner
            .iter()
            .enumerate()
            .filter(|(_, o)| **o != crate::datapath::poll::OWNER_FREE)
            .map(|(i, o)| (i as u32, *o))
            .collect();
        let fdbs = t
            .fdbs
            .into_iter()
            .filter_map(|(id, rows)| {
                let name = cp.switch_names.get(&id)?.clone();
                let rows = rows
                    .into_iter()
                    .filter_map(|r| {
                        Some((r.vlan, r.mac.0, (*slot_ids.get(&r.slot)?).clone(), r.age_ns))
                    })
                    .collect();
                Some((name, rows))
            })
            .collect();
        let shaped = t
            .shaped
            .iter()
            .map(|(s, q)| (*s, q.iter().map(wire).collect()))
            .collect();
        let to_port = t
            .to_port
            .iter()
            .map(|(s, q)| (*s, q.iter().map(|f| f.iter().map(wire).collect()).collect()))
            .collect();
        threads.push(ThreadOffer {
            owned,
            fdbs,
            shaped,
            to_port,
        });
    }
    let mut link_list = Vec::new();
    for (ifindex, mode, fd) in links {
        link_list.push((ifindex, mode_name(mode).to_string()));
        push(fd, &mut fds);
    }
    let mut ports = Vec::new();
    for p in dp.ports {
        let mut queues = Vec::new();
        for q in p.queues {
            queues.push((q.thread, q.instance, q.filled));
            push(q.fd, &mut fds);
        }
        ports.push(PortOffer {
            slot: p.slot,
            ifindex: p.ifindex,
            ifname: p.ifname,
            netns: p.netns,
            queues,
        });
    }
    let offer = Offer {
        format: format(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        threads,
        links: link_list,
        ports,
        slots: cp.slots,
        counters: cp.counters,
        overlays: cp.overlays,
        metrics_listener: cp.metrics.is_some(),
        frames_dropped: dropped,
        fds: fds.len(),
    };
    write_msg(s, &Answer::Offer(Box::new(offer)))?;
    send_fds(s, &fds)?;
    drop(keep);
    Ok(dropped)
}

/// Old side: refuses (then stops for an ordinary restart).
pub fn refuse(s: &mut UnixStream, reason: &str) -> io::Result<()> {
    write_msg(
        s,
        &Answer::Refused {
            format: format(),
            pid: std::process::id(),
            reason: reason.into(),
        },
    )
}

/// Old side: reads the hello, from a peer that must be root or us.
pub fn read_hello(s: &mut UnixStream) -> io::Result<Hello> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes a ucred into `cred`, of the size passed.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if r != 0 || (cred.uid != 0 && cred.uid != me) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("handover peer uid {} refused", cred.uid),
        ));
    }
    read_msg(s)
}

/// Old side: waits for the new switchd to say it serves.
pub fn wait_taken(s: &mut UnixStream, within: Duration) -> io::Result<u32> {
    s.set_read_timeout(Some(within))?;
    let t: Taken = read_msg(s)?;
    if !t.taken {
        return Err(io::Error::other("the new switchd did not take over"));
    }
    Ok(t.pid)
}

/// What the new switchd receives.
pub struct Received {
    pub offer: Offer,
    pub control: OwnedFd,
    pub metrics: Option<OwnedFd>,
    pub datapath: Inherited,
    /// Per thread: per switch name, rows as (VLAN, MAC, port ID, age).
    pub fdbs: Vec<Vec<SwitchRows>>,
    /// Per thread: the frames its shapers held.
    pub queued: Vec<Queued>,
}

/// New side: connects, if a switchd serves the handover socket.
pub fn connect(path: &Path) -> Option<UnixStream> {
    UnixStream::connect(path).ok()
}

/// New side: says hello and reads the answer (and the fds of an offer).
pub fn request(s: &mut UnixStream, hello: &Hello) -> io::Result<Result<Received, (u32, String)>> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write_msg(s, hello)?;
    let offer = match read_msg::<Answer>(s)? {
        Answer::Refused { pid, reason, .. } => return Ok(Err((pid, reason))),
        Answer::Offer(o) => *o,
    };
    let fds = recv_fds(s, offer.fds)?;
    let mut it = fds.into_iter();
    let mut next = || {
        it.next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "fewer fds than offered"))
    };
    let prog = next()?;
    let maps = [next()?, next()?, next()?];
    let control = next()?;
    let metrics = if offer.metrics_listener {
        Some(next()?)
    } else {
        None
    };
    let mut umems = Vec::new();
    let mut fdbs = Vec::new();
    let mut queued = Vec::new();
    for t in &offer.threads {
        let memfd = next()?;
        let mut owner = Vec::new();
        for (i, o) in &t.owned {
            let i = *i as usize;
            if owner.len() <= i {
                owner.resize(i + 1, crate::datapath::poll::OWNER_FREE);
            }
            owner[i] = *o;
        }
        umems.push((memfd, owner));
        fdbs.push(t.fdbs.clone());
        queued.push((
            t.shaped
                .iter()
                .map(|(s, q)| (*s, q.iter().map(unwire).collect()))
                .collect(),
            t.to_port
                .iter()
                .map(|(s, q)| {
                    (
                        *s,
                        q.iter().map(|f| f.iter().map(unwire).collect()).collect(),
                    )
                })
                .collect(),
        ));
    }
    let mut links = Vec::new();
    for (ifindex, mode) in &offer.links {
        links.push((*ifindex, mode_of(mode), next()?));
    }
    let mut ports = Vec::new();
    for p in &offer.ports {
        let mut queues = Vec::new();
        for (thread, instance, filled) in &p.queues {
            queues.push(InheritedQueue {
                thread: *thread,
                instance: *instance,
                filled: *filled,
                fd: next()?,
            });
        }
        ports.push(InheritedPort {
            slot: p.slot,
            ifindex: p.ifindex,
            ifname: p.ifname.clone(),
            netns: p.netns.clone(),
            queues,
        });
    }
    Ok(Ok(Received {
        control,
        metrics,
        datapath: Inherited {
            prog: ProgramFds { prog, maps, links },
            umems,
            ports,
        },
        fdbs,
        queued,
        offer,
    }))
}

/// New side: the MACs of one poll thread as rows of this switchd's slots.
pub fn rows_for(rows: &[LearnedRow], slots: &HashMap<String, Slot>) -> Vec<Row> {
    rows.iter()
        .filter_map(|(vlan, mac, id, age)| {
            Some(Row {
                vlan: *vlan,
                mac: MacAddr(*mac),
                slot: *slots.get(id)?,
                is_static: false,
                age_ns: *age,
            })
        })
        .collect()
}

/// New side: tells the old switchd it serves now (it exits).
pub fn say_taken(s: &mut UnixStream) -> io::Result<()> {
    write_msg(
        s,
        &Taken {
            taken: true,
            pid: std::process::id(),
        },
    )
}

/// New side, after a refusal: waits for the old switchd to exit (it
/// closes the handover socket as it goes), at most `within`.
pub fn wait_gone(s: &mut UnixStream, within: Duration) -> bool {
    let _ = s.set_read_timeout(Some(within));
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Binds the handover socket (0600), replacing a stale one.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    // SAFETY: umask only changes this process's file-creation mask; it is
    // restored right after bind.
    let old = unsafe { libc::umask(0o077) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_travel_in_batches_and_stay_usable() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let files: Vec<std::fs::File> = (0..450)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let t = std::thread::spawn(move || recv_fds(&b, 450));
        send_fds(&a, &raw).unwrap();
        let got = t.join().unwrap().unwrap();
        assert_eq!(got.len(), 450);
        a.flush().unwrap();
        for fd in &got {
            // SAFETY: fcntl on an fd we own.
            assert!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } >= 0);
        }
    }

    #[test]
    fn a_hello_of_another_format_or_shape_is_refused() {
        let h = Hello::new(1, 16384);
        assert_eq!(h.mismatch(1, 16384), None);
        assert!(h.mismatch(2, 16384).unwrap().contains("shape"));
        let other = Hello {
            format: FORMAT + 1,
            ..Hello::new(1, 16384)
        };
        assert!(other.mismatch(1, 16384).unwrap().contains("format"));
    }

    #[test]
    fn the_handover_socket_sits_next_to_the_control_socket() {
        assert_eq!(
            socket_path(Path::new("/run/podswitch/switchd.sock")),
            PathBuf::from("/run/podswitch/switchd.sock.handover")
        );
    }
}
