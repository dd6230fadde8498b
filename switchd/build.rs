//! Compiles switchd's BPF programs with clang into OUT_DIR: the XDP
//! program every port netdev runs (bpf/xdp_redirect.c) and the overlay's
//! TC programs (bpf/vxlan_tc.c). switchd embeds the objects and loads them
//! with aya.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch_inc = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    for name in ["xdp_redirect", "vxlan_tc"] {
        let src = format!("bpf/{name}.c");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(format!("{name}.o"));
        let status = Command::new(env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args([
                "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", &arch_inc, "-c", &src, "-o",
            ])
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang failed to compile {src} ({s})"),
            Err(e) => panic!(
                "cannot run clang to compile {src}: {e}; install it with `apt-get install clang libbpf-dev`"
            ),
        }
    }
}
