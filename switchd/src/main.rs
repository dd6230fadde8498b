//! switchd: runs in the foreground, logs to stderr, serves the control API
//! on a Unix socket and forwards frames between its ports with AF_XDP.

use anyhow::Context;
use clap::Parser;
use podswitch_shared::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use switchd::control::{self, Api};
use switchd::datapath::{Datapath, DatapathConfig};
use switchd::reconcile;
use switchd::registry::Registry;

#[derive(Parser, Debug)]
#[command(
    name = "switchd",
    version,
    about = "podswitch node-local switch daemon (AF_XDP)"
)]
struct Args {
    /// Control socket (HTTP/1.1 + JSON, mode 0600).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Group (name or GID) whose members may use the control socket besides
    /// root: the socket becomes 0660 owned by it. Every connection's peer
    /// credentials are checked as well as the file mode.
    #[arg(long)]
    socket_group: Option<String>,
    /// Where switches and ports are persisted.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Default MAC aging time of switches, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    fdb_aging: u32,
    /// UMEM frames (4 KiB each) of each poll thread, shared by its ports'
    /// sockets. Each port is guaranteed a few (see GET /v1/datapath
    /// maxPorts); raise it for more ports per node.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=1048576))]
    umem_frames: u32,
    /// XDP attach mode: native (in the driver, falling back to generic
    /// where the driver lacks it) or generic (the skb path, any netdev).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    xdp_mode: XdpModeArg,
    /// CPU to pin the poll thread to: "auto" (the last online CPU when
    /// there are several; the CNI steers pod receive processing off it),
    /// "none", or a CPU number.
    #[arg(long, default_value = "auto", conflicts_with = "poll_cpus")]
    poll_cpu: String,
    /// CPUs of the poll threads, one thread per CPU (e.g. "2-5" or
    /// "0,2"): thread i serves queue i of every port, and the CNI gives
    /// pod veths as many queues.
    #[arg(long)]
    poll_cpus: Option<String>,
    /// Microseconds the poll thread keeps polling after the last frame
    /// before it sleeps (lower latency under traffic; 0 to always sleep).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    spin_us: u64,
    /// Nice value of the poll threads: below 0, a poll thread woken by a
    /// frame preempts the pods' processes on its CPU sooner (on a kernel
    /// that can preempt them); 0 leaves it an equal. Needs CAP_SYS_NICE;
    /// without it switchd logs a warning and goes on.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    poll_nice: i32,
    /// Where to serve Prometheus metrics (GET /metrics) and probes
    /// (/healthz, /readyz); "none" turns the listener off.
    #[arg(long, default_value = "127.0.0.1:9476")]
    metrics_addr: String,
    /// A JSON file of switches and ports (e.g. the uplink) to create at
    /// start if they do not exist: {"switches": [...], "ports": [...]}.
    #[arg(long)]
    switches_file: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum XdpModeArg {
    Native,
    Generic,
}

/// Lifts RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps and every
/// kernel charges the UMEM (without CAP_IPC_LOCK) against it.
fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid rlimit value for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        log::debug!(
            "RLIMIT_MEMLOCK stays as it is: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A group's ID from its name or number.
fn group_id(g: &str) -> anyhow::Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(g).context("group name contains NUL")?;
    // SAFETY: getgrnam reads the NUL-terminated name; the returned entry
    // (static storage) is read at once, before any other getgr* call.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        anyhow::bail!("no group named {g:?}");
    }
    // SAFETY: gr is non-null and points to a valid group entry.
    Ok(unsafe { (*gr).gr_gid })
}

/// The poll threads' CPUs from --poll-cpus or --poll-cpu.
fn poll_cpus(args: &Args) -> anyhow::Result<Vec<Option<usize>>> {
    let online = podswitch_shared::netdev::online_cpus();
    if let Some(list) = &args.poll_cpus {
        let cpus = podswitch_shared::netdev::parse_cpu_list_strict(list)
            .map_err(|e| anyhow::anyhow!("--poll-cpus: {e}"))?;
        if let Some(c) = cpus.iter().find(|c| !online.contains(c)) {
            anyhow::bail!("--poll-cpus {list}: CPU {c} is not online (online: {online:?})");
        }
        let max = switchd::datapath::bpf::MAX_QUEUES as usize;
        if cpus.len() > max {
            anyhow::bail!("--poll-cpus {list}: at most {max} poll threads");
        }
        return Ok(cpus.into_iter().map(Some).collect());
    }
    Ok(vec![match args.poll_cpu.as_str() {
        "none" => None,
        "auto" => (online.len() > 1).then(|| online.last().copied()).flatten(),
        n => Some(
            n.parse::<usize>()
                .ok()
                .filter(|c| online.contains(c))
                .with_context(|| {
                    format!("--poll-cpu {n}: not an online CPU (online: {online:?})")
                })?,
        ),
    }])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    env_logger::Builder::new()
        .parse_filters(&args.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    // A panic anywhere (a poll thread, the setup thread, a handler) ends
    // the process with a non-zero status: a switchd that half works must
    // not keep answering /healthz. The state directory brings every port
    // back on the restart that follows (kubelet's, systemd's).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        log::error!("switchd panicked ({info}); exiting so that it is restarted");
        std::process::abort();
    }));
    raise_memlock();
    switchd::control::listen::raise_nofile();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(switchd::control::MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // The state is read and checked before the socket appears, so nothing
    // is served from a state this switchd cannot use.
    let (switches, ports) = switchd::registry::check_state_dir(&args.state_dir)
        .with_context(|| format!("reading state directory {}", args.state_dir.display()))?;
    log::info!(
        "state {}: {switches} switch(es), {ports} port(s) stored",
        args.state_dir.display()
    );
    let group = args
        .socket_group
        .as_deref()
        .map(group_id)
        .transpose()
        .context("--socket-group")?;
    let listener = control::bind(&args.socket, group)
        .with_context(|| format!("binding control socket {}", args.socket.display()))?;
    let poll_cpus = poll_cpus(&args)?;
    let poll_cpu = poll_cpus.first().copied().flatten();
    let poll_threads = poll_cpus.len();
    let pinned: Vec<usize> = poll_cpus.iter().flatten().copied().collect();
    let dp = Datapath::start(DatapathConfig {
        poll_cpus,
        spin: std::time::Duration::from_micros(args.spin_us),
        nice: args.poll_nice,
        umem_frames: args.umem_frames,
        native_xdp: matches!(args.xdp_mode, XdpModeArg::Native),
        ..DatapathConfig::default()
    })
    .context("starting the AF_XDP data path")?;
    let state = Arc::new(Mutex::new(Registry::new(
        &args.state_dir,
        Arc::new(dp),
        args.fdb_aging,
    )));
    let ready = Arc::new(AtomicBool::new(false));
    let api = Arc::new(Api {
        state: state.clone(),
        ready: ready.clone(),
        metrics: Default::default(),
        poll_cpu,
        poll_cpus: pinned,
        poll_threads,
        gates: Default::default(),
        peers: control::Peers { group },
    });
    log::info!("serving the control API on {}", args.socket.display());
    let server = tokio::spawn(control::serve(listener, api.clone()));
    let mut tasks = Vec::new();
    if args.metrics_addr != "none" {
        let l = tokio::net::TcpListener::bind(&args.metrics_addr)
            .await
            .with_context(|| format!("binding the metrics listener {}", args.metrics_addr))?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        log::info!("serving metrics on http://{}/metrics", args.metrics_addr);
        tasks.push(tokio::spawn(control::serve_metrics(l, api.clone(), start)));
    }

    // Re-attach stored ports while the API already answers (readyz: 503).
    let st = state.clone();
    let restored = tokio::task::spawn_blocking(move || reconcile::restore(&st))
        .await
        .context("restore task")?;
    let (ok, dropped) = restored.context("restoring state")?;
    // Ports whose NIC exists but did not attach yet (e.g. the previous
    // switchd's sockets are still being torn down): give them a moment.
    for _ in 0..20 {
        let st = state.clone();
        let left = tokio::task::spawn_blocking(move || {
            reconcile::reconcile(&st);
            reconcile::lock(&st).detached_ports()
        })
        .await
        .context("reconcile task")?;
        if left == 0 {
            break;
        }
        log::info!("{left} stored port(s) not attached yet; retrying");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    if let Some(f) = &args.switches_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let decl: switchd::registry::Declared = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid switches file", f.display()))?;
        let st = state.clone();
        tokio::task::spawn_blocking(move || reconcile::apply_declared(&st, decl))
            .await
            .context("switches-file task")?
            .with_context(|| format!("applying {}", f.display()))?;
    }
    ready.store(true, Ordering::Release);
    log::info!("ready: {ok} port(s) re-attached, {dropped} dropped (NIC gone)");

    // Keep retrying ports that could not be attached (see State::reconcile).
    let st = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let st = st.clone();
            let _ = tokio::task::spawn_blocking(move || {
                {
                    let mut s = reconcile::lock(&st);
                    if s.datapath().take_reattached() {
                        s.republish();
                    }
                }
                if reconcile::lock(&st).detached_ports() > 0 {
                    reconcile::reconcile(&st);
                }
            })
            .await;
        }
    }));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("interrupted; shutting down"),
        _ = term.recv() => log::info!("terminated; shutting down"),
    }
    server.abort();
    let _ = std::fs::remove_file(&args.socket);
    // The tasks hold the registry too: end them first, so that dropping
    // the state stops the data path now (detaching the ports; they stay
    // stored for the next start), not when the runtime is torn down.
    for t in &tasks {
        t.abort();
    }
    for t in std::iter::once(server).chain(tasks) {
        let _ = t.await;
    }
    let t0 = std::time::Instant::now();
    drop(api);
    drop(state);
    log::info!("data path stopped in {} ms", t0.elapsed().as_millis());
    Ok(())
}
