//! `podswitch`: the CNI plugin. Reads the network configuration on stdin
//! and the CNI_* environment, does the verb, prints a result or an error
//! with the spec's code, and never panics on its input.

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod commands;
mod endpoint;
mod inspect;
mod ipam;
use podswitch_shared::netlink;
mod netns;
mod tap;

use podswitch_cni::{config, reply};

use config::{Env, NetConf};
use reply::{code, CniError, CniResult};
use serde_json::Value;
use std::io::{Read, Write};

fn run(env: &Env, stdin: &[u8]) -> (String, CniResult<Option<Value>>) {
    if env.command == "VERSION" {
        return ("1.1.0".into(), Ok(Some(reply::version_info())));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => {
            // Answer in the version the caller asked for, if we can read it.
            let v = serde_json::from_slice::<Value>(stdin)
                .ok()
                .and_then(|v| {
                    v.get("cniVersion")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .filter(|v| reply::SUPPORTED.contains(&v.as_str()))
                .unwrap_or_else(|| "1.0.0".into());
            return (v, Err(e));
        }
    };
    let v = conf.cni_version.clone();
    let needs = |min: &str, cmd: &str| -> CniResult<()> {
        let rank = |s: &str| reply::SUPPORTED.iter().position(|x| *x == s).unwrap_or(0);
        if rank(&conf.cni_version) < rank(min) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{cmd} needs cniVersion {min} or later; the configuration says {}",
                    conf.cni_version
                ),
            ));
        }
        Ok(())
    };
    let r = match env.command.as_str() {
        "ADD" => commands::add(&conf, env).map(Some),
        "DEL" => commands::del(&conf, env).map(|()| None),
        "CHECK" => needs("0.4.0", "CHECK")
            .and_then(|()| commands::check(&conf, env))
            .map(|()| None),
        "GC" => needs("1.1.0", "GC")
            .and_then(|()| commands::gc(&conf, env))
            .map(|()| None),
        "STATUS" => needs("1.1.0", "STATUS")
            .and_then(|()| commands::status(&conf, env))
            .map(|()| None),
        "" => Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )),
    };
    (v, r)
}

fn main() {
    let env = Env::from_env();
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(16 << 20).read_to_end(&mut stdin);
    let (version, result) = match read {
        Err(e) => (
            "1.0.0".to_string(),
            Err(CniError::new(code::IO, "reading stdin").with_details(e.to_string())),
        ),
        Ok(_) => match std::panic::catch_unwind(|| run(&env, &stdin)) {
            Ok(r) => r,
            Err(_) => (
                "1.0.0".to_string(),
                Err(CniError::new(
                    code::PLUGIN,
                    "internal error in the podswitch plugin",
                )),
            ),
        },
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}
