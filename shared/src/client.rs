//! A blocking HTTP/1.1 client for switchd's Unix control socket.
//!
//! Deliberately tiny: one request per connection (`Connection: close`),
//! JSON bodies, a timeout on every read and write. The CNI binary runs for
//! milliseconds and must not pull in an async runtime to say one sentence.

use crate::model::ApiError;
use serde::{de::DeserializeOwned, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach switchd at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to switchd at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("switchd answered something that is not HTTP: {0}")]
    Protocol(String),
    #[error("switchd refused ({status} {}): {}", .error.code, .error.message)]
    Api { status: u16, error: ApiError },
    #[error("cannot decode switchd's answer: {0}")]
    Decode(#[from] serde_json::Error),
    /// The consumer of a streamed answer stopped it (`Client::stream`).
    #[error("{0}")]
    Stopped(std::io::Error),
}

impl ClientError {
    /// The HTTP status switchd answered, if it answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// True when switchd could not be reached at all (not running).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// A raw answer: status and body bytes.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Client {
    path: PathBuf,
    timeout: Duration,
    /// How long to keep retrying a request switchd did not take: the
    /// socket refused or missing (switchd restarting), or 503 (busy, e.g.
    /// handing its datapath to a new process). Zero: no retries.
    retry: Duration,
}

impl Client {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Client {
            path: path.as_ref().to_path_buf(),
            timeout: Duration::from_secs(10),
            retry: Duration::ZERO,
        }
    }

    /// Retries requests switchd did not take (unreachable, or 503) for up
    /// to `window`, with a growing pause (20 ms to 250 ms). Only requests
    /// that were never processed are retried, so it is safe for any verb.
    pub fn with_retry(mut self, window: Duration) -> Self {
        self.retry = window;
        self
    }

    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Connects to the socket with the client's write timeout and `read`
    /// as the read timeout.
    fn connect(&self, read: Duration) -> Result<UnixStream, ClientError> {
        let s = UnixStream::connect(&self.path).map_err(|source| ClientError::Connect {
            path: self.path.clone(),
            source,
        })?;
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        s.set_read_timeout(Some(read)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        Ok(s)
    }

    /// Sends one request and returns the status and body, whatever the
    /// status (after the retries `with_retry` allows).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let r = self.raw_once(method, path, body);
            let again = match &r {
                Err(e) => e.is_unreachable(),
                Ok(resp) => resp.status == 503,
            };
            if !again || start.elapsed() + pause > self.retry {
                return r;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn raw_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut s = self.connect(self.timeout)?;
        let body = body.unwrap_or(&[]);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: switchd\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(io)?;
        s.write_all(body).map_err(io)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(io)?;
        parse_response(&buf)
    }

    /// Sends a request and decodes a 2xx JSON answer, or returns the API error.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let r = self.raw(method, path, body.as_deref())?;
        if (200..300).contains(&r.status) {
            let slice = if r.body.is_empty() {
                b"null".as_slice()
            } else {
                &r.body
            };
            Ok(serde_json::from_slice(slice)?)
        } else {
            let error = serde_json::from_slice::<ApiError>(&r.body).unwrap_or_else(|_| ApiError {
                code: "http".into(),
                message: String::from_utf8_lossy(&r.body).into_owned(),
            });
            Err(ClientError::Api {
                status: r.status,
                error,
            })
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None::<&()>)
    }
}

impl Client {
    /// Sends a GET whose answer streams (a live capture): a 2xx answer's
    /// body goes to `sink` piece by piece as it arrives, with no read
    /// timeout; every `tick` without data `idle` is called. Either may
    /// stop the stream by returning an error (`ClientError::Stopped`).
    /// Returns the trailer fields the answer ended with.
    pub fn stream(
        &self,
        path: &str,
        tick: Duration,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        idle: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut s = self.connect(tick)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: switchd\r\nConnection: close\r\nTE: trailers\r\n\r\n"
        );
        s.write_all(req.as_bytes()).map_err(io)?;
        let mut r = StreamReader {
            path: &self.path,
            s,
            buf: Vec::new(),
            idle,
        };
        let end = loop {
            if let Some(e) = r.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break e;
            }
            if !r.more()? {
                return Err(ClientError::Protocol(
                    "the answer ended in its headers".into(),
                ));
            }
        };
        let (status, chunked) = parse_head(&r.buf[..end])?;
        r.buf.drain(..end + 4);
        if !(200..300).contains(&status) {
            // An error answer is small: read it whole.
            while r.more()? {}
            let body = if chunked { dechunk(&r.buf)? } else { r.buf };
            let error = serde_json::from_slice::<ApiError>(&body).unwrap_or_else(|_| ApiError {
                code: "http".into(),
                message: String::from_utf8_lossy(&body).into_owned(),
            });
            return Err(ClientError::Api { status, error });
        }
        if !chunked {
            // Until the connection closes.
            loop {
                if !r.buf.is_empty() {
                    sink(&r.buf).map_err(ClientError::Stopped)?;
                    r.buf.clear();
                }
                if !r.more()? {
                    return Ok(Vec::new());
                }
            }
        }
        let bad = || ClientError::Protocol("bad chunked body".into());
        loop {
            // A chunk's size line.
            let eol = loop {
                if let Some(e) = r.buf.windows(2).position(|w| w == b"\r\n") {
                    break e;
                }
                if !r.more()? {
                    return Err(ClientError::Protocol("the stream ended mid-chunk".into()));
                }
            };
            let line = std::str::from_utf8(&r.buf[..eol]).map_err(|_| bad())?;
            let mut left = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad())?;
            r.buf.drain(..eol + 2);
            if left == 0 {
                break;
            }
            // Its data, handed on as it comes, then its CRLF.
            while left > 0 {
                if r.buf.is_empty() && !r.more()? {
                    return Err(ClientError::Protocol("the stream ended mid-chunk".into()));
                }
                let n = left.min(r.buf.len());
                sink(&r.buf[..n]).map_err(ClientError::Stopped)?;
                r.buf.drain(..n);
                left -= n;
            }
            while r.buf.len() < 2 {
                if !r.more()? {
                    return Err(ClientError::Protocol("the stream ended mid-chunk".into()));
                }
            }
            r.buf.drain(..2);
        }
        // Trailer fields, up to an empty line.
        let mut trailers = Vec::new();
        loop {
            let eol = loop {
                if let Some(e) = r.buf.windows(2).position(|w| w == b"\r\n") {
                    break e;
                }
                if !r.more()? {
                    return Ok(trailers);
                }
            };
            if eol == 0 {
                return Ok(trailers);
            }
            if let Some((k, v)) = std::str::from_utf8(&r.buf[..eol])
                .ok()
                .and_then(|l| l.split_once(':'))
            {
                trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            r.buf.drain(..eol + 2);
        }
    }
}

/// The read side of a streamed answer.
struct StreamReader<'a> {
    path: &'a Path,
    s: UnixStream,
    buf: Vec<u8>,
    idle: &'a mut dyn FnMut() -> std::io::Result<()>,
}

impl StreamReader<'_> {
    /// Reads more into `buf`; false at the end of the stream. A read that
    /// times out calls `idle` (which may stop the stream) and tries again.
    fn more(&mut self) -> Result<bool, ClientError> {
        let mut tmp = [0u8; 65536];
        loop {
            match self.s.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    (self.idle)().map_err(ClientError::Stopped)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ClientError::Io {
                        path: self.path.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }
}

fn parse_response(buf: &[u8]) -> Result<Response, ClientError> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no end of headers".into()))?;
    let (status, chunked) = parse_head(&buf[..end])?;
    let raw = &buf[end + 4..];
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok(Response { status, body })
}

/// The status of a response head (without its final CRLF CRLF), and
/// whether its body is chunked.
fn parse_head(head: &[u8]) -> Result<(u16, bool), ClientError> {
    let head = std::str::from_utf8(head)
        .map_err(|_| ClientError::Protocol("headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad status line {status_line:?}")))?;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    Ok((status, chunked))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, ClientError> {
    let bad = || ClientError::Protocol("bad chunked body".into());
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_str = std::str::from_utf8(&raw[..eol]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn retries_until_switchd_listens_then_answers() {
        let d = std::env::temp_dir().join(format!("psw-client-retry-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        let sock = d.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let path = sock.clone();
        // switchd comes up 150 ms late, answers 503 once, then 200.
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut c, _) = l.accept().expect("accept");
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let body = "{}";
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let quick = Client::new(&sock);
        assert!(quick
            .raw("GET", "/readyz", None)
            .is_err_and(|e| e.is_unreachable()));
        let patient = Client::new(&sock).with_retry(Duration::from_secs(3));
        let r = patient.raw("GET", "/readyz", None).map(|r| r.status);
        assert_eq!(r.ok(), Some(200));
        let _ = server.join();
        let _ = std::fs::remove_dir_all(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_chunks_as_they_come_and_reads_trailers() {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("psw-client-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap();
            assert!(std::str::from_utf8(&req[..n])
                .unwrap()
                .contains("TE: trailers"));
            // Split mid-chunk and mid-size-line, with pauses (the client's
            // idle callback runs meanwhile).
            for part in [
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"[..],
                b"cde\r\n",
                b"1",
                b"0\r\n0123456789abcdef\r\n0\r\nx-capture-frames: 2\r\n",
                b"x-capture-dropped: 0\r\n\r\n",
            ] {
                s.write_all(part).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let c = Client::new(&path);
        let mut got = Vec::new();
        let mut idles = 0;
        let t = c
            .stream(
                "/x",
                Duration::from_millis(10),
                &mut |b| {
                    got.extend_from_slice(b);
                    Ok(())
                },
                &mut || {
                    idles += 1;
                    Ok(())
                },
            )
            .unwrap();
        server.join().unwrap();
        assert_eq!(got, b"abcde0123456789abcdef");
        assert_eq!(
            t,
            vec![
                ("x-capture-frames".to_string(), "2".to_string()),
                ("x-capture-dropped".to_string(), "0".to_string())
            ]
        );
        assert!(idles > 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, b"{}".as_slice()));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 xx\r\n\r\n").is_err());
    }
}
