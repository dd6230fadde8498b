//! The CNI plugin's pure parts, as a library for the `podswitch` binary
//! and the fuzz targets: the network configuration and CNI_ARGS
//! (`config`), results and errors with the spec's codes (`reply`),
//! SR-IOV VFs for the `vfio` endpoint (`sriov`) and that endpoint's verbs
//! over injected I/O (`vfio`).

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod reply;
pub mod sriov;
pub mod vfio;

/// Fuzz target `cni_config`: bytes up to the first NUL are CNI_ARGS, the
/// rest a network configuration. Parsing must answer (a config, or an
/// error with a CNI code), never panic, and what it accepts must give
/// IPAM a configuration that is JSON again.
#[doc(hidden)]
pub fn fuzz_config(data: &[u8]) {
    let (args, conf) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    if let Ok(c) = config::NetConf::parse(conf) {
        let _ = c.effective_qos();
        let _ = c.socket();
        let _ = c.switch();
        for v in ["0.4.0", "1.0.0", "1.1.0"] {
            let ipam = c.for_ipam(v);
            assert!(
                ipam.is_empty() || serde_json::from_slice::<serde_json::Value>(&ipam).is_ok(),
                "the IPAM configuration is not JSON"
            );
        }
    }
    let env = config::Env {
        command: "ADD".into(),
        container_id: "fuzz".into(),
        netns: "/var/run/netns/fuzz".into(),
        ifname: "eth0".into(),
        args: String::from_utf8_lossy(args).into_owned(),
        path: String::new(),
    };
    let _ = env.parse_args();
}

#[cfg(test)]
mod tests {
    /// Every input kept in `fuzz/corpus/cni_config` runs here.
    #[test]
    fn corpus_cni_config() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/cni_config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            super::fuzz_config(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "{} holds no inputs", dir.display());
    }
}
