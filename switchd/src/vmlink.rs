//! Carries a tap port's link state to the VM's virtual NIC.
//!
//! switchd pulls the cable of a tap port by taking the tap down where it
//! lives (the VMM's writes then fail, and nothing reaches the guest). The
//! guest's virtio NIC does not see that by itself: QEMU never reads the
//! tap's state; its NIC's link is set only through the VMM's control
//! channel (QMP `set_link`, or libvirt's `domif-setlink`, which issues it).
//! `switchctl vm link-follow` is that missing piece, run next to the VMM:
//! it watches the tap's administrative state in the VM pod's namespace and
//! sets the guest NIC's link to match, at once and on every change.

use podswitch_shared::netdev;
use podswitch_shared::netns::NetNs;
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A socket made inside the tap's namespace: ioctls on it name that
/// namespace's interfaces, so the watcher needs no thread of its own there.
pub struct TapWatch {
    sock: OwnedFd,
    ifname: String,
}

impl TapWatch {
    pub fn open(netns: Option<&str>, ifname: &str) -> io::Result<TapWatch> {
        let sock = match netns {
            Some(p) => NetNs::open(Path::new(p))?.run(netdev::ctl_socket)??,
            None => netdev::ctl_socket()?,
        };
        Ok(TapWatch {
            sock,
            ifname: ifname.to_string(),
        })
    }

    /// Whether the tap is administratively up; NotFound once it is gone.
    pub fn is_up(&self) -> io::Result<bool> {
        netdev::is_up_on(&self.sock, &self.ifname).map_err(|e| match e {
            netdev::NetdevError::NotFound { .. } => {
                io::Error::new(io::ErrorKind::NotFound, format!("{} is gone", self.ifname))
            }
            e => io::Error::other(e.to_string()),
        })
    }
}

/// A QMP connection (QEMU's JSON control socket), past the handshake.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(path: &Path) -> io::Result<Qmp> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let writer = s.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a QMP socket (greeting {greeting})",
                    path.display()
                ),
            ));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the VMM closed QMP",
            ));
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Runs a command; events that arrive meanwhile (any number: they
    /// pile up between commands) are skipped. Each read waits at most the
    /// socket's 5 s timeout.
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(io::Error::other(format!("QMP {command}: {e}")));
            }
        }
    }

    pub fn set_link(&mut self, netdev: &str, up: bool) -> io::Result<()> {
        self.execute("set_link", json!({"name": netdev, "up": up}))
            .map(|_| ())
    }
}

/// Follows the tap's state until it is gone (Ok) or QMP fails (Err).
/// `report` hears every change applied.
pub fn follow(
    tap: &TapWatch,
    qmp: &mut Qmp,
    netdev: &str,
    interval: Duration,
    mut report: impl FnMut(bool),
) -> io::Result<()> {
    let mut last = None;
    loop {
        let up = match tap.is_up() {
            Ok(up) => up,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if last != Some(up) {
            qmp.set_link(netdev, up)?;
            report(up);
            last = Some(up);
        }
        std::thread::sleep(interval);
    }
}
