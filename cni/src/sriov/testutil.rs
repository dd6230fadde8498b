//! Test doubles: a generated sysfs tree of an SR-IOV NIC.
//!
//! The tree is laid out as a ConnectX-style dual-port NIC's sysfs, from
//! the kernel's Documentation/ABI/testing/sysfs-bus-pci (`sriov_totalvfs`,
//! `sriov_numvfs`; the `virtfn<N>` and `physfn` links drivers/pci/iov.c
//! makes between a PF and its VFs, which are siblings under the same
//! bridge directory) and sysfs-class-net (`ifindex`, `phys_switch_id`,
//! `phys_port_name`); `bus/pci/devices/*` and `class/net/*` are links into
//! `devices/`, as on a node (and as in sriov-cni's pkg/utils/testing.go
//! fake tree). Representors follow mlx5: parented to the PF's PCI device
//! (so they also show up under its `net/`), `phys_port_name` `pf0vf<M>`
//! as devlink names PCI VF ports (net/devlink/port.c), the uplink's `p0`,
//! all with the PF's `phys_switch_id`. In legacy mode there are no
//! representors but the PF keeps a `phys_switch_id`, as ice does (its PF
//! devlink port always carries the switch id derived from the PCI DSN).

use super::sysfs::Sysfs;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "podswitch-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixtureMode {
    Switchdev,
    Legacy,
}

pub const SWITCH_ID: &str = "b8cef6fffe0a1b2c";
pub const PF_IFINDEX: u32 = 4;

/// A generated sysfs tree:
/// - PF `0000:18:00.0` (mlx5_core), netdev `ens1f0` (ifindex 4, `p0`),
///   sriov_totalvfs 8, sriov_numvfs 4, `virtfn0..3` -> VFs
///   `0000:18:02.0..3`: VF 0 and 3 on vfio-pci, VF 1 on mlx5_core with
///   netdev `ens1f0v1`, VF 2 unbound;
/// - in switchdev mode representors `ens1f0_0..3` (`pf0vf0..3`);
/// - PF `0000:18:00.1` without SR-IOV, netdev `ens1f1`; `0000:18:0a.0`
///   names it as its physfn (an inconsistent tree, for that error);
/// - PF `0000:3b:00.0` with SR-IOV but bound to vfio-pci (no netdev),
///   its VF `0000:3b:02.0`;
/// - `0000:00:1f.0`, neither PF nor VF;
/// - `lo`, and `enp94s0f0_1`, a representor `pf0vf1` on another switch.
pub struct Fixture {
    dir: TempDir,
}

const BRIDGE: &str = "devices/pci0000:17/0000:17:02.0";

impl Fixture {
    pub fn new(mode: FixtureMode) -> Fixture {
        let fx = Fixture {
            dir: TempDir::new("sysfs"),
        };
        fx.build(mode);
        fx
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.root())
    }

    /// Writes a file (and its directories) under the root.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.root().join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(p, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.root().join(rel)).unwrap();
    }

    /// A relative symlink at `rel` to the root-relative `target`.
    fn link(&self, rel: &str, target: &str) {
        let from = self.root().join(rel);
        fs::create_dir_all(from.parent().unwrap()).unwrap();
        let ups = rel.matches('/').count();
        let rel_target = format!("{}{target}", "../".repeat(ups));
        symlink(rel_target, from).unwrap();
    }

    /// A PCI device at `<parent>/<addr>` with its bus link and driver.
    fn pci_device(
        &self,
        parent: &str,
        addr: &str,
        ids: (&str, &str),
        driver: Option<&str>,
    ) -> String {
        let dev = format!("{parent}/{addr}");
        self.write(&format!("{dev}/vendor"), &format!("{}\n", ids.0));
        self.write(&format!("{dev}/device"), &format!("{}\n", ids.1));
        self.write(&format!("{dev}/class"), "0x020000\n");
        self.link(&format!("bus/pci/devices/{addr}"), &dev);
        if let Some(d) = driver {
            fs::create_dir_all(self.root().join(format!("bus/pci/drivers/{d}"))).unwrap();
            self.link(&format!("{dev}/driver"), &format!("bus/pci/drivers/{d}"));
        }
        dev
    }

    /// A netdev under `dev/net/<name>`, linked from class/net.
    fn netdev(&self, dev: &str, name: &str, ifindex: u32, port: Option<(&str, &str)>) {
        let nd = format!("{dev}/net/{name}");
        self.write(&format!("{nd}/ifindex"), &format!("{ifindex}\n"));
        self.write(&format!("{nd}/address"), "02:00:00:00:00:00\n");
        if let Some((switch_id, port_name)) = port {
            self.write(&format!("{nd}/phys_switch_id"), &format!("{switch_id}\n"));
            self.write(&format!("{nd}/phys_port_name"), &format!("{port_name}\n"));
        }
        self.link(&format!("class/net/{name}"), &nd);
    }

    fn build(&self, mode: FixtureMode) {
        let mlx = ("0x15b3", "0x1017");
        let mlx_vf = ("0x15b3", "0x1018");
        let pf = self.pci_device(BRIDGE, "0000:18:00.0", mlx, Some("mlx5_core"));
        self.write(&format!("{pf}/sriov_totalvfs"), "8\n");
        self.write(&format!("{pf}/sriov_numvfs"), "4\n");
        self.netdev(&pf, "ens1f0", PF_IFINDEX, Some((SWITCH_ID, "p0")));
        let drivers = [Some("vfio-pci"), Some("mlx5_core"), None, Some("vfio-pci")];
        for (i, driver) in drivers.into_iter().enumerate() {
            let addr = format!("0000:18:02.{i}");
            let vf = self.pci_device(BRIDGE, &addr, mlx_vf, driver);
            self.link(&format!("{vf}/physfn"), &pf);
            self.link(&format!("{pf}/virtfn{i}"), &vf);
            if driver == Some("mlx5_core") {
                self.netdev(&vf, &format!("ens1f0v{i}"), 20 + i as u32, None);
            }
            if mode == FixtureMode::Switchdev {
                let port = format!("pf0vf{i}");
                self.netdev(
                    &pf,
                    &format!("ens1f0_{i}"),
                    10 + i as u32,
                    Some((SWITCH_ID, &port)),
                );
            }
        }

        let pf1 = self.pci_device(BRIDGE, "0000:18:00.1", mlx, Some("mlx5_core"));
        self.netdev(&pf1, "ens1f1", 5, Some((SWITCH_ID, "p1")));
        let stray = self.pci_device(BRIDGE, "0000:18:0a.0", mlx_vf, None);
        self.link(&format!("{stray}/physfn"), &pf1);

        let intel = ("0x8086", "0x1592");
        let bridge2 = "devices/pci0000:3a/0000:3a:00.0";
        let pf2 = self.pci_device(bridge2, "0000:3b:00.0", intel, Some("vfio-pci"));
        self.write(&format!("{pf2}/sriov_totalvfs"), "4\n");
        self.write(&format!("{pf2}/sriov_numvfs"), "1\n");
        let vf2 = self.pci_device(bridge2, "0000:3b:02.0", ("0x8086", "0x1889"), None);
        self.link(&format!("{vf2}/physfn"), &pf2);
        self.link(&format!("{pf2}/virtfn0"), &vf2);

        self.pci_device(
            "devices/pci0000:00",
            "0000:00:1f.0",
            ("0x8086", "0xa1c8"),
            None,
        );

        self.netdev("devices/virtual", "lo", 1, None);
        let other = "devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0";
        self.netdev(
            other,
            "enp94s0f0_1",
            30,
            Some(("0c42a1fffe000001", "pf0vf1")),
        );
    }
}
