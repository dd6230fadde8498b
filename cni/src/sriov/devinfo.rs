//! The Device Information file, from the Kubernetes Network Plumbing
//! Working Group's "Device Information Specification" version 1.1.0
//! (github.com/k8snetworkplumbingwg/device-info-spec, SPEC.md):
//!
//! - §3: a JSON map with `type` (`"pci"` here), `version` (`"1.1.0"`) and,
//!   for PCI devices, `pci` with `pci-address` (required, `dddd:BB:DD.f`)
//!   and the optional `pf-pci-address`, `representor-device` (the VF's
//!   representor netdev), `rdma-device`, `vhost-net`.
//! - §4.2: a CNI plugin's file lives in `/var/run/k8s.cni.cncf.io/devinfo/cni/`
//!   under a name unique per attachment; the plugin creates the directory
//!   when missing. §5: the runtime passes the path as
//!   `runtimeConfig.CNIDeviceInfoFile` when the plugin declares the
//!   `CNIDeviceInfoFile` capability, and the file may already hold what the
//!   device plugin wrote (§5.1.2), which we complete rather than replace.
//! - Multus names the file `<network>-<containerID>_<ifname>` with `/`
//!   replaced by `-` (multus-cni pkg/types/conf.go, and
//!   network-attachment-definition-client's `GetCNIDeviceInfoPath`);
//!   [`file_name`] does the same for when no path was passed.
//!
//! The spec makes the NPWG implementation delete the file on DEL; the
//! plugin deleting it too ([`remove`]) is harmless, and [`remove`] is
//! idempotent.

use super::sysfs::Vf;
use super::SriovError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where CNI plugins' Device Information files live (spec §4.2).
pub const DEFAULT_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/cni";
/// The specification version we write.
pub const VERSION: &str = "1.1.0";

/// The `pci` map (spec §3.1.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PciInfo {
    pub pci_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pf_pci_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representor_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_net: Option<String>,
}

/// A Device Information map for a PCI device (spec §3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    pub pci: PciInfo,
}

impl DeviceInfo {
    /// What we know of a VF: its address, its PF's, its representor.
    pub fn for_vf(vf: &Vf) -> DeviceInfo {
        DeviceInfo {
            kind: "pci".into(),
            version: VERSION.into(),
            pci: PciInfo {
                pci_address: vf.pci.to_string(),
                pf_pci_address: Some(vf.pf_pci.to_string()),
                representor_device: vf.representor.clone(),
                ..PciInfo::default()
            },
        }
    }
}

/// Multus' unique file name for an attachment.
pub fn file_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}-{container_id}_{ifname}").replace('/', "-")
}

/// The file for an attachment in `dir` ([`DEFAULT_DIR`] on a node).
pub fn path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(file_name(network, container_id, ifname))
}

/// `ours` laid over what the file holds already, when that describes the
/// same PCI device (keeping keys we do not know, like the device
/// plugin's `rdma-device`); otherwise `ours` alone.
fn merged(existing: Option<Value>, ours: &DeviceInfo) -> Value {
    let ours_v = serde_json::to_value(ours).unwrap_or(Value::Null);
    // Only an object can describe a device (indexing anything else for
    // writing would panic).
    let Some(mut v) = existing.filter(Value::is_object) else {
        return ours_v;
    };
    let same = v["type"] == "pci" && v["pci"]["pci-address"] == ours.pci.pci_address.as_str();
    match (same, v["pci"].as_object_mut(), ours_v["pci"].as_object()) {
        (true, Some(theirs), Some(mine)) => {
            for (k, val) in mine {
                theirs.insert(k.clone(), val.clone());
            }
            v["version"] = Value::from(VERSION);
            v
        }
        _ => ours_v,
    }
}

/// Writes `info` at `path` (creating its directory), completing a file
/// that describes the same device; atomic (temporary file, rename).
pub fn write(path: &Path, info: &DeviceInfo) -> Result<(), SriovError> {
    let err = |source| SriovError::DeviceInfo {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let existing = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let json = serde_json::to_vec(&merged(existing, info))
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&json).and_then(|_| f.sync_all()))
        .and_then(|_| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// Reads a Device Information file.
pub fn read(path: &Path) -> Result<DeviceInfo, SriovError> {
    let err = |source| SriovError::DeviceInfo {
        path: path.to_path_buf(),
        source,
    };
    let b = fs::read(path).map_err(err)?;
    serde_json::from_slice(&b).map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// Deletes the file; a missing one is fine (DEL may run twice).
pub fn remove(path: &Path) -> Result<(), SriovError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SriovError::DeviceInfo {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Fixture, FixtureMode, TempDir};
    use super::*;

    #[test]
    fn multus_file_names() {
        assert_eq!(
            file_name("sriov-net", "abc123", "net1"),
            "sriov-net-abc123_net1"
        );
        assert_eq!(file_name("ns/net", "c", "net1"), "ns-net-c_net1");
        assert_eq!(
            path(Path::new(DEFAULT_DIR), "n", "c", "i"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/n-c_i")
        );
    }

    #[test]
    fn writes_reads_and_removes_the_file() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        let vf = fx.sysfs().resolve("0000:18:02.1").unwrap();
        let tmp = TempDir::new("devinfo");
        let p = path(&tmp.path().join("devinfo/cni"), "sriov-net", "abc", "net1");
        let info = DeviceInfo::for_vf(&vf);
        write(&p, &info).unwrap();
        let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "pci",
                "version": "1.1.0",
                "pci": {
                    "pci-address": "0000:18:02.1",
                    "pf-pci-address": "0000:18:00.0",
                    "representor-device": "ens1f0_1"
                }
            })
        );
        assert_eq!(read(&p).unwrap(), info);
        remove(&p).unwrap();
        assert!(!p.exists());
        remove(&p).unwrap();

        // Legacy mode: no representor key at all.
        let fx = Fixture::new(FixtureMode::Legacy);
        let vf = fx.sysfs().resolve("0000:18:02.1").unwrap();
        write(&p, &DeviceInfo::for_vf(&vf)).unwrap();
        let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["pci"].as_object().unwrap().len(), 2, "{v}");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn completes_what_the_device_plugin_wrote() {
        let fx = Fixture::new(FixtureMode::Switchdev);
        let vf = fx.sysfs().resolve("0000:18:02.0").unwrap();
        let tmp = TempDir::new("devinfo");
        let p = tmp.path().join("f");
        fs::write(
            &p,
            r#"{"type":"pci","version":"1.0.0","pci":{"pci-address":"0000:18:02.0","rdma-device":"mlx5_3"}}"#,
        )
        .unwrap();
        write(&p, &DeviceInfo::for_vf(&vf)).unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.version, "1.1.0");
        assert_eq!(got.pci.rdma_device.as_deref(), Some("mlx5_3"));
        assert_eq!(got.pci.representor_device.as_deref(), Some("ens1f0_0"));
        // Another device's file is replaced, not merged.
        fs::write(&p, r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:99:00.1","rdma-device":"x"}}"#).unwrap();
        write(&p, &DeviceInfo::for_vf(&vf)).unwrap();
        assert_eq!(read(&p).unwrap(), DeviceInfo::for_vf(&vf));
        // Garbage, or JSON that is not an object, is replaced (no panic).
        for junk in ["not json", "[]", "1", r#""x""#, r#"{"type":"pci","pci":5}"#] {
            fs::write(&p, junk).unwrap();
            write(&p, &DeviceInfo::for_vf(&vf)).unwrap();
            assert_eq!(read(&p).unwrap(), DeviceInfo::for_vf(&vf), "{junk}");
        }
    }
}
