//! IPAM delegation: run the configured IPAM plugin (e.g. the reference
//! `host-local`) from CNI_PATH with our environment and configuration, as
//! the spec's delegation rules say.

use crate::config::{Env, NetConf};
use crate::reply::{code, CniError, CniResult};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Finds `plugin` in CNI_PATH.
pub fn find(env: &Env, plugin: &str) -> CniResult<PathBuf> {
    if plugin.contains('/') || plugin.is_empty() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("ipam type {plugin:?} is not a plugin name"),
        ));
    }
    env.path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "IPAM plugin {plugin:?} not found in CNI_PATH {:?}",
                    env.path
                ),
            )
        })
}

/// The version to speak to the IPAM plugin for ADD/DEL/CHECK: the reference
/// plugins (containernetworking-plugins 1.1) stop at 1.0.0, and 1.1.0's
/// results are 1.0.0's, so a 1.1.0 configuration is passed on as 1.0.0.
pub fn version_for(conf: &NetConf) -> &str {
    if conf.cni_version == "1.1.0" {
        "1.0.0"
    } else {
        &conf.cni_version
    }
}

/// Runs the IPAM plugin with CNI_COMMAND=`command`; returns its stdout as
/// JSON (None when empty). A failure carries the plugin's own code and message.
pub fn exec(conf: &NetConf, env: &Env, command: &str, version: &str) -> CniResult<Option<Value>> {
    let Some(plugin) = conf.ipam_type() else {
        return Ok(None);
    };
    let bin = find(env, plugin)?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(code::IO, format!("running IPAM plugin {}", bin.display()))
                .with_details(e.to_string())
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&conf.for_ipam(version));
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(code::IO, format!("waiting for IPAM plugin {plugin}"))
            .with_details(e.to_string())
    })?;
    let body: Option<Value> = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&out.stdout).ok()
    };
    if !out.status.success() {
        let (c, msg, details) = match &body {
            Some(v) => (
                v.get("code")
                    .and_then(Value::as_u64)
                    .unwrap_or(code::PLUGIN as u64) as u32,
                v.get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
                    .to_string(),
                v.get("details")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            None => (
                code::PLUGIN,
                format!("exited with {}", out.status),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ),
        };
        return Err(
            CniError::new(c, format!("IPAM plugin {plugin} {command}: {msg}"))
                .with_details(details),
        );
    }
    Ok(body)
}

/// Whether the IPAM plugin speaks `version` (asks it with VERSION).
pub fn supports(conf: &NetConf, env: &Env, version: &str) -> bool {
    let Some(plugin) = conf.ipam_type() else {
        return false;
    };
    let Ok(bin) = find(env, plugin) else {
        return false;
    };
    let Ok(mut child) = Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(format!("{{\"cniVersion\":\"{version}\"}}").as_bytes());
    }
    child
        .wait_with_output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v.get("supportedVersions").cloned())
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(version)))
}
