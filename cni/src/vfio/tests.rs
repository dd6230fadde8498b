//! The vfio verbs against a generated sysfs tree, the recording kernel
//! double (every request decoded as the kernel would), and in-memory
//! switchd and IPAM doubles.

use super::*;
use crate::sriov::testutil::{Fixture, FixtureMode, RecordingRtnl, TempDir, PF_IFINDEX};
use crate::sriov::{VfLinkState, VfSettings};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate,
    VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState as NlLinkState,
};
use netlink_packet_route::RouteNetlinkMessage;
use podswitch_shared::model::PortStatus;
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// switchd as far as ports go: records calls, keeps ports.
#[derive(Default)]
struct FakeSwitchd {
    ports: RefCell<BTreeMap<String, VPort>>,
    calls: RefCell<Vec<String>>,
    fail_create: Option<CniError>,
}

impl Switchd for FakeSwitchd {
    fn create_port(&self, port: &PortConfig) -> CniResult<VPort> {
        self.calls.borrow_mut().push("POST".into());
        if let Some(e) = &self.fail_create {
            return Err(e.clone());
        }
        port.nic
            .check()
            .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
        let id = port.id.clone().unwrap_or_default();
        let mut v = VPort::from_config(id.clone(), "default".into(), port.clone());
        v.status = Some(PortStatus {
            attached: port.nic.attaches(),
            ifindex: 0,
            xdp_mode: "generic".into(),
            queues: 1,
            mtu: 1500,
            handover: None,
            reason: None,
            captures: Vec::new(),
        });
        self.ports.borrow_mut().insert(id, v.clone());
        Ok(v)
    }
    fn delete_port(&self, id: &str) -> CniResult<()> {
        self.calls.borrow_mut().push(format!("DELETE {id}"));
        self.ports.borrow_mut().remove(id);
        Ok(())
    }
    fn port(&self, id: &str) -> CniResult<VPort> {
        self.ports
            .borrow()
            .get(id)
            .cloned()
            .ok_or_else(|| CniError::new(code::PLUGIN, format!("switchd has no port {id}")))
    }
}

/// host-local as far as one attachment goes.
#[derive(Default)]
struct FakeIpam {
    allocated: RefCell<bool>,
    calls: RefCell<Vec<&'static str>>,
    fail_add: bool,
}

impl Ipam for FakeIpam {
    fn add(&self) -> CniResult<Option<Value>> {
        self.calls.borrow_mut().push("ADD");
        if self.fail_add {
            return Err(CniError::new(
                code::PLUGIN,
                "IPAM plugin host-local ADD: no IP addresses available in range set",
            ));
        }
        *self.allocated.borrow_mut() = true;
        Ok(Some(json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })))
    }
    fn del(&self) -> CniResult<()> {
        self.calls.borrow_mut().push("DEL");
        *self.allocated.borrow_mut() = false;
        Ok(())
    }
    fn check(&self) -> CniResult<()> {
        self.calls.borrow_mut().push("CHECK");
        if *self.allocated.borrow() {
            Ok(())
        } else {
            Err(CniError::new(code::PLUGIN, "no address allocated"))
        }
    }
}

const PORT: &str = "psw0123456789ab";
const MAC: &str = "02:42:0a:09:00:05";

/// One node: a sysfs tree, the kernel, switchd, IPAM, the directories.
struct Node {
    fx: Fixture,
    kernel: RecordingRtnl,
    switchd: FakeSwitchd,
    ipam: FakeIpam,
    dirs: TempDir,
}

impl Node {
    fn new(mode: FixtureMode) -> Node {
        Node {
            fx: Fixture::new(mode),
            kernel: RecordingRtnl::new(PF_IFINDEX, 4),
            switchd: FakeSwitchd::default(),
            ipam: FakeIpam::default(),
            dirs: TempDir::new("vfio"),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dirs.path().join("state")
    }

    fn devinfo(&self) -> PathBuf {
        self.dirs.path().join("devinfo/net-c1_net1")
    }

    /// A vfio configuration on this node, with `extra` keys.
    fn conf(&self, extra: Value) -> NetConf {
        let mut v = json!({
            "cniVersion": "1.1.0",
            "name": "sriov-net",
            "type": "podswitch",
            "endpoint": "vfio",
            "sysfsRoot": self.fx.root(),
            "vfStateDir": self.state_dir(),
            "ipam": {"type": "host-local"},
            "runtimeConfig": {"CNIDeviceInfoFile": self.devinfo()},
        });
        for (k, val) in extra.as_object().cloned().unwrap_or_default() {
            if k == "runtimeConfig" {
                for (rk, rv) in val.as_object().cloned().unwrap_or_default() {
                    v["runtimeConfig"][rk] = rv;
                }
            } else {
                v[k] = val;
            }
        }
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    fn io(&mut self) -> Io<'_> {
        Io {
            rtnl: &mut self.kernel,
            switchd: &self.switchd,
            ipam: &self.ipam,
        }
    }

    fn add(&mut self, conf: &NetConf, e: &Env) -> CniResult<Value> {
        let args = e.parse_args()?;
        add(conf, e, &args, PORT, &mut self.io())
    }

    fn del(&mut self, conf: &NetConf, e: &Env) -> CniResult<()> {
        del(conf, e, PORT, &mut self.io())
    }

    fn check(&mut self, conf: &NetConf, e: &Env, prev: &Value) -> CniResult<()> {
        let prev = CniOutput::parse(prev)?;
        check(conf, e, PORT, &prev, &mut self.io())
    }

    /// Nothing of an attachment is left: no port, no claim, no
    /// device-info file, no address.
    fn assert_clean(&self) {
        assert!(self.switchd.ports.borrow().is_empty(), "a port is left");
        assert_eq!(
            claimed_by(&self.state_dir(), &claim(&env("c1"))),
            Vec::<PciAddr>::new(),
            "a claim is left"
        );
        let files: Vec<_> = std::fs::read_dir(self.state_dir())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(files.is_empty(), "state files left: {files:?}");
        assert!(!self.devinfo().exists(), "device-info file left");
        assert!(!*self.ipam.allocated.borrow(), "address left allocated");
    }

    /// The requests the kernel got, as (GETLINK | SETLINK, ifindex, VF
    /// attributes).
    fn requests(&self) -> Vec<(&'static str, u32, Vec<LinkVfInfo>)> {
        self.kernel
            .requests
            .iter()
            .map(|m| match &m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(l)) => {
                    assert_eq!(
                        l.attributes,
                        vec![LinkAttribute::ExtMask(vec![
                            LinkExtentMask::Vf,
                            LinkExtentMask::SkipStats
                        ])]
                    );
                    ("GETLINK", l.header.index, Vec::new())
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l)) => {
                    let vfs = l
                        .attributes
                        .iter()
                        .flat_map(|a| match a {
                            LinkAttribute::VfInfoList(v) => v.clone(),
                            other => panic!("unexpected attribute {other:?}"),
                        })
                        .collect();
                    ("SETLINK", l.header.index, vfs)
                }
                other => panic!("unexpected request {other:?}"),
            })
            .collect()
    }
}

fn env(cid: &str) -> Env {
    Env {
        command: "ADD".into(),
        container_id: cid.into(),
        netns: "/var/run/netns/vm1".into(),
        ifname: "net1".into(),
        args: "K8S_POD_NAME=vm1;K8S_POD_NAMESPACE=prod".into(),
        path: String::new(),
    }
}

fn mac_bytes() -> [u8; 6] {
    MAC.parse::<MacAddr>().unwrap().0
}

#[test]
fn switchdev_add_check_del() {
    let mut n = Node::new(FixtureMode::Switchdev);
    let conf = n.conf(json!({
        "vlan": 100,
        "trunk": [{"id": 200}],
        "qos": {"ingressRate": 100000000, "egressRate": 50000000},
        "runtimeConfig": {"deviceID": "0000:18:02.0", "mac": MAC},
    }));
    let e = env("c1");
    let out = n.add(&conf, &e).unwrap();

    // The result names the representor and the VF (pciID: a 1.1 result).
    assert_eq!(
        out,
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "ens1f0_0"},
                {"name": "net1", "mac": MAC, "sandbox": "/var/run/netns/vm1",
                 "pciID": "0000:18:02.0"}
            ],
            "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    );
    // The port: the representor, attached by switchd, with the VF's PCI
    // address; switchd enforces the trunk and QoS there.
    let port = n.switchd.port(PORT).unwrap();
    assert_eq!(
        serde_json::to_value(&port.nic).unwrap(),
        json!({"kind": "vfio", "ifname": "ens1f0_0", "pciAddress": "0000:18:02.0",
               "eswitchMode": "switchdev"})
    );
    assert_eq!(port.mac.map(|m| m.to_string()).as_deref(), Some(MAC));
    assert_eq!(port.vlan.map(|v| v.get()), Some(100));
    assert!(port.trunk.is_some() && port.qos.is_some());
    let owner = port.owner.clone().unwrap();
    assert_eq!(owner.container_id.as_deref(), Some("c1"));
    assert_eq!(owner.pod_name.as_deref(), Some("vm1"));
    assert_eq!(owner.network.as_deref(), Some("sriov-net"));
    // The kernel: the VF read, then only its MAC and trust off set.
    assert_eq!(
        n.requests(),
        vec![
            ("GETLINK", PF_IFINDEX, vec![]),
            (
                "SETLINK",
                PF_IFINDEX,
                vec![LinkVfInfo(vec![
                    VfInfo::Mac(VfInfoMac::new(0, &mac_bytes())),
                    VfInfo::Trust(VfInfoTrust::new(0, false)),
                ])]
            ),
        ]
    );
    // The claim, and the device-info file Multus reads.
    let st = state::load(&n.state_dir(), &"0000:18:02.0".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(st.claim, claim(&e));
    assert_eq!(st.saved.mac, Some(MacAddr([0; 6])));
    let info: Value = serde_json::from_slice(&std::fs::read(n.devinfo()).unwrap()).unwrap();
    assert_eq!(
        info,
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.0",
               "pf-pci-address": "0000:18:00.0", "representor-device": "ens1f0_0"}})
    );

    // CHECK with the ADD's result; without the deviceID too (prevResult
    // names the VF).
    n.check(&conf, &e, &out).unwrap();
    let bare = n.conf(json!({"vlan": 100, "trunk": [{"id": 200}],
        "qos": {"ingressRate": 100000000, "egressRate": 50000000}}));
    n.check(&bare, &e, &out).unwrap();
    assert_eq!(*n.ipam.calls.borrow(), vec!["ADD", "CHECK", "CHECK"]);

    // DEL: port gone, the VF's MAC put back, claim and file gone, address
    // released; again: nothing more happens, still fine.
    n.kernel.requests.clear();
    n.del(&conf, &e).unwrap();
    assert_eq!(
        n.requests(),
        vec![(
            "SETLINK",
            PF_IFINDEX,
            vec![LinkVfInfo(vec![
                VfInfo::Mac(VfInfoMac::new(0, &[0; 6])),
                VfInfo::Trust(VfInfoTrust::new(0, false)),
            ])]
        )]
    );
    assert_eq!(n.kernel.vfs[&0].mac, Some(MacAddr([0; 6])));
    n.assert_clean();
    n.kernel.requests.clear();
    n.del(&conf, &e).unwrap();
    assert!(n.kernel.requests.is_empty(), "a second DEL touches no VF");
    assert_eq!(
        *n.switchd.calls.borrow(),
        vec![
            "POST".to_string(),
            format!("DELETE {PORT}"),
            format!("DELETE {PORT}")
        ]
    );
    n.assert_clean();
}

/// What a VF had before ADD in the legacy tests (someone configured it).
fn before() -> VfSettings {
    VfSettings {
        mac: Some("02:00:00:00:00:99".parse().unwrap()),
        vlan: Some(10),
        qos: Some(2),
        spoofchk: Some(false),
        trust: Some(true),
        link_state: Some(VfLinkState::Enable),
        min_tx_rate: Some(5),
        max_tx_rate: Some(100),
    }
}

#[test]
fn legacy_add_check_del() {
    let mut n = Node::new(FixtureMode::Legacy);
    n.kernel.vfs.insert(3, before());
    let conf = n.conf(json!({
        "vlan": 100,
        "macSpoofCheck": true,
        "linkState": "up",
        "qos": {"egressRate": 250000000, "egressBurst": 1000000},
        "deviceID": "0000:18:02.3",
    }));
    let mut e = env("c1");
    e.args = format!("IgnoreUnknown=1;MAC={MAC}");
    let out = n.add(&conf, &e).unwrap();
    assert_eq!(
        out["interfaces"],
        json!([{"name": "net1", "mac": MAC, "sandbox": "/var/run/netns/vm1",
                "pciID": "0000:18:02.3"}])
    );
    assert_eq!(out["ips"][0]["interface"], 0);
    // The port records the VF; switchd never attaches it.
    let port = n.switchd.port(PORT).unwrap();
    assert_eq!(
        serde_json::to_value(&port.nic).unwrap(),
        json!({"kind": "vfio", "pciAddress": "0000:18:02.3", "eswitchMode": "legacy"})
    );
    assert!(!port.nic.attaches());
    // The PF enforces the port: every VF attribute in one request.
    assert_eq!(
        n.requests()[1],
        (
            "SETLINK",
            PF_IFINDEX,
            vec![LinkVfInfo(vec![
                VfInfo::Mac(VfInfoMac::new(3, &mac_bytes())),
                VfInfo::Vlan(VfInfoVlan::new(3, 100, 0)),
                VfInfo::Rate(VfInfoRate::new(3, 0, 250)),
                VfInfo::SpoofCheck(VfInfoSpoofCheck::new(3, true)),
                VfInfo::LinkState(VfInfoLinkState::new(3, NlLinkState::Auto)),
                VfInfo::Trust(VfInfoTrust::new(3, false)),
            ])]
        )
    );
    let info: Value = serde_json::from_slice(&std::fs::read(n.devinfo()).unwrap()).unwrap();
    assert_eq!(
        info["pci"],
        json!({"pci-address": "0000:18:02.3", "pf-pci-address": "0000:18:00.0"})
    );
    // CHECK passes (an unattached legacy port is as it should be), and
    // finds drift on the VF.
    n.check(&conf, &e, &out).unwrap();
    n.kernel.vfs.get_mut(&3).unwrap().vlan = Some(7);
    let err = n.check(&conf, &e, &out).unwrap_err();
    assert_eq!(err.msg, "VF 0000:18:02.3: vlan is 7, expected 100");
    n.kernel.vfs.get_mut(&3).unwrap().vlan = Some(100);
    // A port that changed under us.
    n.switchd.ports.borrow_mut().get_mut(PORT).unwrap().vlan = None;
    let err = n.check(&conf, &e, &out).unwrap_err();
    assert!(err.msg.contains("different VLAN"), "{}", err.msg);
    // DEL puts back everything the VF had.
    n.del(&conf, &e).unwrap();
    assert_eq!(n.kernel.vfs[&3], before());
    n.assert_clean();
}

#[test]
fn legacy_mode_refuses_what_it_cannot_enforce_before_doing_anything() {
    let mut n = Node::new(FixtureMode::Legacy);
    let conf = n.conf(json!({"deviceID": "0000:18:02.3", "trunk": [{"id": 5}],
                             "dhcpGuard": true}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
    assert_eq!(
        err.msg,
        "an SR-IOV VF in legacy eswitch mode cannot enforce a trunk, dhcpGuard; put the PF \
         in switchdev mode or drop the setting"
    );
    assert!(n.kernel.requests.is_empty());
    assert!(n.switchd.calls.borrow().is_empty());
    assert!(n.ipam.calls.borrow().is_empty());
    n.assert_clean();
}

#[test]
fn bad_device_ids() {
    let mut n = Node::new(FixtureMode::Switchdev);
    let cases: [(Value, u32, &str); 7] = [
        (
            json!({}),
            code::INVALID_CONFIG,
            "\"endpoint\": \"vfio\" needs the VF's PCI address: runtimeConfig.deviceID",
        ),
        (
            json!({"runtimeConfig": {"deviceID": "18:02.0"}}),
            code::INVALID_CONFIG,
            "runtimeConfig.deviceID: \"18:02.0\" is not a PCI address (expected \
             domain:bus:device.function, e.g. 0000:18:02.5)",
        ),
        (
            json!({"runtimeConfig": {"deviceID": "0000:19:02.0"}}),
            code::INVALID_CONFIG,
            "no PCI device 0000:19:02.0 on this node",
        ),
        (
            json!({"deviceID": "0000:00:1f.0"}),
            code::INVALID_CONFIG,
            "PCI device 0000:00:1f.0 is not an SR-IOV virtual function",
        ),
        (
            json!({"deviceID": "0000:18:00.0"}),
            code::INVALID_CONFIG,
            "it is a physical function; pass one of its VFs",
        ),
        (
            json!({"deviceID": "0000:18:0a.0"}),
            code::INVALID_CONFIG,
            "physical function 0000:18:00.1 of 0000:18:0a.0 has no SR-IOV: it has no \
             sriov_totalvfs",
        ),
        (
            json!({"deviceID": "0000:3b:02.0"}),
            code::PLUGIN,
            "physical function 0000:3b:00.0 of VF 0000:3b:02.0 has no network interface",
        ),
    ];
    for (extra, c, words) in cases {
        let err = n.add(&n.conf(extra.clone()), &env("c1")).unwrap_err();
        assert_eq!(err.code, c, "{extra}: {err}");
        assert!(err.msg.contains(words), "{extra}: {}", err.msg);
        // A DEL after it is fine, and there is nothing to undo.
        n.del(&n.conf(extra), &env("c1")).unwrap();
    }
    assert!(n.kernel.requests.is_empty());
    assert!(!n.ipam.calls.borrow().contains(&"ADD"));
    assert!(!n.switchd.calls.borrow().contains(&"POST".to_string()));
    n.assert_clean();
    // runtimeConfig.deviceID wins over deviceID.
    let conf = n.conf(json!({"deviceID": "0000:18:02.0",
                             "runtimeConfig": {"deviceID": "0000:18:02.3"}}));
    let out = n.add(&conf, &env("c1")).unwrap();
    assert_eq!(out["interfaces"][1]["pciID"], "0000:18:02.3");
    // A relative device-info path from the runtime.
    let conf = n.conf(json!({"runtimeConfig": {"deviceID": "0000:18:02.1",
                                               "CNIDeviceInfoFile": "x/y"}}));
    let err = n.add(&conf, &env("c2")).unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
    assert!(err.msg.contains("must be an absolute path"), "{}", err.msg);
}

#[test]
fn a_vf_another_container_holds_is_refused_untouched() {
    let mut n = Node::new(FixtureMode::Switchdev);
    let conf = n.conf(json!({"deviceID": "0000:18:02.0"}));
    n.add(&conf, &env("c1")).unwrap();
    let (reqs, posts) = (n.kernel.requests.len(), n.switchd.calls.borrow().len());
    *n.ipam.allocated.borrow_mut() = false;
    let err = n.add(&conf, &env("c2")).unwrap_err();
    assert_eq!(err.code, code::PLUGIN);
    assert_eq!(
        err.msg,
        "VF 0000:18:02.0 is already in use by container c1 (interface net1)"
    );
    assert_eq!(n.kernel.requests.len(), reqs, "the VF was not touched");
    assert_eq!(n.switchd.calls.borrow().len(), posts, "no port for c2");
    assert_eq!(n.ipam.calls.borrow().len(), 1, "no address for c2");
    // c2's DEL (the runtime cleans up the failed ADD) leaves c1's VF be.
    n.del(&conf, &env("c2")).unwrap();
    assert_eq!(n.kernel.requests.len(), reqs);
    assert_eq!(
        claimed_by(&n.state_dir(), &claim(&env("c1"))),
        vec!["0000:18:02.0".parse::<PciAddr>().unwrap()]
    );
}

#[test]
fn a_refused_vf_setting_rolls_everything_back() {
    let mut n = Node::new(FixtureMode::Legacy);
    n.kernel.vfs.insert(3, before());
    n.kernel.fail_setlinks = vec![libc::EOPNOTSUPP];
    let conf = n.conf(json!({"deviceID": "0000:18:02.3", "vlan": 100}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert_eq!(err.code, code::PLUGIN);
    assert!(
        err.msg.starts_with(
            "configuring VF 0000:18:02.3 (VF 3 of PF ens1f0): setting the VF (RTM_SETLINK) on \
             PF ifindex 4: "
        ),
        "{}",
        err.msg
    );
    // The refused request, then the saved values put back.
    let r = n.requests();
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(n.kernel.vfs[&3], before());
    assert_eq!(
        *n.switchd.calls.borrow(),
        vec!["POST".to_string(), format!("DELETE {PORT}")]
    );
    assert_eq!(*n.ipam.calls.borrow(), vec!["ADD", "DEL"]);
    n.assert_clean();
    n.del(&conf, &env("c1")).unwrap();
    n.assert_clean();
}

#[test]
fn a_late_failure_restores_the_vf() {
    // The device-info file cannot be written (its directory is a file):
    // the VF was set already, and is put back.
    let mut n = Node::new(FixtureMode::Legacy);
    n.kernel.vfs.insert(3, before());
    std::fs::write(n.dirs.path().join("devinfo"), "a file").unwrap();
    let conf = n.conf(json!({"deviceID": "0000:18:02.3", "vlan": 100}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert_eq!(err.code, code::IO);
    assert!(err.msg.starts_with("device-info file "), "{}", err.msg);
    let sets: Vec<_> = n
        .requests()
        .into_iter()
        .filter(|r| r.0 == "SETLINK")
        .collect();
    assert_eq!(sets.len(), 2, "applied, then restored: {sets:?}");
    assert_eq!(n.kernel.vfs[&3], before());
    std::fs::remove_file(n.dirs.path().join("devinfo")).unwrap();
    n.assert_clean();
}

#[test]
fn failures_before_the_vf_leave_it_alone() {
    // switchd refuses the port.
    let mut n = Node::new(FixtureMode::Switchdev);
    n.switchd.fail_create = Some(CniError::new(
        code::INVALID_CONFIG,
        "switchd refused the port",
    ));
    let conf = n.conf(json!({"deviceID": "0000:18:02.0"}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert_eq!(err.msg, "switchd refused the port");
    assert!(n.kernel.requests.is_empty());
    assert_eq!(*n.ipam.calls.borrow(), vec!["ADD", "DEL"]);
    n.assert_clean();
    // IPAM fails.
    let mut n = Node::new(FixtureMode::Switchdev);
    n.ipam.fail_add = true;
    let conf = n.conf(json!({"deviceID": "0000:18:02.0"}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert!(err.msg.contains("no IP addresses available"), "{}", err.msg);
    assert!(n.kernel.requests.is_empty());
    assert!(n.switchd.calls.borrow().is_empty());
    n.assert_clean();
    // macSpoofCheck without a MAC.
    let mut n = Node::new(FixtureMode::Switchdev);
    let conf = n.conf(json!({"deviceID": "0000:18:02.0", "macSpoofCheck": true}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
    assert!(err
        .msg
        .starts_with("macSpoofCheck on a vfio endpoint needs its MAC"));
    assert!(n.switchd.calls.borrow().is_empty() && n.kernel.requests.is_empty());
    // A multicast MAC.
    let conf = n.conf(json!({"deviceID": "0000:18:02.0",
                             "runtimeConfig": {"mac": "01:00:5e:00:00:01"}}));
    let err = n.add(&conf, &env("c1")).unwrap_err();
    assert_eq!(
        err.msg,
        "runtimeConfig.mac: 01:00:5e:00:00:01 is not a unicast MAC"
    );
}

#[test]
fn del_finds_the_vf_by_its_claim_and_tolerates_junk() {
    let mut n = Node::new(FixtureMode::Legacy);
    n.kernel.vfs.insert(1, before());
    let conf = n.conf(json!({"runtimeConfig": {"deviceID": "0000:18:02.1"}}));
    n.add(&conf, &env("c1")).unwrap();
    // Junk beside the claim: another attachment's file, a corrupt one, a
    // stray name.
    let dir = n.state_dir();
    std::fs::write(dir.join("0000:18:02.2.json"), "{").unwrap();
    std::fs::write(dir.join("notes.json"), "{}").unwrap();
    // DEL without the deviceID (the runtime may not pass it again).
    let bare = n.conf(json!({}));
    n.del(&bare, &env("c1")).unwrap();
    assert_eq!(n.kernel.vfs[&1], before());
    assert!(!dir.join("0000:18:02.1.json").exists());
    assert!(dir.join("0000:18:02.2.json").exists(), "not ours: kept");
}

#[test]
fn a_vf_that_is_gone_is_released_on_del() {
    let mut n = Node::new(FixtureMode::Switchdev);
    let conf = n.conf(json!({"deviceID": "0000:18:02.2"}));
    n.add(&conf, &env("c1")).unwrap();
    // sriov_numvfs lowered: the VF and its links are gone.
    std::fs::remove_file(n.fx.root().join("bus/pci/devices/0000:18:02.2")).unwrap();
    n.kernel.requests.clear();
    n.del(&conf, &env("c1")).unwrap();
    assert!(n.kernel.requests.is_empty());
    n.assert_clean();
}

#[test]
fn default_paths() {
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"sriov-net","type":"podswitch","endpoint":"vfio"}"#,
    )
    .unwrap();
    let p = Paths::of(&conf, &env("abc"));
    assert_eq!(
        p,
        Paths {
            sysfs_root: "/sys".into(),
            state_dir: "/var/lib/cni/podswitch/vfio".into(),
            device_info_file: "/var/run/k8s.cni.cncf.io/devinfo/cni/sriov-net-abc_net1".into(),
        }
    );
}

#[test]
fn check_needs_the_vf_in_the_sandbox_and_the_same_vf() {
    let mut n = Node::new(FixtureMode::Switchdev);
    let conf = n.conf(json!({"deviceID": "0000:18:02.0"}));
    let e = env("c1");
    let out = n.add(&conf, &e).unwrap();
    let other = n.conf(json!({"deviceID": "0000:18:02.3"}));
    let err = n.check(&other, &e, &out).unwrap_err();
    assert_eq!(
        err.msg,
        "prevResult names VF 0000:18:02.0 for net1, the configuration 0000:18:02.3"
    );
    let err = n.check(&conf, &e, &json!({"interfaces": []})).unwrap_err();
    assert_eq!(err.msg, "prevResult has no interface net1 in a sandbox");
    // The representor detached (switchd lost it).
    n.switchd
        .ports
        .borrow_mut()
        .get_mut(PORT)
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .attached = false;
    let err = n.check(&conf, &e, &out).unwrap_err();
    assert!(err.msg.contains("is not attached"), "{}", err.msg);
}
