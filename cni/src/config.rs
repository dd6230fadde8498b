//! The plugin's input: the network configuration on stdin and the CNI_*
//! environment. Strict on podswitch's own fields (a typo in `vlan` must not
//! put a pod on the wrong network), accepting every standard CNI key.

use crate::reply::{code, CniError, CniResult, SUPPORTED};
use podswitch_shared::model::{AclAction, AclRule, LinkState, MacAddr, Qos, TrunkRange, VlanId};
use podswitch_shared::DEFAULT_SOCKET;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// podswitch's own keys.
const OWN_KEYS: &[&str] = &[
    "switch",
    "socket",
    "mtu",
    "vlan",
    "trunk",
    "pvlan",
    "macSpoofCheck",
    "ipSpoofCheck",
    "priority",
    "portMirroring",
    "linkState",
    "qos",
    "dhcpGuard",
    "routerGuard",
    "stormLimit",
    "acls",
    "aclDefault",
    "gro",
    "endpoint",
    "tapOwner",
    "deviceID",
    "sysfsRoot",
    "vfStateDir",
];

/// Keys the CNI spec or libcni may put in a plugin's configuration.
const STANDARD_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "ipam",
    "dns",
    "args",
    "capabilities",
    "runtimeConfig",
    "prevResult",
    "disableCheck",
    "disableGC",
    "cni.dev/valid-attachments",
];

/// Largest MTU switchd's data path carries (one constant with the API's).
pub use podswitch_shared::model::{MAX_MTU, MIN_MTU};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `runtimeConfig`: what the runtime fills in for declared capabilities.
/// Unknown keys here are ignored: they belong to other plugins' capabilities.
/// (`ips` is read by the IPAM plugin itself from the configuration we pass on.)
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub mac: Option<String>,
    /// The `bandwidth` capability: overrides the configured rates.
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// The `deviceID` capability: the VF's PCI address, from the SR-IOV
    /// device plugin through Multus.
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    /// The `CNIDeviceInfoFile` capability: where to write the Device
    /// Information file of a `vfio` attachment (NPWG device-info spec).
    #[serde(default, rename = "CNIDeviceInfoFile")]
    pub cni_device_info_file: Option<PathBuf>,
}

/// What the plugin creates for the pod or VM.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A veth pair: the pod's interface, its host end a switch port.
    #[default]
    Veth,
    /// A tap named CNI_IFNAME in the container's netns, for a VMM to open;
    /// switchd attaches it where it lives.
    Tap,
    /// An SR-IOV VF (by PCI address) handed to a VM through vfio.
    Vfio,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Veth => "veth",
            EndpointKind::Tap => "tap",
            EndpointKind::Vfio => "vfio",
        }
    }
}

/// `tapOwner`: who may open the tap (an unprivileged VMM).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TapOwner {
    pub uid: u32,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// `runtimeConfig.bandwidth` (bits per second and bits, as the reference
/// `bandwidth` plugin reads it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default)]
    pub ingress_rate: Option<u64>,
    #[serde(default)]
    pub ingress_burst: Option<u64>,
    #[serde(default)]
    pub egress_rate: Option<u64>,
    #[serde(default)]
    pub egress_burst: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub switch: Option<String>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub vlan: Option<VlanId>,
    #[serde(default)]
    pub trunk: Option<Vec<TrunkRange>>,
    /// A private VLAN port: `{"mode": "isolated"|"community", "primaryID",
    /// "secondaryID"}` or `{"mode": "promiscuous", "primaryID", "secondaryIDs"}`.
    #[serde(default)]
    pub pvlan: Option<podswitch_shared::model::Pvlan>,
    #[serde(default)]
    pub mac_spoof_check: Option<bool>,
    /// The IP/ARP/ND spoof guard; the port's allowedIPs are IPAM's addresses.
    #[serde(default)]
    pub ip_spoof_check: Option<bool>,
    /// 802.1p: `{"mode": "trust"|"reset"|"set", "pcp": 0..7}`.
    #[serde(default)]
    pub priority: Option<podswitch_shared::model::Priority>,
    /// Port mirroring: `"none"`, `"source"` or `"destination"`.
    #[serde(default)]
    pub port_mirroring: Option<podswitch_shared::model::PortMirroring>,
    #[serde(default)]
    pub link_state: Option<LinkState>,
    #[serde(default)]
    pub qos: Option<Qos>,
    #[serde(default)]
    pub dhcp_guard: Option<bool>,
    #[serde(default)]
    pub router_guard: Option<bool>,
    #[serde(default)]
    pub storm_limit: Option<u32>,
    #[serde(default)]
    pub acls: Option<Vec<AclRule>>,
    #[serde(default)]
    pub acl_default: Option<AclAction>,
    /// Receive offload on the pod's interface (default on): GRO in a
    /// threaded NAPI on the pod end, TSO off on the host end, so frames
    /// switchd sends reach the pod's TCP merged (TCP about 1.3x faster,
    /// round trip about 14 us longer; bench/RESULTS-offloads.md).
    #[serde(default)]
    pub gro: Option<bool>,
    /// `veth` (default), `tap` or `vfio`.
    #[serde(default)]
    pub endpoint: EndpointKind,
    #[serde(default)]
    pub tap_owner: Option<TapOwner>,
    /// The VF's PCI address (`vfio`); `runtimeConfig.deviceID` wins.
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    /// Where sysfs is (`vfio`; default `/sys`): a test's generated tree,
    /// or a node that mounts it elsewhere.
    #[serde(default)]
    pub sysfs_root: Option<PathBuf>,
    /// Where `vfio` keeps one file per claimed VF: who holds it and its
    /// settings from before ADD, which DEL puts back (default
    /// `/var/lib/cni/podswitch/vfio`).
    #[serde(default)]
    pub vf_state_dir: Option<PathBuf>,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The exact bytes we were given, for delegating to IPAM.
    #[serde(skip)]
    pub raw: Value,
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(!ca.eq_ignore_ascii_case(cb));
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggestion(key: &str) -> String {
    OWN_KEYS
        .iter()
        .chain(STANDARD_KEYS)
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

impl NetConf {
    /// Parses stdin. Undecodable JSON is code 6; a valid document that is
    /// not a valid podswitch config is code 7; an unsupported version is 1.
    pub fn parse(stdin: &[u8]) -> CniResult<NetConf> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration on stdin",
            )
            .with_details(e.to_string())
        })?;
        let obj = raw.as_object().ok_or_else(|| {
            CniError::new(
                code::DECODE,
                "the network configuration on stdin is not a JSON object",
            )
        })?;
        for key in obj.keys() {
            if !OWN_KEYS.contains(&key.as_str()) && !STANDARD_KEYS.contains(&key.as_str()) {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "unknown field {key:?} in the podswitch network configuration{}",
                        suggestion(key)
                    ),
                ));
            }
        }
        let mut conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid podswitch network configuration",
            )
            .with_details(e.to_string())
        })?;
        conf.raw = raw;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> CniResult<()> {
        let invalid = |m: String| Err(CniError::new(code::INVALID_CONFIG, m));
        if !SUPPORTED.contains(&self.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported; podswitch speaks {}",
                    self.cni_version,
                    SUPPORTED.join(", ")
                ),
            ));
        }
        if self.plugin_type.is_empty() {
            return invalid("the network configuration needs a \"type\"".into());
        }
        if self.name.is_empty() {
            return invalid("the network configuration needs a \"name\"".into());
        }
        if let Some(m) = self.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&m) {
                return invalid(format!(
                    "mtu {m} is outside {MIN_MTU}..{MAX_MTU} (the AF_XDP data path's limit)"
                ));
            }
        }
        if self.trunk.as_ref().is_some_and(|t| t.is_empty()) {
            return invalid("trunk lists no VLAN; omit it for an access port".into());
        }
        if let Some(s) = &self.switch {
            podswitch_shared::model::check_object_name("switch name", s)
                .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
        }
        if let Some(p) = &self.pvlan {
            if self.vlan.is_some() || self.trunk.is_some() {
                return invalid(
                    "pvlan excludes vlan and trunk: a private VLAN port is untagged on its own VLANs"
                        .into(),
                );
            }
            p.validate()
                .map_err(|e| CniError::new(code::INVALID_CONFIG, e))?;
        }
        if let Some(p) = &self.priority {
            p.validate()
                .map_err(|e| CniError::new(code::INVALID_CONFIG, e))?;
        }
        if let Some(q) = self.effective_qos() {
            q.validate()
                .map_err(|e| CniError::new(code::INVALID_CONFIG, e))?;
        }
        if self.tap_owner.is_some() && self.endpoint != EndpointKind::Tap {
            return invalid(format!(
                "tapOwner is for \"endpoint\": \"tap\" (this endpoint is {:?})",
                self.endpoint.as_str()
            ));
        }
        for (set, key) in [
            (self.device_id.is_some(), "deviceID"),
            (self.sysfs_root.is_some(), "sysfsRoot"),
            (self.vf_state_dir.is_some(), "vfStateDir"),
        ] {
            if set && self.endpoint != EndpointKind::Vfio {
                return invalid(format!(
                    "{key} is for \"endpoint\": \"vfio\" (this endpoint is {:?})",
                    self.endpoint.as_str()
                ));
            }
        }
        for (path, key) in [
            (&self.sysfs_root, "sysfsRoot"),
            (&self.vf_state_dir, "vfStateDir"),
        ] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_absolute()) {
                return invalid(format!("{key} must be an absolute path, not {p:?}"));
            }
        }
        if let Some(d) = &self.device_id {
            if !podswitch_shared::model::is_pci_address(d) {
                return invalid(format!(
                    "deviceID {d:?} is not a PCI address (expected domain:bus:device.function, \
                     e.g. 0000:18:02.5)"
                ));
            }
        }
        if let Some(ipam) = &self.ipam {
            if ipam
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return invalid("ipam needs a \"type\" (e.g. \"host-local\")".into());
            }
        }
        Ok(())
    }

    /// The port's QoS: `qos` with `runtimeConfig.bandwidth` (the runtime's
    /// per-pod request, e.g. the kubernetes.io/ingress-bandwidth annotation)
    /// taking precedence for the rates it sets. Zero rates mean "no limit".
    pub fn effective_qos(&self) -> Option<Qos> {
        let mut q = self.qos.clone().unwrap_or_default();
        if let Some(b) = &self.runtime_config.bandwidth {
            let pick = |rate: Option<u64>,
                        burst: Option<u64>,
                        r: &mut Option<u64>,
                        bu: &mut Option<u64>| {
                if let Some(rate) = rate.filter(|r| *r > 0) {
                    *r = Some(rate);
                    *bu = burst.filter(|b| *b > 0);
                }
            };
            pick(
                b.ingress_rate,
                b.ingress_burst,
                &mut q.ingress_rate,
                &mut q.ingress_burst,
            );
            pick(
                b.egress_rate,
                b.egress_burst,
                &mut q.egress_rate,
                &mut q.egress_burst,
            );
        }
        (!q.is_empty()).then_some(q)
    }

    /// The port ADD registers: this configuration's settings on `nic`,
    /// owned by the container the runtime named.
    pub fn port(
        &self,
        env: &Env,
        args: &Args,
        id: &str,
        nic: podswitch_shared::model::Nic,
        mac: Option<MacAddr>,
    ) -> podswitch_shared::model::PortConfig {
        podswitch_shared::model::PortConfig {
            id: Some(id.to_string()),
            switch: Some(self.switch()),
            nic,
            mac,
            vlan: self.vlan,
            trunk: self.trunk.clone(),
            pvlan: self.pvlan.clone(),
            mac_spoof_check: self.mac_spoof_check,
            ip_spoof_check: self.ip_spoof_check,
            // Filled in once IPAM has answered (ADD registers the port
            // while IPAM runs).
            allowed_ips: None,
            link_state: self.link_state,
            qos: self.effective_qos(),
            priority: self.priority,
            dhcp_guard: self.dhcp_guard,
            router_guard: self.router_guard,
            storm_limit: self.storm_limit,
            acls: self.acls.clone(),
            acl_default: self.acl_default,
            port_mirroring: self.port_mirroring,
            owner: Some(podswitch_shared::model::Owner {
                container_id: Some(env.container_id.clone()),
                ifname: Some(env.ifname.clone()),
                netns: Some(env.netns.clone()),
                pod_name: args.pod_name.clone(),
                pod_namespace: args.pod_namespace.clone(),
                network: Some(self.name.clone()),
            }),
        }
    }

    /// The endpoint's MAC: `runtimeConfig.mac`, else CNI_ARGS `MAC`; none
    /// leaves the interface's own. Must be unicast.
    pub fn wanted_mac(&self, args: &Args) -> CniResult<Option<MacAddr>> {
        let (mac, what) = match (&self.runtime_config.mac, args.mac) {
            (Some(m), _) => (
                m.parse::<MacAddr>().map_err(|e| {
                    CniError::new(code::INVALID_CONFIG, format!("runtimeConfig.mac: {e}"))
                })?,
                "runtimeConfig.mac",
            ),
            (None, Some(m)) => (m, "CNI_ARGS MAC"),
            (None, None) => return Ok(None),
        };
        if !mac.is_unicast() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("{what}: {mac} is not a unicast MAC"),
            ));
        }
        Ok(Some(mac))
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    pub fn switch(&self) -> String {
        self.switch.clone().unwrap_or_else(|| "default".into())
    }

    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
    }

    /// The configuration as handed to the IPAM plugin: the same document,
    /// at a version the reference IPAM plugins accept for this command.
    pub fn for_ipam(&self, version: &str) -> Vec<u8> {
        let mut v = self.raw.clone();
        v["cniVersion"] = Value::String(version.into());
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// The CNI_* environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

/// CNI_ARGS that podswitch reads.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub mac: Option<MacAddr>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl Env {
    pub fn from_env() -> Env {
        let get = |k: &str| std::env::var(k).unwrap_or_default();
        Env {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    /// Checks the variables `command` needs (code 4 when one is missing).
    pub fn require(&self, need_netns: bool) -> CniResult<()> {
        let missing = |v: &str| {
            Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "{v} is not set; the runtime must set it for {}",
                    self.command
                ),
            ))
        };
        if self.container_id.is_empty() {
            return missing("CNI_CONTAINERID");
        }
        if self.ifname.is_empty() {
            return missing("CNI_IFNAME");
        }
        if need_netns && self.netns.is_empty() {
            return missing("CNI_NETNS");
        }
        if self.container_id.len() > 512 || self.container_id.contains(['/', '\0', '\n']) {
            return Err(CniError::new(
                code::INVALID_ENV,
                "CNI_CONTAINERID has characters a container ID cannot have",
            ));
        }
        podswitch_shared::model::check_ifname(&self.ifname)
            .map_err(|e| CniError::new(code::INVALID_ENV, format!("CNI_IFNAME: {e}")))?;
        Ok(())
    }

    /// Parses CNI_ARGS (`K=V;K=V`). Unknown keys are an error unless
    /// `IgnoreUnknown` is set, as in the reference plugins.
    pub fn parse_args(&self) -> CniResult<Args> {
        let mut kv = BTreeMap::new();
        for part in self.args.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS entry {part:?} is not KEY=VALUE"),
                )
            })?;
            kv.insert(k.to_string(), v.to_string());
        }
        let ignore_unknown = kv
            .get("IgnoreUnknown")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
        let known = [
            "IgnoreUnknown",
            "K8S_POD_NAME",
            "K8S_POD_NAMESPACE",
            "K8S_POD_INFRA_CONTAINER_ID",
            "K8S_POD_UID",
            "MAC",
            "IP",
        ];
        if !ignore_unknown {
            if let Some(k) = kv.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_ARGS key {k:?} (set IgnoreUnknown=1 to ignore it)"),
                ));
            }
        }
        let mac = kv
            .get("MAC")
            .map(|m| {
                m.parse::<MacAddr>()
                    .map_err(|e| CniError::new(code::INVALID_ENV, format!("CNI_ARGS MAC: {e}")))
            })
            .transpose()?;
        Ok(Args {
            mac,
            pod_name: kv.get("K8S_POD_NAME").cloned(),
            pod_namespace: kv.get("K8S_POD_NAMESPACE").cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CniResult<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"podswitch","switch":"default","socket":"/x.sock",
                "mtu":1500,"vlan":100,"trunk":[{"minID":200,"maxID":299},{"id":400}],
                "macSpoofCheck":true,"linkState":"up",
                "ipam":{"type":"host-local","ranges":[[{"subnet":"10.10.0.0/24"}]]},
                "capabilities":{"mac":true},"runtimeConfig":{"mac":"02:00:00:00:00:01","portMappings":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.vlan.map(|v| v.get()), Some(100));
        assert_eq!(c.trunk.as_ref().map(|t| t.len()), Some(2));
        assert_eq!(c.runtime_config.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(c.ipam_type(), Some("host-local"));
    }

    #[test]
    fn typo_is_an_error_with_a_suggestion() {
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"podswitch","vlam":100}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.msg.contains("\"vlam\"") && e.msg.contains("did you mean \"vlan\""),
            "{}",
            e.msg
        );
    }

    #[test]
    fn codes() {
        assert_eq!(parse("{not json").unwrap_err().code, code::DECODE);
        assert_eq!(parse("[1]").unwrap_err().code, code::DECODE);
        assert_eq!(
            parse(r#"{"cniVersion":"0.2.0","name":"n","type":"podswitch"}"#)
                .unwrap_err()
                .code,
            code::INCOMPATIBLE_VERSION
        );
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"podswitch","vlan":5000}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.details.contains("5000"), "{e:?}");
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"podswitch","mtu":9001}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e =
            parse(r#"{"cniVersion":"1.0.0","name":"n","type":"podswitch","ipam":{}}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap deterministic fuzz: mutations of a valid config.
        let base = br#"{"cniVersion":"1.0.0","name":"n","type":"podswitch","vlan":100,"trunk":[{"id":5}],"qos":{"egressRate":10},"ipam":{"type":"host-local"}}"#;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut b = base.to_vec();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % b.len();
                b[i] = (seed >> 32) as u8;
            }
            let _ = NetConf::parse(&b);
        }
    }

    #[test]
    fn vfio_keys_only_on_vfio_endpoints() {
        let base = r#""cniVersion":"1.0.0","name":"n","type":"podswitch""#;
        let c = parse(&format!(
            r#"{{{base},"endpoint":"vfio","deviceID":"0000:18:02.0","sysfsRoot":"/tmp/sys",
                "vfStateDir":"/tmp/vf","runtimeConfig":{{"deviceID":"0000:18:02.1",
                "CNIDeviceInfoFile":"/run/x"}}}}"#
        ))
        .unwrap();
        assert_eq!(
            c.sysfs_root.as_deref(),
            Some(std::path::Path::new("/tmp/sys"))
        );
        assert_eq!(
            c.vf_state_dir.as_deref(),
            Some(std::path::Path::new("/tmp/vf"))
        );
        assert_eq!(c.runtime_config.device_id.as_deref(), Some("0000:18:02.1"));
        assert_eq!(
            c.runtime_config.cni_device_info_file.as_deref(),
            Some(std::path::Path::new("/run/x"))
        );
        for (extra, words) in [
            (
                r#""sysfsRoot":"/sys""#,
                "sysfsRoot is for \"endpoint\": \"vfio\" (this endpoint is \"veth\")",
            ),
            (
                r#""endpoint":"tap","vfStateDir":"/x""#,
                "vfStateDir is for \"endpoint\": \"vfio\" (this endpoint is \"tap\")",
            ),
            (
                r#""endpoint":"vfio","sysfsRoot":"sys""#,
                "sysfsRoot must be an absolute path",
            ),
            (
                r#""endpoint":"vfio","deviceID":"18:02.0""#,
                "deviceID \"18:02.0\" is not a PCI address",
            ),
            (
                r#""endpoint":"vfio","vfStateDirs":"/x""#,
                "did you mean \"vfStateDir\"",
            ),
        ] {
            let e = parse(&format!("{{{base},{extra}}}")).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}");
            assert!(e.msg.contains(words), "{extra}: {}", e.msg);
        }
        // The runtime's deviceID and device-info path come with every
        // plugin's capabilities: not an error elsewhere.
        parse(&format!(
            r#"{{{base},"runtimeConfig":{{"deviceID":"x","CNIDeviceInfoFile":"/run/x"}}}}"#
        ))
        .unwrap();
    }

    #[test]
    fn pvlan_field() {
        let base = r#""cniVersion":"1.0.0","name":"n","type":"podswitch""#;
        let c = parse(&format!(
            r#"{{{base},"pvlan":{{"mode":"promiscuous","primaryID":100,"secondaryIDs":[101,102]}}}}"#
        ))
        .unwrap();
        assert_eq!(
            c.pvlan.as_ref().map(|p| p.to_string()).as_deref(),
            Some("promiscuous:100:101,102")
        );
        for (extra, words) in [
            (
                r#""pvlan":{"mode":"isolated","primaryID":100,"secondaryID":100}"#,
                "differs from its primary",
            ),
            (
                r#""pvlan":{"mode":"promiscuous","primaryID":100,"secondaryIDs":[]}"#,
                "needs secondaryIDs",
            ),
            (
                r#""vlan":5,"pvlan":{"mode":"isolated","primaryID":100,"secondaryID":101}"#,
                "pvlan excludes vlan and trunk",
            ),
            (
                r#""pvlan":{"mode":"isolated","primaryID":100,"secondaryID":4095}"#,
                "4095",
            ),
            (
                r#""pvlan":{"mode":"isolated","primaryID":100,"secondary":101}"#,
                "secondary",
            ),
        ] {
            let e = parse(&format!("{{{base},{extra}}}")).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}");
            assert!(
                e.msg.contains(words) || e.details.contains(words),
                "{extra}: {e:?}"
            );
        }
    }

    #[test]
    fn cni_args() {
        let mut env = Env {
            args: "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=prod;MAC=02:00:00:00:00:09;FOO=1".into(),
            ..Default::default()
        };
        let a = env.parse_args().unwrap();
        assert_eq!(a.pod_name.as_deref(), Some("web"));
        assert_eq!(
            a.mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:00:09")
        );
        env.args = "FOO=1".into();
        assert_eq!(env.parse_args().unwrap_err().code, code::INVALID_ENV);
        env.args = "MAC=zz".into();
        assert_eq!(env.parse_args().unwrap_err().code, code::INVALID_ENV);
    }
}
