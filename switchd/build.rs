//! Compiles the XDP program (bpf/xdp_redirect.c) with clang into OUT_DIR;
//! switchd embeds the object and loads it with aya at start.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/xdp_redirect.c";
    println!("cargo:rerun-if-changed={src}");
    let out =
        PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("xdp_redirect.o");
    let arch_inc = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    let status = Command::new(env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args([
            "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", &arch_inc, "-c", src, "-o",
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
