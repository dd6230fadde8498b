//! Network namespaces: a namespace belongs to a thread (setns changes only
//! the calling thread), so work inside a pod's netns runs on a dedicated
//! thread that enters it, does the work, and ends.
//!
//! Opening and entering go through `netns-rs`. Two parts stay here because
//! that crate does not do them: checking that the file is a namespace at
//! all (netns-rs opens any path), and running on a private thread
//! (`netns_rs::NetNs::run` switches the *calling* thread and back, which
//! would leave the caller in the pod's netns if switching back failed, and
//! costs an extra open of the caller's own netns per call).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

const NSFS_MAGIC: i64 = 0x6e73_6673;

pub struct NetNs {
    ns: netns_rs::NetNs,
}

/// The `io::Error` inside a netns-rs error, so callers keep seeing the
/// errno (ENOENT, EACCES, EPERM, EINVAL...) that open(2) or setns(2) gave.
fn io_error(e: netns_rs::Error) -> io::Error {
    match e {
        netns_rs::Error::OpenNsError(_, e) => e,
        netns_rs::Error::SetnsError(errno) => io::Error::from(errno),
        e => io::Error::other(e),
    }
}

impl NetNs {
    /// Opens the netns at `path` (e.g. /var/run/netns/x or /proc/PID/ns/net).
    pub fn open(path: &Path) -> io::Result<NetNs> {
        let ns = netns_rs::get_from_path(path).map_err(io_error)?;
        let mut st = zeroed_statfs();
        // SAFETY: fstatfs fills a live statfs for an fd that `ns` owns.
        if unsafe { libc::fstatfs(ns.file().as_raw_fd(), &mut st) } < 0 {
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
        Ok(NetNs { ns })
    }

    pub fn fd(&self) -> RawFd {
        self.ns.file().as_raw_fd()
    }

    /// Runs `f` on a new thread inside this namespace and returns its value.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let ns = &self.ns;
        std::thread::scope(|s| {
            s.spawn(move || {
                // setns(CLONE_NEWNET) on this new, private thread, which
                // ends right after `f`.
                ns.enter().map_err(io_error)?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread inside the netns panicked"))?
        })
    }
}

fn zeroed_statfs() -> libc::statfs {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The inode of the calling thread's netns (same inode: same netns).
    fn current_netns() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn open_refuses_what_is_not_a_netns() {
        let e = NetNs::open(Path::new("/proc/self/status")).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
        let e = NetNs::open(Path::new("/nonexistent/netns")).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn open_gives_the_namespace_fd() {
        let ns = NetNs::open(Path::new("/proc/self/ns/net")).unwrap();
        let path = format!("/proc/self/fd/{}", ns.fd());
        assert_eq!(std::fs::metadata(path).unwrap().ino(), current_netns());
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Needs CAP_SYS_ADMIN (unshare, setns): without it (not root) it is
    /// skipped and says so; as root it must run.
    #[test]
    fn run_enters_the_namespace_on_its_own_thread() {
        // A thread in a fresh netns holds it open while the test runs.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // SAFETY: unshare on this thread only; it touches no memory.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                tx.send(Err(io::Error::last_os_error())).unwrap();
                return;
            }
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            tx.send(Ok((tid, current_netns()))).unwrap();
            let _ = done_rx.recv();
        });
        let (tid, ino) = match rx.recv().unwrap() {
            Ok(v) => v,
            Err(e) => {
                // As root (CI) it must run; elsewhere it skips, saying why.
                assert!(!root(), "unshare(CLONE_NEWNET) failed as root: {e}");
                eprintln!("skipped: unshare(CLONE_NEWNET): {e}");
                holder.join().unwrap();
                return;
            }
        };
        let here = current_netns();
        assert_ne!(here, ino);
        let path = format!("/proc/self/task/{tid}/ns/net");
        let ns = NetNs::open(Path::new(&path)).unwrap();
        let inside = ns.run(current_netns);
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        match inside {
            Ok(v) => assert_eq!(v, ino),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                assert!(!root(), "setns failed as root: {e}");
                eprintln!("skipped: setns: {e}");
            }
            Err(e) => panic!("run: {e}"),
        }
        // The caller's thread did not move.
        assert_eq!(current_netns(), here);
        // A panic inside is an error, not a panic of the caller.
        let own = NetNs::open(Path::new("/proc/self/ns/net")).unwrap();
        if let Err(e) = own.run(|| -> u8 { panic!("inside") }) {
            assert!(
                e.to_string().contains("panicked") || e.raw_os_error() == Some(libc::EPERM),
                "{e}"
            );
        }
    }
}
