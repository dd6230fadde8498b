//! `GET /v1/ports/{id}/capture?direction=in|out|both&count=N&snaplen=S`:
//! a live capture of a port, streamed as a pcap file in the answer's
//! chunked body for as long as the client reads.
//!
//! The request publishes a tap on the port's view (`Registry::start_capture`);
//! the poll threads fill its bounded ring; this body drains the ring
//! every `TICK` into pcap records. It ends when `count` frames are out or
//! the port is deleted, with trailer fields `x-capture-frames` and
//! `x-capture-dropped`; and when the client goes away, hyper sees the
//! connection end and drops the body. Either way, dropping the body
//! unregisters the tap: no thread, ring or tap outlives the stream.

use crate::pipeline::capture::CaptureTap;
use crate::registry::Registry;
use crate::wire::pcap::{self, CaptureRequest};
use bytes::Bytes;
use hyper::body::{Body, Frame};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// How often an idle capture looks at its ring.
const TICK: Duration = Duration::from_millis(20);
/// Most bytes of records sent in one chunk.
const CHUNK: usize = 64 << 10;
/// The trailer fields a finished capture ends with.
pub const TRAILERS: &str = "x-capture-frames, x-capture-dropped";

/// The streamed pcap body of one capture. The caller marks its
/// connection long-lived (`listen::mark_long_lived`).
pub struct CaptureBody {
    tap: Arc<CaptureTap>,
    port: String,
    state: Arc<Mutex<Registry>>,
    /// The pcap global header, until it is sent.
    header: Option<[u8; pcap::GLOBAL_HEADER_LEN]>,
    /// Frames sent so far.
    sent: u64,
    tick: Pin<Box<tokio::time::Sleep>>,
    done: bool,
    /// The tap is unregistered already.
    stopped: bool,
}

impl CaptureBody {
    /// Starts a capture of port `id` (404 if there is none, 409 if it
    /// has as many captures as it takes, or is never attached).
    pub fn start(
        state: Arc<Mutex<Registry>>,
        id: &str,
        r: &CaptureRequest,
    ) -> Result<CaptureBody, crate::registry::RegistryError> {
        let tap = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start_capture(id, r)?;
        log::info!(
            "capture of port {id} started (direction {}, count {:?}, snaplen {})",
            r.direction.as_str(),
            r.count,
            r.snaplen
        );
        Ok(CaptureBody {
            header: Some(pcap::global_header(tap.snaplen)),
            tap,
            port: id.to_string(),
            state,
            sent: 0,
            tick: Box::pin(tokio::time::sleep(TICK)),
            done: false,
            stopped: false,
        })
    }

    fn count_reached(&self) -> bool {
        self.tap.count.is_some_and(|c| self.sent >= c)
    }

    /// Unregisters the tap (off the async threads: it takes the registry's lock).
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.tap.close();
        let (state, port, tap) = (self.state.clone(), self.port.clone(), self.tap.clone());
        let stop = move || {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stop_capture(&port, &tap);
            log::info!(
                "capture of port {port} ended: {} frames, {} dropped",
                tap.frames(),
                tap.dropped()
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(stop)),
            Err(_) => stop(),
        }
    }
}

impl Body for CaptureBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let mut out = Vec::new();
            if let Some(h) = this.header.take() {
                out.extend_from_slice(&h);
            }
            while out.len() < CHUNK && !this.count_reached() {
                let Some(c) = this.tap.take() else { break };
                pcap::push_record(&mut out, c.ts_ns, &c.data, c.orig_len);
                this.tap.recycle(c.data);
                this.sent += 1;
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
            if this.count_reached() || this.tap.is_closed() {
                this.done = true;
                // Read the figures after closing: nothing is added after.
                this.stop();
                let mut t = hyper::HeaderMap::new();
                for (k, v) in [
                    ("x-capture-frames", this.sent),
                    ("x-capture-dropped", this.tap.dropped()),
                ] {
                    t.insert(k, hyper::header::HeaderValue::from(v));
                }
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            match this.tick.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let next = tokio::time::Instant::now() + TICK;
                    this.tick.as_mut().reset(next);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for CaptureBody {
    fn drop(&mut self) {
        // The client went away (or the stream ended): unregister the tap.
        self.stop();
    }
}
