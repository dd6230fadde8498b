//! What the plugin prints: CNI results in the requested spec version, the
//! VERSION answer, and errors with the spec's codes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Spec versions this plugin speaks.
pub const SUPPORTED: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// CNI error codes (spec, "Error" section).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Plugin-specific failure (as the reference plugins use).
    pub const PLUGIN: u32 = 999;
}

/// An error as the runtime reads it from stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

pub type CniResult<T> = Result<T, CniError>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// The PCI device behind the interface (a VF), a CNI 1.1 result field:
    /// rendered in 1.1.0 results only.
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, e.g. "10.10.0.5/24".
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// A result in the 1.x shape; `to_version` renders 0.4.0 too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniOutput {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub dns: Value,
}

impl CniOutput {
    /// The addresses IPAM gave (what an ipSpoofCheck port may send from).
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.ips
            .iter()
            .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
            .collect()
    }

    /// An ADD result: `interfaces` (the endpoint's last) with every address
    /// IPAM gave on that last interface, and IPAM's routes and DNS.
    pub fn for_endpoint(interfaces: Vec<Interface>, ipam: &CniOutput) -> CniOutput {
        let at = interfaces.len().saturating_sub(1);
        CniOutput {
            interfaces,
            ips: ipam
                .ips
                .iter()
                .map(|ip| IpConfig {
                    interface: Some(at),
                    ..ip.clone()
                })
                .collect(),
            routes: ipam.routes.clone(),
            dns: ipam.dns.clone(),
        }
    }

    /// Reads a result of any supported version (IPAM's answer, or prevResult).
    pub fn parse(v: &Value) -> CniResult<CniOutput> {
        serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode a CNI result").with_details(e.to_string())
        })
    }

    pub fn to_version(&self, version: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        v["cniVersion"] = json!(version);
        if version != "1.1.0" {
            // Not a field of the older result types.
            if let Some(ifs) = v["interfaces"].as_array_mut() {
                for i in ifs.iter_mut().filter_map(Value::as_object_mut) {
                    i.remove("pciID");
                }
            }
        }
        if version == "0.4.0" {
            if let Some(ips) = v["ips"].as_array_mut() {
                for ip in ips {
                    let six = ip["address"].as_str().is_some_and(|a| a.contains(':'));
                    ip["version"] = json!(if six { "6" } else { "4" });
                }
            }
        }
        if v["dns"].is_null() {
            v["dns"] = json!({});
        }
        v
    }
}

/// The VERSION answer.
pub fn version_info() -> Value {
    json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_040_with_ip_versions() {
        let o = CniOutput {
            ips: vec![
                IpConfig {
                    address: "10.0.0.2/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::2/64".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = o.to_version("0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(v["dns"], json!({}));
        let v = o.to_version("1.0.0");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["cniVersion"], "1.0.0");
    }

    #[test]
    fn pci_id_only_in_110_results() {
        let o = CniOutput {
            interfaces: vec![Interface {
                name: "net1".into(),
                sandbox: "/var/run/netns/x".into(),
                pci_id: "0000:18:02.0".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            o.to_version("1.1.0")["interfaces"][0]["pciID"],
            "0000:18:02.0"
        );
        for v in ["1.0.0", "0.4.0"] {
            assert!(
                o.to_version(v)["interfaces"][0].get("pciID").is_none(),
                "{v}"
            );
        }
        let back = CniOutput::parse(&o.to_version("1.1.0")).unwrap();
        assert_eq!(back.interfaces[0].pci_id, "0000:18:02.0");
    }

    #[test]
    fn parses_host_local_answer() {
        let v = json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1"}],
                       "routes":[{"dst":"0.0.0.0/0"}],"dns":{}});
        let o = CniOutput::parse(&v).unwrap();
        assert_eq!(o.ips[0].gateway.as_deref(), Some("10.1.0.1"));
        assert_eq!(o.routes[0].gw, None);
        // 0.4.0 results carry "version" on each IP: accepted.
        let v = json!({"ips":[{"version":"4","address":"10.1.0.2/24"}]});
        assert!(CniOutput::parse(&v).is_ok());
    }

    #[test]
    fn error_json() {
        let e = CniError::new(code::INVALID_CONFIG, "bad").with_details("why");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"})
        );
    }
}
