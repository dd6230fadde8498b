//! Test doubles: a generated sysfs tree of an SR-IOV NIC and a recording
//! rtnetlink transport standing in for the kernel.
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

use super::rtnl::Rtnl;
use super::sysfs::Sysfs;
use super::vf::{settings_of, vf_id, VfSettings};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    LinkAttribute, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate,
    VfInfoSpoofCheck, VfInfoTrust, VfInfoTxRate, VfInfoVlan,
};
use netlink_packet_route::RouteNetlinkMessage;
use podswitch_shared::model::MacAddr;
use std::collections::BTreeMap;
use std::fs;
use std::io;
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

/// The kernel, as far as VF settings on one PF go: records every request
/// as the bytes it would receive, decodes them back with
/// netlink-packet-route, applies SETLINKs to its VF table and answers
/// GETLINKs from it.
pub struct RecordingRtnl {
    pub pf_ifindex: u32,
    pub vfs: BTreeMap<u32, VfSettings>,
    /// Every request, as decoded from its bytes.
    pub requests: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    /// Errnos to answer the next SETLINKs with, in order (a failed one
    /// applies nothing).
    pub fail_setlinks: Vec<i32>,
}

impl RecordingRtnl {
    /// A PF with `n` VFs, each with zero MAC, no VLAN, spoof check on,
    /// trust off, link auto, no rate limit (a fresh VF).
    pub fn new(pf_ifindex: u32, n: u32) -> RecordingRtnl {
        let fresh = VfSettings {
            mac: Some(MacAddr([0; 6])),
            vlan: Some(0),
            qos: Some(0),
            spoofchk: Some(true),
            trust: Some(false),
            link_state: Some(super::VfLinkState::Auto),
            min_tx_rate: Some(0),
            max_tx_rate: Some(0),
        };
        RecordingRtnl {
            pf_ifindex,
            vfs: (0..n).map(|i| (i, fresh.clone())).collect(),
            requests: Vec::new(),
            fail_setlinks: Vec::new(),
        }
    }

    /// The SETLINK requests seen, as (ifindex, VF attributes).
    pub fn setlinks(&self) -> Vec<(u32, Vec<LinkVfInfo>)> {
        self.requests
            .iter()
            .filter_map(|m| match &m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l)) => {
                    let vfs = l
                        .attributes
                        .iter()
                        .filter_map(|a| match a {
                            LinkAttribute::VfInfoList(v) => Some(v.clone()),
                            _ => None,
                        })
                        .flatten()
                        .collect();
                    Some((l.header.index, vfs))
                }
                _ => None,
            })
            .collect()
    }

    fn answer_getlink(&self) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut link = LinkMessage::default();
        link.header.index = self.pf_ifindex;
        link.attributes.push(LinkAttribute::IfName("ens1f0".into()));
        let list = self
            .vfs
            .iter()
            .map(|(&i, s)| LinkVfInfo(kernel_vf_info(i, s)))
            .collect();
        link.attributes.push(LinkAttribute::VfInfoList(list));
        let mut m = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
        m.finalize();
        roundtrip(&m)
    }

    /// Applies attributes one by one, as do_setvfinfo does.
    fn apply(&mut self, infos: &[VfInfo]) -> io::Result<()> {
        for info in infos {
            let id = vf_id(info).unwrap_or_else(|| panic!("unexpected VF attribute {info:?}"));
            let set = settings_of(std::slice::from_ref(info)).unwrap();
            let vf = self
                .vfs
                .get_mut(&id)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            *vf = VfSettings::fill_missing(&set, vf);
        }
        Ok(())
    }
}

/// What the kernel's rtnl_fill_vfinfo puts in one IFLA_VF_INFO.
fn kernel_vf_info(i: u32, s: &VfSettings) -> Vec<VfInfo> {
    let mac = s.mac.unwrap_or_default();
    let max = s.max_tx_rate.unwrap_or(0);
    vec![
        VfInfo::Mac(VfInfoMac::new(i, &mac.0)),
        VfInfo::Vlan(VfInfoVlan::new(
            i,
            s.vlan.unwrap_or(0).into(),
            s.qos.unwrap_or(0).into(),
        )),
        VfInfo::TxRate(VfInfoTxRate::new(i, max)),
        VfInfo::Rate(VfInfoRate::new(i, s.min_tx_rate.unwrap_or(0), max)),
        VfInfo::SpoofCheck(VfInfoSpoofCheck::new(i, s.spoofchk.unwrap_or(false))),
        VfInfo::LinkState(VfInfoLinkState::new(
            i,
            s.link_state.unwrap_or(super::VfLinkState::Auto).into(),
        )),
        VfInfo::Trust(VfInfoTrust::new(i, s.trust.unwrap_or(false))),
    ]
}

/// A message as its receiver sees it: serialized, then decoded.
pub fn roundtrip(m: &NetlinkMessage<RouteNetlinkMessage>) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    NetlinkMessage::deserialize(&buf).unwrap()
}

impl Rtnl for RecordingRtnl {
    fn request(
        &mut self,
        msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        let m = roundtrip(&msg);
        assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_ACK, "{m:?}");
        self.requests.push(m.clone());
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(l))
                if l.header.index == self.pf_ifindex =>
            {
                Ok(vec![self.answer_getlink()])
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l))
                if l.header.index == self.pf_ifindex =>
            {
                if !self.fail_setlinks.is_empty() {
                    let errno = self.fail_setlinks.remove(0);
                    return Err(io::Error::from_raw_os_error(errno));
                }
                for a in &l.attributes {
                    if let LinkAttribute::VfInfoList(list) = a {
                        for LinkVfInfo(infos) in list {
                            self.apply(infos)?;
                        }
                    }
                }
                Ok(Vec::new())
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENODEV)),
        }
    }
}
