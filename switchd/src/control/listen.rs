//! Connection budgets of the two listeners (control socket, metrics TCP).
//!
//! Each listener has its own cap on open connections: it takes a permit
//! before it accepts, so a flood of one listener waits in that listener's
//! kernel backlog and uses none of the other's descriptors (the control
//! socket keeps answering the CNI while anyone who can reach the metrics
//! port opens connections). A connection must send a complete request
//! head within `HEADER_TIMEOUT` (also the idle limit between keep-alive
//! requests), a body within `BODY_TIMEOUT`, and lives at most `MAX_AGE`.
//! Accept errors (EMFILE, ...) are counted and logged at most every 10 s.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Time to send a request head, and idle time allowed between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a request body (at most 1 MiB).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay open, whatever it does.
pub const MAX_AGE: Duration = Duration::from_secs(120);
/// Open connections of the control socket (the CNI opens one per call).
pub const CONTROL_CONNECTIONS: usize = 256;
/// Open connections of the metrics listener (Prometheus and probes need a few).
pub const METRICS_CONNECTIONS: usize = 64;

/// One listener's budget and what happened to it.
pub struct ConnBudget {
    pub name: &'static str,
    pub max: usize,
    permits: Arc<Semaphore>,
    /// Connections closed for a timeout (head, body or age).
    pub timeouts: AtomicU64,
    /// Failed accept() calls (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Times the listener was full and a client had to wait.
    pub full: AtomicU64,
    /// Connections refused for their peer credentials (control socket).
    pub refused_peers: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl ConnBudget {
    pub fn new(name: &'static str, max: usize) -> ConnBudget {
        ConnBudget {
            name,
            max,
            permits: Arc::new(Semaphore::new(max)),
            timeouts: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            full: AtomicU64::new(0),
            refused_peers: AtomicU64::new(0),
            last_log: Mutex::new(None),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    fn accept_error(&self, e: &io::Error) {
        let n = self.accept_errors.fetch_add(1, Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            log::warn!(
                "accept on the {} listener: {e} ({n} accept errors so far; {} of {} connections open)",
                self.name,
                self.open(),
                self.max
            );
        }
    }
}

tokio::task_local! {
    /// Set by a request whose answer streams for as long as its client
    /// reads (a live capture): its connection is not cut at `MAX_AGE`.
    static LONG_LIVED: Arc<std::sync::atomic::AtomicBool>;
}

/// Exempts the current connection from `MAX_AGE` (call from its request
/// handler; elsewhere it does nothing).
pub fn mark_long_lived() {
    let _ = LONG_LIVED.try_with(|f| f.store(true, Relaxed));
}

/// A listener that yields connections.
pub trait Accept: Send + 'static {
    type Io: Send + 'static;
    fn accept_io(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts connections within `budget` and runs `serve` on each, for at
/// most `MAX_AGE`, until the listener fails for good.
pub async fn run<L, F, Fut>(listener: L, budget: Arc<ConnBudget>, serve: F)
where
    L: Accept,
    F: Fn(L::Io) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    loop {
        let permit = match budget.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                budget.full.fetch_add(1, Relaxed);
                match budget.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return, // closed: never happens
                }
            }
        };
        let io = match listener.accept_io().await {
            Ok(io) => io,
            Err(e) => {
                budget.accept_error(&e);
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let long = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fut = LONG_LIVED.scope(long.clone(), serve(io));
        let b = budget.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(fut);
            let r = match tokio::time::timeout(MAX_AGE, &mut fut).await {
                Err(_) if long.load(Relaxed) => Ok(fut.await),
                r => r,
            };
            match r {
                Err(_) => {
                    b.timeouts.fetch_add(1, Relaxed);
                }
                Ok(Err(e)) if e.is_timeout() => {
                    b.timeouts.fetch_add(1, Relaxed);
                }
                Ok(Err(e)) => log::debug!("{} connection: {e}", b.name),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// The HTTP/1 settings both listeners use: a timer, so the head timeout
/// applies.
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b
}

/// Raises the soft open-files limit to the hard one and logs both; returns
/// the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        log::warn!(
            "cannot read the open-files limit: {}",
            io::Error::last_os_error()
        );
        return 0;
    }
    let before = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit with a valid rlimit for this process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        } else {
            log::warn!(
                "cannot raise the open-files limit from {before} to {}: {}",
                r.rlim_max,
                io::Error::last_os_error()
            );
        }
    }
    log::info!(
        "open files: limit {} (was {before}, hard {}); listeners take at most {} (control) + {} (metrics)",
        r.rlim_cur,
        r.rlim_max,
        CONTROL_CONNECTIONS,
        METRICS_CONNECTIONS
    );
    r.rlim_cur
}
