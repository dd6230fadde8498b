//! Network namespaces: a namespace belongs to a thread (setns changes only
//! the calling thread), so work inside a pod's netns runs on a dedicated
//! thread that enters it, does the work, and ends.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

const NSFS_MAGIC: i64 = 0x6e73_6673;

pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// Opens the netns at `path` (e.g. /var/run/netns/x or /proc/PID/ns/net).
    pub fn open(path: &Path) -> io::Result<NetNs> {
        let f = std::fs::File::open(path)?;
        let mut st: libc::statfs = unsafe_zeroed_statfs();
        // SAFETY: fstatfs fills a live statfs for an fd we own.
        if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // f_type's C type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        if st.f_type as i64 != NSFS_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        Ok(NetNs {
            fd: OwnedFd::from(f),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `f` on a new thread inside this namespace and returns its value.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on this (new, private) thread with a netns fd
                // that outlives the scope.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread inside the netns panicked"))?
        })
    }
}

fn unsafe_zeroed_statfs() -> libc::statfs {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
