//! switchd: runs in the foreground, logs to stderr, serves the control API
//! on a Unix socket and forwards frames between its ports with AF_XDP.

use anyhow::Context;
use clap::Parser;
use podswitch_shared::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use switchd::control::{self, Api};
use switchd::datapath::{Datapath, DatapathConfig};
use switchd::handover;
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
    /// The handover socket through which a new switchd takes the data
    /// path over from this one (default: the control socket's path plus
    /// ".handover").
    #[arg(long)]
    handover_socket: Option<PathBuf>,
    /// What this switchd does once it has handed the data path over:
    /// "exit" (status 0), or "wait": let go of everything and idle until
    /// SIGTERM. Under a supervisor that restarts an exited process (a
    /// Kubernetes pod's container), "wait" keeps the old version from
    /// starting again and taking the data path back.
    #[arg(long, value_enum, default_value_t = AfterHandover::Exit)]
    after_handover: AfterHandover,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AfterHandover {
    Exit,
    Wait,
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

/// Replaces each `${NAME}` (NAME of A-Z, 0-9 and _) with the environment
/// variable's value: a switches file shared by every node names what
/// differs per node (the chart's overlay: `"local": "${NODE_IP}"`). A
/// variable that is not set is an error, not an empty string.
fn expand_env(text: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}');
        let name = end.map(|e| &after[..e]).filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
        match (name, end) {
            (Some(n), Some(e)) => {
                let v = std::env::var(n)
                    .with_context(|| format!("${{{n}}} is used but {n} is not set"))?;
                out.push_str(&v);
                rest = &after[e + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The listeners switchd serves, with duplicates kept for a handover.
struct Listeners {
    control: std::os::unix::net::UnixListener,
    metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    fn control(&self) -> anyhow::Result<tokio::net::UnixListener> {
        let l = self.control.try_clone()?;
        l.set_nonblocking(true)?;
        Ok(tokio::net::UnixListener::from_std(l)?)
    }
    fn metrics(&self) -> anyhow::Result<Option<tokio::net::TcpListener>> {
        let Some(m) = &self.metrics else {
            return Ok(None);
        };
        let l = m.try_clone()?;
        l.set_nonblocking(true)?;
        Ok(Some(tokio::net::TcpListener::from_std(l)?))
    }
}

/// Starts serving the API and metrics, and the reconcile loop.
fn spawn_tasks(
    listeners: &Listeners,
    api: &Arc<Api>,
    state: &Arc<Mutex<Registry>>,
    start: f64,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = vec![tokio::spawn(control::serve(
        listeners.control()?,
        api.clone(),
    ))];
    if let Some(l) = listeners.metrics()? {
        tasks.push(tokio::spawn(control::serve_metrics(l, api.clone(), start)));
    }
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
                reconcile::heal_overlays(&st);
            })
            .await;
        }
    }));
    Ok(tasks)
}

/// Asks a serving switchd to hand over. Ok(None): nobody serves the
/// handover socket, or the one serving refused and has exited since (an
/// ordinary start follows).
async fn take_over(
    path: &std::path::Path,
    hello: handover::Hello,
) -> anyhow::Result<Option<(UnixStream, handover::Received)>> {
    let Some(conn) = handover::connect(path) else {
        return Ok(None);
    };
    log::info!(
        "a switchd serves {}; asking it to hand over",
        path.display()
    );
    let (mut conn, r) = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let r = handover::request(&mut conn, &hello);
        (conn, r)
    })
    .await?;
    match r.context("handover from the serving switchd")? {
        Ok(rx) => Ok(Some((conn, rx))),
        Err((pid, reason)) => {
            log::warn!(
                "handover refused by pid {pid}: {reason}; falling back to a restart from the \
                 state directory once it has stopped"
            );
            let gone = tokio::task::spawn_blocking(move || {
                handover::wait_gone(&mut conn, std::time::Duration::from_secs(30))
            })
            .await?;
            if !gone {
                anyhow::bail!("pid {pid} refused to hand over and did not stop within 30 s");
            }
            Ok(None)
        }
    }
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
    let poll_cpus = poll_cpus(&args)?;
    let poll_cpu = poll_cpus.first().copied().flatten();
    let poll_threads = poll_cpus.len();
    let pinned: Vec<usize> = poll_cpus.iter().flatten().copied().collect();
    let cfg = DatapathConfig {
        poll_cpus,
        spin: std::time::Duration::from_micros(args.spin_us),
        nice: args.poll_nice,
        umem_frames: args.umem_frames,
        native_xdp: matches!(args.xdp_mode, XdpModeArg::Native),
        ..DatapathConfig::default()
    };
    let ho_path = args
        .handover_socket
        .clone()
        .unwrap_or_else(|| handover::socket_path(&args.socket));
    let hello = handover::Hello::new(cfg.threads(), cfg.umem_frames);
    let taking = take_over(&ho_path, hello).await?;
    let took_at = std::time::Instant::now();

    let (listeners, dp, mut taken) = match taking {
        Some((conn, rx)) => {
            let handover::Received {
                offer,
                control,
                metrics,
                datapath,
                fdbs,
                queued,
            } = rx;
            log::info!(
                "pid {} (version {}) handed over {} port(s); adopting them",
                offer.pid,
                offer.version,
                offer.ports.len()
            );
            let metrics = match (metrics, args.metrics_addr.as_str()) {
                (_, "none") => None,
                (Some(fd), _) => Some(std::net::TcpListener::from(fd)),
                (None, a) => Some(
                    std::net::TcpListener::bind(a)
                        .with_context(|| format!("binding the metrics listener {a}"))?,
                ),
            };
            let listeners = Listeners {
                control: std::os::unix::net::UnixListener::from(control),
                metrics,
            };
            let dp = Datapath::start_inherited(cfg, datapath)
                .context("starting the AF_XDP data path on what was handed over")?;
            (listeners, dp, Some((conn, offer, fdbs, queued)))
        }
        None => {
            let control = control::bind(&args.socket, group)
                .with_context(|| format!("binding control socket {}", args.socket.display()))?
                .into_std()?;
            let metrics = match args.metrics_addr.as_str() {
                "none" => None,
                a => Some(
                    std::net::TcpListener::bind(a)
                        .with_context(|| format!("binding the metrics listener {a}"))?,
                ),
            };
            let dp = Datapath::start(cfg).context("starting the AF_XDP data path")?;
            (Listeners { control, metrics }, dp, None)
        }
    };
    let dp = Arc::new(dp);
    let mut registry = Registry::new(&args.state_dir, dp.clone(), args.fdb_aging);
    if let Some((_, offer, _, _)) = &taken {
        registry.prefer_slots(offer.slots.clone());
        switchd::overlay::set_seeds(offer.overlays.clone());
    }
    let overlay_mtu = registry.overlay_mtu();
    let state = Arc::new(Mutex::new(registry));
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
        handing_over: Default::default(),
        overlay_mtu,
    });
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    log::info!("serving the control API on {}", args.socket.display());
    if listeners.metrics.is_some() {
        log::info!("serving metrics on http://{}/metrics", args.metrics_addr);
    }
    let mut tasks = spawn_tasks(&listeners, &api, &state, start)?;

    // Re-attach stored ports while the API already answers (readyz: 503).
    let st = state.clone();
    let restored = tokio::task::spawn_blocking(move || reconcile::restore(&st))
        .await
        .context("restore task")?;
    let (ok, dropped) = restored.context("restoring state")?;
    if let Some((mut conn, offer, fdbs, queued)) = taken.take() {
        // The handed-over sockets are polled again: go on from the
        // predecessor's counts and MACs, close what nobody adopted, and
        // let it go.
        {
            let mut s = reconcile::lock(&state);
            s.add_counter_seeds(&offer.counters);
            let slots = s.port_slots();
            let ids: std::collections::HashMap<String, u32> = s
                .switch_ids()
                .into_iter()
                .map(|(name, id, _)| (name, id))
                .collect();
            for (t, per_switch) in fdbs.iter().enumerate() {
                for (name, rows) in per_switch {
                    if let Some(id) = ids.get(name) {
                        dp.learn(t, *id, handover::rows_for(rows, &slots));
                    }
                }
            }
            s.prefer_slots(Default::default());
        }
        for (t, q) in queued.into_iter().enumerate() {
            dp.requeue(t, q);
        }
        dp.resume();
        dp.forget_inherited();
        let pid = offer.pid;
        tokio::task::spawn_blocking(move || handover::say_taken(&mut conn))
            .await?
            .context("telling the old switchd it may exit")?;
        let took_ms = took_at.elapsed().as_millis() as u64;
        reconcile::lock(&state).set_handover(podswitch_shared::model::HandoverInfo {
            from_pid: pid,
            from_version: offer.version.clone(),
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            took_ms,
            ports_adopted: ok,
            frames_dropped: offer.frames_dropped,
        });
        log::info!(
            "took over from pid {pid} in {took_ms} ms: {ok} port(s) adopted, {} frame(s) in flight dropped",
            offer.frames_dropped
        );
    }
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
        let text = expand_env(&text).with_context(|| format!("expanding {}", f.display()))?;
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

    // Hand over to a successor that asks (see handover.rs).
    let (ho_tx, mut ho_rx) = tokio::sync::mpsc::channel::<UnixStream>(1);
    match handover::bind(&ho_path) {
        Ok(l) => {
            std::thread::Builder::new()
                .name("switchd-handover".into())
                .spawn(move || {
                    for c in l.incoming().flatten() {
                        if ho_tx.blocking_send(c).is_err() {
                            break;
                        }
                    }
                })?;
            log::info!("a successor may take over through {}", ho_path.display());
        }
        Err(e) => log::warn!(
            "no handover socket at {} ({e}): an upgrade restarts the data path",
            ho_path.display()
        ),
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Held until exit after a refusal: the successor waits for it to close.
    let mut _refused: Option<UnixStream> = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                log::info!("interrupted; shutting down");
                break;
            }
            _ = term.recv() => {
                log::info!("terminated; shutting down");
                break;
            }
            Some(conn) = ho_rx.recv() => {
                match hand_over(conn, &api, &state, &dp, &listeners, &mut tasks, args.after_handover).await {
                    Outcome::Refused(conn) => {
                        _refused = Some(conn);
                        break;
                    }
                    Outcome::Kept => {
                        tasks = spawn_tasks(&listeners, &api, &state, start)?;
                    }
                    Outcome::Ignored => {}
                }
            }
        }
    }
    for t in &tasks {
        t.abort();
    }
    let _ = std::fs::remove_file(&args.socket);
    let _ = std::fs::remove_file(&ho_path);
    // The tasks hold the registry too: end them first, so that dropping
    // the state stops the data path now (detaching the ports; they stay
    // stored for the next start), not when the runtime is torn down.
    for t in tasks {
        let _ = t.await;
    }
    let t0 = std::time::Instant::now();
    drop(api);
    drop(state);
    drop(dp);
    log::info!("data path stopped in {} ms", t0.elapsed().as_millis());
    // A refused successor waits for this connection to close: by then
    // the listeners and the data path must be gone.
    drop(listeners);
    drop(_refused);
    Ok(())
}

enum Outcome {
    /// The successor was refused; stop for an ordinary restart.
    Refused(UnixStream),
    /// The handover failed before anything was handed: serve again.
    Kept,
    /// Not a handover request (bad peer, no hello): nothing changed.
    Ignored,
}

/// Serves one handover request. On success the process exits here.
async fn hand_over(
    conn: UnixStream,
    api: &Arc<Api>,
    state: &Arc<Mutex<Registry>>,
    dp: &Arc<Datapath>,
    listeners: &Listeners,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    after: AfterHandover,
) -> Outcome {
    let (conn, hello) = match tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let h = handover::read_hello(&mut conn);
        (conn, h)
    })
    .await
    {
        Ok((conn, Ok(h))) => (conn, h),
        Ok((_, Err(e))) => {
            log::warn!("handover socket: {e}");
            return Outcome::Ignored;
        }
        Err(e) => {
            log::warn!("handover socket: {e}");
            return Outcome::Ignored;
        }
    };
    let cfg = dp.config();
    if let Some(reason) = hello.mismatch(cfg.threads(), cfg.umem_frames) {
        let mut conn = conn;
        let _ = handover::refuse(&mut conn, &reason);
        log::warn!(
            "handover refused to pid {} (version {}): {reason}; stopping so that it restarts \
             from the state directory",
            hello.pid,
            hello.version
        );
        return Outcome::Refused(conn);
    }
    let t0 = std::time::Instant::now();
    log::info!(
        "pid {} (version {}) asks for the data path; handing over",
        hello.pid,
        hello.version
    );
    // No new connection is taken (they queue in the listeners, which the
    // successor gets); requests already in flight finish.
    for t in tasks.drain(..) {
        t.abort();
    }
    api.handing_over.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while api.requests_in_flight() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (st, d) = (state.clone(), dp.clone());
    let control = listeners.control.as_raw_fd();
    let metrics = listeners.metrics.as_ref().map(|m| m.as_raw_fd());
    let r = tokio::task::spawn_blocking(move || -> Result<u32, (bool, String)> {
        let mut conn = conn;
        // Held to the end: nothing changes the registry or the state file.
        let s = reconcile::lock(&st);
        let cp = handover::ControlPlane {
            control,
            metrics,
            slots: s.port_slots(),
            counters: s.counter_seeds(),
            overlays: switchd::overlay::seeds(),
            switch_names: s
                .switch_ids()
                .into_iter()
                .map(|(name, id, _)| (id, name))
                .collect(),
        };
        let export = d
            .freeze()
            .map_err(|e| (false, format!("freezing the data path: {e}")))?;
        // From here the rings may be the successor's: no way back.
        let dropped = handover::send_offer(&mut conn, export, cp)
            .map_err(|e| (true, format!("sending the offer: {e}")))?;
        if dropped > 0 {
            log::info!("{dropped} frame(s) in the poll threads' hands were dropped");
        }
        let pid = handover::wait_taken(&mut conn, std::time::Duration::from_secs(60))
            .map_err(|e| (true, format!("waiting for the successor: {e}")))?;
        drop(s);
        Ok(pid)
    })
    .await
    .unwrap_or_else(|e| Err((true, e.to_string())));
    match r {
        Ok(pid) if after == AfterHandover::Exit => {
            log::info!(
                "handed over to pid {pid} in {} ms; exiting",
                t0.elapsed().as_millis()
            );
            // Destructors would detach what the successor now serves.
            std::process::exit(0);
        }
        Ok(pid) => {
            // Close every duplicate we hold (a socket, link or listener
            // kept open here would outlive the successor's own close), then
            // idle: an exit would be restarted by the supervisor.
            dp.release();
            // The overlay's programs: the successor's, ahead of ours, decide.
            switchd::overlay::release_all();
            // The listeners' sockets go too: /dev/null takes their fd
            // numbers (still owned, and closed once, by `listeners`).
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let fds = std::iter::once(listeners.control.as_raw_fd())
                    .chain(listeners.metrics.as_ref().map(|m| m.as_raw_fd()));
                for fd in fds {
                    // SAFETY: dup2 between two fds this process owns;
                    // `fd` stays open (now on /dev/null).
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            log::info!(
                "handed over to pid {pid} in {} ms; idle until stopped (--after-handover wait)",
                t0.elapsed().as_millis()
            );
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => std::process::exit(0),
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            log::info!("stopped after the handover");
            std::process::exit(0);
        }
        Err((false, e)) => {
            log::error!("handover failed ({e}); serving again");
            dp.thaw();
            api.handing_over.store(false, Ordering::SeqCst);
            Outcome::Kept
        }
        Err((true, e)) => {
            log::error!(
                "handover failed after the data path was handed ({e}); exiting so that a \
                 restart from the state directory follows"
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn a_switches_file_names_per_node_values_from_the_environment() {
        std::env::set_var("PODSWITCH_TEST_NODE_IP", "192.0.2.7");
        assert_eq!(
            expand_env(r#"{"local": "${PODSWITCH_TEST_NODE_IP}", "x": "$HOME ${lower} ${"}"#)
                .unwrap(),
            r#"{"local": "192.0.2.7", "x": "$HOME ${lower} ${"}"#
        );
        let e = expand_env("${PODSWITCH_TEST_UNSET_VAR}").unwrap_err();
        assert!(e.to_string().contains("is not set"), "{e}");
    }
}
