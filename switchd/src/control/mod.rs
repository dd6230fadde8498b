//! The control API: HTTP/1.1 + JSON over a root-only Unix socket.
//!
//! Each request is decoded into a typed call on the `Registry` or the reconciler (strictly: unknown
//! fields and bad values are a 400 with a JSON error saying what is wrong)
//! and run on a blocking thread, since it may touch netdevs and wait for
//! the poll thread. A 2xx answer means the change is applied.

// An `Answer` is the response itself, built once per request: no gain
// from boxing it on the error path.
#![allow(clippy::result_large_err)]

pub mod capture;
pub mod listen;

use crate::metrics::ApiMetrics;
use crate::reconcile;
use crate::registry::{Registry, RegistryError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use podswitch_shared::model::{ApiError, PortConfig, PortUpdate, SwitchConfig, SwitchUpdate};
use serde::Serialize;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const MAX_BODY: usize = 1 << 20;

/// Shared by every connection.
pub struct Api {
    pub state: Arc<Mutex<Registry>>,
    /// Set once the stored ports are re-attached.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<ApiMetrics>,
    /// The data path's poll CPU (answered on /readyz).
    pub poll_cpu: Option<usize>,
    /// Every poll thread's CPU (empty when unpinned) and the thread count.
    pub poll_cpus: Vec<usize>,
    pub poll_threads: usize,
    /// How many requests run at once.
    pub gates: Gates,
    /// Who may connect.
    pub peers: Peers,
    /// Set while this switchd hands over to a new one: requests get a
    /// retryable 503 (the CNI plugin retries; the new switchd answers).
    pub handing_over: Arc<AtomicBool>,
    /// Per switch, the MTU a pod's frames may have to cross its overlay.
    pub overlay_mtu: Arc<Mutex<std::collections::BTreeMap<String, u32>>>,
}

impl Api {
    /// Requests running past the gates (reads and writes).
    pub fn requests_in_flight(&self) -> usize {
        (MAX_READS - self.gates.reads.available_permits())
            + (MAX_WRITES - self.gates.writes.available_permits())
    }
}

/// Reads (GET) and writes (POST, PATCH, DELETE: the CNI's ADD and DEL)
/// each run at most this many at once; more wait their turn without a
/// thread. Probes never wait. The blocking pool is sized above their sum.
pub const MAX_READS: usize = 8;
pub const MAX_WRITES: usize = 16;
/// Threads for blocking work (registry, netdevs, metrics rendering).
pub const MAX_BLOCKING_THREADS: usize = 32;

/// The request budgets, apart so that a storm of reads cannot hold back
/// a CNI ADD, nor a burst of ADDs the reads.
pub struct Gates {
    reads: tokio::sync::Semaphore,
    writes: tokio::sync::Semaphore,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            reads: tokio::sync::Semaphore::new(MAX_READS),
            writes: tokio::sync::Semaphore::new(MAX_WRITES),
        }
    }
}

type Answer = Response<Full<Bytes>>;

/// A response body: JSON (every answer but one), or a live capture's
/// pcap stream (`GET /v1/ports/{id}/capture`).
pub type ApiBody = http_body_util::Either<Full<Bytes>, capture::CaptureBody>;

/// The port of a `/v1/ports/{id}/capture` path.
fn capture_path(path: &str) -> Option<&str> {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    match (
        segs.next(),
        segs.next(),
        segs.next(),
        segs.next(),
        segs.next(),
    ) {
        (Some("v1"), Some("ports"), Some(id), Some("capture"), None) => Some(id),
        _ => None,
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Answer {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Answer {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(
        status,
        &ApiError {
            code: code.into(),
            message: message.into(),
        },
    )
}

fn state_error(e: RegistryError) -> Answer {
    let (status, code) = e.status_code();
    error(status, code, e.to_string())
}

/// Reads the whole request body (every request's, so the connection can
/// answer cleanly even when the route ignores it), or answers why not.
async fn read_body(req: Request<Incoming>) -> Result<(hyper::http::request::Parts, Bytes), Answer> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(error(
            413,
            "too-large",
            format!("request body exceeds {MAX_BODY} bytes"),
        ));
    }
    let (parts, body) = req.into_parts();
    let collected =
        tokio::time::timeout(listen::BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let Ok(collected) = collected.await else {
        return Err(error(
            408,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                listen::BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match collected {
        Ok(b) => Ok((parts, b.to_bytes())),
        Err(e) => Err(if e.is::<http_body_util::LengthLimitError>() {
            error(
                413,
                "too-large",
                format!("request body exceeds {MAX_BODY} bytes"),
            )
        } else {
            error(400, "invalid", format!("reading request body: {e}"))
        }),
    }
}

/// Decodes a JSON body into `T`, or answers why not.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Answer> {
    if bytes.is_empty() {
        return Err(error(
            400,
            "invalid",
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| error(400, "invalid", format!("request body: {e}")))
}

impl Api {
    /// Runs `f` on the state from a blocking thread.
    async fn with_state<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Registry) -> R + Send + 'static,
    ) -> Result<R, Answer> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s)
        })
        .await
        .map_err(|e| error(500, "internal", format!("request handler failed: {e}")))
    }

    /// Runs `f` with the registry from a blocking thread, for the
    /// reconciler's calls (which lock it only as long as they must).
    async fn with_reconciler<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Mutex<Registry>) -> R + Send + 'static,
    ) -> Result<R, Answer> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(|e| error(500, "internal", format!("request handler failed: {e}")))
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ApiBody>, Infallible> {
        let t0 = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let probe = matches!(path.as_str(), "/healthz" | "/readyz");
        let r = match read_body(req).await {
            Ok((parts, bytes)) => {
                let gate = match method {
                    _ if probe => None,
                    Method::GET | Method::HEAD => Some(&self.gates.reads),
                    _ => Some(&self.gates.writes),
                };
                let _permit = match gate {
                    Some(g) => g.acquire().await.ok(),
                    None => None,
                };
                let uri = parts.uri.clone();
                // Checked holding the permit: the handover waits for every
                // permit to come back, so no request mutates past it.
                if !probe && self.handing_over.load(Ordering::SeqCst) {
                    Err(error(
                        503,
                        "handing-over",
                        "switchd is handing over to a new process; retry",
                    ))
                } else {
                    match capture_path(uri.path()) {
                        Some(id) => self.capture(&parts, id).await,
                        None => self
                            .route(parts, bytes)
                            .await
                            .map(|a| a.map(http_body_util::Either::Left)),
                    }
                }
            }
            Err(a) => Err(a),
        };
        let answer = r.unwrap_or_else(|a| a.map(http_body_util::Either::Left));
        self.metrics
            .observe(method.as_str(), answer.status().as_u16(), t0.elapsed());
        log::debug!("{method} {path} -> {}", answer.status());
        Ok(answer)
    }

    /// `GET /v1/ports/{id}/capture?direction=in|out|both&count=N&snaplen=S`:
    /// the port's frames as a pcap stream (see `capture`).
    async fn capture(
        &self,
        req: &hyper::http::request::Parts,
        id: &str,
    ) -> Result<Response<ApiBody>, Answer> {
        if req.method != Method::GET {
            return Err(error(
                405,
                "method-not-allowed",
                format!(
                    "{} is not allowed on {}; use GET",
                    req.method,
                    req.uri.path()
                ),
            ));
        }
        let r = crate::wire::pcap::CaptureRequest::from_query(req.uri.query())
            .map_err(|e| error(400, "invalid", format!("capture: {e}")))?;
        let (state, id) = (self.state.clone(), id.to_string());
        let body = tokio::task::spawn_blocking(move || capture::CaptureBody::start(state, &id, &r))
            .await
            .map_err(|e| error(500, "internal", format!("request handler failed: {e}")))?
            .map_err(state_error)?;
        // The answer lasts as long as the capture: its connection is not
        // cut at listen::MAX_AGE.
        listen::mark_long_lived();
        let mut resp = Response::new(http_body_util::Either::Right(body));
        let h = resp.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/vnd.tcpdump.pcap"),
        );
        h.insert(
            hyper::header::TRAILER,
            hyper::header::HeaderValue::from_static(capture::TRAILERS),
        );
        Ok(resp)
    }

    async fn route(
        &self,
        req: hyper::http::request::Parts,
        bytes: Bytes,
    ) -> Result<Answer, Answer> {
        let path = req.uri.path().trim_end_matches('/').to_string();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let m = req.method.clone();
        let allow = |methods: &str| {
            error(
                405,
                "method-not-allowed",
                format!("{m} is not allowed on {path}; use {methods}"),
            )
        };
        let ok = |v: serde_json::Value| json(StatusCode::OK, &v);
        match segs.as_slice() {
            ["healthz"] => Ok(ok(serde_json::json!({"status": "ok"}))),
            ["readyz"] => {
                if self.ready.load(Ordering::Acquire) {
                    // pollCpu: the CNI steers pods' receive processing off it.
                    // overlayMtu: the CNI lowers pods' MTU to it.
                    let overlay = self
                        .overlay_mtu
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    Ok(ok(
                        serde_json::json!({"status": "ready", "pollCpu": self.poll_cpu,
                            "pollCpus": self.poll_cpus, "pollThreads": self.poll_threads,
                            "overlayMtu": overlay}),
                    ))
                } else {
                    Err(error(
                        503,
                        "not-ready",
                        "switchd is re-attaching stored ports",
                    ))
                }
            }
            ["v1", "datapath"] => match m {
                Method::GET => Ok(json(
                    StatusCode::OK,
                    &self.with_state(|s| s.datapath_info()).await?,
                )),
                _ => Err(allow("GET")),
            },
            ["v1", "switches"] => match m {
                Method::GET => Ok(json(
                    StatusCode::OK,
                    &self.with_state(|s| s.switches()).await?,
                )),
                Method::POST => {
                    let cfg: SwitchConfig = body(&bytes)?;
                    let sw = self
                        .with_state(move |s| s.create_switch(cfg))
                        .await?
                        .map_err(state_error)?;
                    Ok(json(StatusCode::CREATED, &sw))
                }
                _ => Err(allow("GET, POST")),
            },
            ["v1", "switches", name] => match m {
                Method::GET => {
                    let name = name.to_string();
                    let sw = self
                        .with_state(move |s| s.switches().into_iter().find(|w| w.name == name))
                        .await?;
                    sw.map(|w| json(StatusCode::OK, &w)).ok_or_else(|| {
                        error(404, "not-found", format!("no switch named {:?}", segs[2]))
                    })
                }
                Method::PATCH => {
                    let u: SwitchUpdate = body(&bytes)?;
                    let name = name.to_string();
                    let sw = self
                        .with_state(move |s| s.update_switch(&name, u))
                        .await?
                        .map_err(state_error)?;
                    Ok(json(StatusCode::OK, &sw))
                }
                Method::DELETE => {
                    let name = name.to_string();
                    self.with_state(move |s| s.delete_switch(&name))
                        .await?
                        .map_err(state_error)?;
                    Ok(json(
                        StatusCode::OK,
                        &serde_json::json!({"deleted": segs[2]}),
                    ))
                }
                _ => Err(allow("GET, PATCH, DELETE")),
            },
            ["v1", "switches", name, "mdb"] => match m {
                Method::GET => {
                    let name = name.to_string();
                    let t = self
                        .with_state(move |s| s.mdb(&name))
                        .await?
                        .map_err(state_error)?;
                    Ok(json(StatusCode::OK, &t))
                }
                _ => Err(allow("GET")),
            },
            ["v1", "switches", name, "fdb"] => match m {
                Method::GET => {
                    let name = name.to_string();
                    let rows = self
                        .with_state(move |s| s.fdb(&name))
                        .await?
                        .map_err(state_error)?;
                    Ok(json(StatusCode::OK, &rows))
                }
                _ => Err(allow("GET")),
            },
            ["v1", "ports"] => match m {
                Method::GET => Ok(json(StatusCode::OK, &self.with_state(|s| s.ports()).await?)),
                Method::POST => {
                    let cfg: PortConfig = body(&bytes)?;
                    let (port, created) = self
                        .with_reconciler(move |r| reconcile::create_port(r, cfg))
                        .await?
                        .map_err(state_error)?;
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok(json(status, &port))
                }
                _ => Err(allow("GET, POST")),
            },
            ["v1", "ports", id, "overlay"] => match m {
                Method::GET => {
                    let id = id.to_string();
                    let p = self
                        .with_state(move |s| s.port(&id))
                        .await?
                        .map_err(state_error)?;
                    if p.nic.vxlan.is_none() {
                        return Err(error(
                            404,
                            "not-found",
                            format!("port {} is a {} port, not an overlay", p.id, p.nic.kind),
                        ));
                    }
                    let ifname = p.nic.ifname.clone();
                    let st = tokio::task::spawn_blocking(move || crate::overlay::status(&ifname))
                        .await
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            error(
                                409,
                                "not-attached",
                                format!("the overlay of port {} is not attached (yet)", p.id),
                            )
                        })?;
                    Ok(json(StatusCode::OK, &st))
                }
                _ => Err(allow("GET")),
            },
            ["v1", "ports", id, "peers"] => match m {
                Method::PUT => {
                    let id = id.to_string();
                    let peers: Vec<std::net::IpAddr> = body(&bytes)?;
                    let p = self
                        .with_reconciler(move |r| reconcile::set_vxlan_peers(r, &id, peers))
                        .await?
                        .map_err(state_error)?;
                    Ok(json(StatusCode::OK, &p))
                }
                _ => Err(allow("PUT")),
            },
            ["v1", "ports", id] => {
                let id = id.to_string();
                match m {
                    Method::GET => {
                        let p = self
                            .with_state(move |s| s.port(&id))
                            .await?
                            .map_err(state_error)?;
                        Ok(json(StatusCode::OK, &p))
                    }
                    Method::PATCH => {
                        let u: PortUpdate = body(&bytes)?;
                        let p = self
                            .with_reconciler(move |r| reconcile::update_port(r, &id, u))
                            .await?
                            .map_err(state_error)?;
                        Ok(json(StatusCode::OK, &p))
                    }
                    Method::DELETE => {
                        let i = id.clone();
                        self.with_reconciler(move |r| reconcile::delete_port(r, &i))
                            .await?
                            .map_err(state_error)?;
                        Ok(json(StatusCode::OK, &serde_json::json!({"deleted": id})))
                    }
                    _ => Err(allow("GET, PATCH, DELETE")),
                }
            }
            _ => Err(error(404, "not-found", format!("no such endpoint: {path}"))),
        }
    }
}

/// Serves GET /metrics, /healthz and /readyz over TCP (for Prometheus and
/// kubelet probes) until the listener fails.
pub async fn serve_metrics(listener: tokio::net::TcpListener, api: Arc<Api>, start_time: f64) {
    let budget = api.metrics.metrics.clone();
    listen::run(listener, budget, move |stream| {
        let api = api.clone();
        async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let api = api.clone();
                async move {
                    let r = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => {
                            let st = api.state.clone();
                            let m = api.metrics.clone();
                            let body = tokio::task::spawn_blocking(move || {
                                crate::metrics::render(&st, &m, start_time)
                            })
                            .await
                            .unwrap_or_default();
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "text/plain; version=0.0.4; charset=utf-8",
                                ),
                            );
                            r
                        }
                        (&Method::GET, "/healthz") => {
                            json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
                        }
                        (&Method::GET, "/readyz") if api.ready.load(Ordering::Acquire) => {
                            json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
                        }
                        (&Method::GET, "/readyz") => {
                            error(503, "not-ready", "switchd is re-attaching stored ports")
                        }
                        _ => error(
                            404,
                            "not-found",
                            "the metrics listener serves /metrics, /healthz and /readyz",
                        ),
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            listen::http1()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
        }
    })
    .await
}

/// Binds the control socket (mode 0600, or 0660 owned by `group`),
/// refusing to steal it from a live switchd and removing a stale one left
/// by a crash.
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another switchd is serving {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask(2) only changes this process's file-creation mask; we
    // restore it right after bind so the socket is never group/world-open.
    let old = unsafe { libc::umask(0o077) };
    let l = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l?;
    match group {
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?,
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        }
    }
    Ok(l)
}

/// Who may use the control socket, checked on every connection with
/// SO_PEERCRED in addition to the socket file's mode: root, and the
/// members (by primary group at connect time) of `--socket-group`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peers {
    pub group: Option<u32>,
}

impl Peers {
    fn allows(&self, c: &tokio::net::unix::UCred) -> bool {
        c.uid() == 0 || self.group.is_some_and(|g| c.gid() == g)
    }
}

/// Answers every request on a connection from a peer that is not allowed.
fn refuse_peer(c: &tokio::net::unix::UCred) -> Answer {
    error(
        403,
        "forbidden",
        format!(
            "the control socket serves root and the --socket-group only; this peer is uid {} gid {}",
            c.uid(),
            c.gid()
        ),
    )
}

/// Serves connections until the listener fails.
pub async fn serve(listener: tokio::net::UnixListener, api: Arc<Api>) {
    let budget = api.metrics.control.clone();
    listen::run(listener, budget, move |stream: tokio::net::UnixStream| {
        let api = api.clone();
        let cred = stream.peer_cred();
        async move {
            let refused = match &cred {
                Ok(c) if api.peers.allows(c) => None,
                Ok(c) => Some(refuse_peer(c)),
                Err(e) => Some(error(403, "forbidden", format!("no peer credentials: {e}"))),
            };
            if let Some(answer) = refused {
                api.metrics
                    .control
                    .refused_peers
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!("control socket: refused a peer ({:?})", cred.as_ref().ok());
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let a = answer.clone();
                    async move { Ok::<_, Infallible>(a) }
                });
                return listen::http1()
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            }
            let svc = hyper::service::service_fn(move |req| api.clone().handle(req));
            listen::http1()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
        }
    })
    .await
}
