//! The AF_XDP data path: one poll thread owns the UMEM, every port's
//! socket, the XDP program and the per-port rings; it reads the published
//! snapshot once per round and runs the pure pipeline on each RX batch.
//!
//! The control plane talks to it through `Datapath`: attach/detach are
//! commands over a channel (answered when done), configuration changes are
//! new snapshots. The thread sleeps in poll() when no frame is pending, so
//! an idle switch costs nothing.

pub mod bpf;
pub use podswitch_shared::netdev;
mod worker;
pub mod xsk;

use crate::pipeline::fdb::Slot;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use bpf::Mode;

/// Data-path sizing.
#[derive(Debug, Clone, Copy)]
pub struct DatapathConfig {
    /// UMEM frames (4 KiB each) shared by all ports.
    pub umem_frames: u32,
    /// Most frames kept in one port's fill ring (fewer when many ports share the UMEM).
    pub fill_per_port: u32,
    /// Frames taken from one RX ring per round.
    pub batch: usize,
    /// Attach XDP in the driver where possible (else the generic skb path).
    pub native_xdp: bool,
    /// CPU the poll thread is pinned to, if any.
    pub poll_cpu: Option<usize>,
    /// How long the poll thread keeps polling after its last frame before
    /// it sleeps in poll().
    pub spin: Duration,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            umem_frames: 16384,
            fill_per_port: 2048,
            batch: 128,
            native_xdp: true,
            poll_cpu: None,
            spin: Duration::from_micros(50),
        }
    }
}

/// A port the data path is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub mode: Mode,
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

/// Why the poll thread could not attach a port.
#[derive(Debug)]
pub(crate) enum AttachFailure {
    /// The netdev queue is still held by a socket being torn down (the
    /// kernel releases it asynchronously); worth retrying shortly.
    Busy(String),
    Other(String),
}

pub(crate) enum Command {
    Attach {
        slot: Slot,
        ifname: String,
        reply: mpsc::SyncSender<Result<Attachment, AttachFailure>>,
    },
    Detach {
        slot: Slot,
        reply: mpsc::SyncSender<()>,
    },
    Stop,
}

/// The control plane's handle on the poll thread.
pub struct Datapath {
    cfg: DatapathConfig,
    cmds: mpsc::Sender<Command>,
    wake: Arc<OwnedFd>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Slots the poll thread is serving; it removes a slot whose netdev vanished.
    attached: Arc<Mutex<HashMap<Slot, Attachment>>>,
    thread: Option<std::thread::JoinHandle<()>>,
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

const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const BUSY_RETRY: Duration = Duration::from_secs(3);

impl Datapath {
    /// Loads the XDP program, maps the UMEM and starts the poll thread.
    pub fn start(cfg: DatapathConfig) -> Result<Datapath, DatapathError> {
        // SAFETY: eventfd(2) with valid flags; the fd is owned right below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(DatapathError::Start(format!(
                "eventfd: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: fresh fd we own.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let attached = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (w, s, a) = (wake.clone(), snapshot.clone(), attached.clone());
        let thread = std::thread::Builder::new()
            .name("switchd-poll".into())
            .spawn(move || {
                match pin(cfg.poll_cpu).and_then(|()| worker::Worker::new(cfg, rx, w, s, a)) {
                    Ok(mut worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| DatapathError::Start(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DatapathError::Start(e)),
            Err(_) => return Err(DatapathError::Gone),
        }
        Ok(Datapath {
            cfg,
            cmds: tx,
            wake,
            snapshot,
            attached,
            thread: Some(thread),
        })
    }

    fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    fn send(&self, c: Command) -> Result<(), DatapathError> {
        self.cmds.send(c).map_err(|_| DatapathError::Gone)?;
        self.kick();
        Ok(())
    }

    /// Attaches the netdev `ifname` as port `slot`; returns once frames flow.
    /// A queue still held by a just-closed socket is retried for a while
    /// here, on the caller's thread, so the poll thread never sleeps.
    pub fn attach(&self, slot: Slot, ifname: &str) -> Result<Attachment, DatapathError> {
        let deadline = std::time::Instant::now() + BUSY_RETRY;
        loop {
            let (reply, answer) = mpsc::sync_channel(1);
            self.send(Command::Attach {
                slot,
                ifname: ifname.to_string(),
                reply,
            })?;
            match answer.recv_timeout(ANSWER_TIMEOUT) {
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(AttachFailure::Busy(m))) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(DatapathError::Attach(m));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Err(AttachFailure::Other(m))) => return Err(DatapathError::Attach(m)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(DatapathError::Timeout(ANSWER_TIMEOUT))
                }
                Err(_) => return Err(DatapathError::Gone),
            }
        }
    }

    /// Stops serving port `slot` and reclaims its frames. Returns once the
    /// poll thread has the command: the port is already out of the
    /// published snapshot, so nothing is forwarded to or from it, and the
    /// socket teardown (which waits out kernel grace periods) need not hold
    /// the caller. Commands run in order: a later attach of the same slot
    /// or NIC comes after this detach.
    pub fn detach(&self, slot: Slot) -> Result<(), DatapathError> {
        let (reply, _answer) = mpsc::sync_channel(1);
        self.send(Command::Detach { slot, reply })
    }

    /// Publishes a new configuration; the poll thread uses it from its next round.
    pub fn publish(&self, snap: Snapshot) {
        self.snapshot.store(Arc::new(snap));
    }

    pub fn config(&self) -> DatapathConfig {
        self.cfg
    }

    pub fn attachment(&self, slot: Slot) -> Option<Attachment> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .copied()
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
