//! The explorer's HTTP server: GET and HEAD of the site's files, nothing else.
//!
//! The site is a fixed map of file names held in memory, so no request can reach the file system: a path is
//! percent-decoded, `/` means `index.html`, and anything that is not exactly one of the site's names gets 404 (a
//! `..` segment, `%2e%2e`, a backslash, an absolute or absolute-form path, an unknown file). Each connection is
//! served on its own thread and closed after one response.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::site::Site;
use crate::error::{Error, Result};

/// The longest request head read (request line and headers).
const MAX_HEAD: usize = 16 << 10;

/// How long a client may take to send its request, or to take the response.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening socket, to serve one site.
pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Listens on `host`:`port` (port 0: any free port). Errors say what to change: a port in use, one that
    /// needs privileges, an address that is not this machine's. Bind before building the site, so that these
    /// come at once.
    pub fn bind(host: &str, port: u16) -> Result<Server> {
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::Invalid(format!(
                    "--host {host:?}: not an address or a host name this machine resolves ({e}); the default, \
                     127.0.0.1, serves this machine only"
                ))
            })?
            .collect();
        let mut last = None;
        for addr in &addrs {
            match TcpListener::bind(addr) {
                Ok(listener) => return Ok(Server { listener }),
                Err(e) => last = Some(e),
            }
        }
        let Some(e) = last else {
            return Err(Error::Invalid(format!(
                "--host {host:?} resolves to no address"
            )));
        };
        let at = format!("{host}:{port}");
        Err(Error::Invalid(match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "port {port} is already in use on {host} (another `vae web`, or another server): stop it, or \
                 choose another port with --port N (--port 0 picks a free one)"
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "listening on {at} is not permitted ({e}); ports below 1024 need privileges: choose a port \
                 above 1024 with --port N"
            ),
            std::io::ErrorKind::AddrNotAvailable => format!(
                "cannot listen on {at}: {host} is not an address of this machine ({e}); use --host 127.0.0.1 \
                 (the default) or one of this machine's addresses"
            ),
            _ => format!("cannot listen on {at}: {e}"),
        }))
    }

    /// The address it listens on (with the port chosen, for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::Io {
            what: "reading the server's address".into(),
            message: e.to_string(),
        })
    }

    /// The page's address, e.g. `http://127.0.0.1:8080/`.
    pub fn url(&self) -> Result<String> {
        let addr = self.local_addr()?;
        Ok(format!("http://{addr}/"))
    }

    /// Serves `site` until the process ends.
    pub fn serve(self, site: Site) -> Result<()> {
        let site = Arc::new(site);
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else {
                // A connection that failed before it was accepted concerns that client only.
                continue;
            };
            let site = Arc::clone(&site);
            // One thread per connection. Where the system has no thread to give, the connection is dropped
            // (the browser retries); the server goes on.
            let _ = std::thread::Builder::new()
                .name("vae-web-client".into())
                .spawn(move || serve_client(&site, stream));
        }
        Ok(())
    }
}

/// Reads one request from `stream` and answers it. A client's errors (a timeout, a reset) end its connection.
fn serve_client(site: &Site, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let response = match read_head(&mut stream) {
        Ok(head) => respond(site, &head),
        Err(status) => Response::error(status),
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.flush();
}

/// The request head up to its blank line, or the status to answer a bad one with.
fn read_head(stream: &mut TcpStream) -> Result<String, Status> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return Err(Status::HeaderTooLarge);
        }
        match stream.read(&mut buf) {
            Ok(0) if head.is_empty() => return Err(Status::BadRequest),
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => return Err(Status::BadRequest),
        }
    }
    String::from_utf8(head).map_err(|_| Status::BadRequest)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeaderTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeaderTooLarge => 431,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeaderTooLarge => "Request Header Fields Too Large",
        }
    }
}

/// An HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Whether the body is left out (HEAD), its length still given.
    pub head_only: bool,
}

impl Response {
    fn error(status: Status) -> Response {
        let text = match status {
            Status::NotFound => "404 not found: this server serves only the explorer's own files\n",
            Status::MethodNotAllowed => "405 method not allowed: use GET or HEAD\n",
            _ => "the request could not be read\n",
        };
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
            head_only: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\n\
             X-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len()
        );
        if self.status == Status::MethodNotAllowed {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The answer to a request whose head is `head`.
pub fn respond(site: &Site, head: &str) -> Response {
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::error(Status::BadRequest);
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Response::error(Status::BadRequest);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::error(Status::MethodNotAllowed),
    };
    let found = resolve(target).and_then(|name| site.get(&name));
    let mut response = match found {
        Some(f) => Response {
            status: Status::Ok,
            content_type: f.content_type,
            body: f.bytes.clone(),
            head_only: false,
        },
        None => Response::error(Status::NotFound),
    };
    response.head_only = head_only;
    response
}

/// The site file name a request target names, or `None` for anything that is not a plain name: the target must
/// be an origin-form path (`/name`, optionally with a query), percent-decoded to UTF-8, with no empty, `.` or
/// `..` segment and no backslash or control character. The site map then decides; this refuses early so that a
/// site with subdirectories stays safe.
pub fn resolve(target: &str) -> Option<String> {
    let path = target.split(['?', '#']).next()?;
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some("index.html".into());
    }
    let decoded = percent_decode(rest)?;
    let plain = decoded.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && !seg.contains('\\')
            && !seg.chars().any(char::is_control)
    });
    (plain && !decoded.contains(':')).then_some(decoded)
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_resolve() {
        assert_eq!(resolve("/").as_deref(), Some("index.html"));
        assert_eq!(resolve("/app.js?v=2").as_deref(), Some("app.js"));
        assert_eq!(resolve("/model%2Ejson").as_deref(), Some("model.json"));
        for bad in [
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/%2E%2E%2FCargo.toml",
            "/..%2fCargo.toml",
            "/./index.html",
            "//etc/passwd",
            "/a//b",
            "/..\\Cargo.toml",
            "/%5c..%5cCargo.toml",
            "/C:/Windows/win.ini",
            "http://127.0.0.1/index.html",
            "index.html",
            "*",
            "/%zz",
            "/%ff",
            "/a%00b",
        ] {
            assert_eq!(resolve(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_get_the_right_status() {
        let site = super::super::site::tests_support::tiny_site();
        let status = |head: &str| respond(&site, head).status;
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), Status::Ok);
        assert_eq!(status("GET /index.html HTTP/1.0\r\n\r\n"), Status::Ok);
        assert_eq!(
            status("GET /../index.html HTTP/1.1\r\n\r\n"),
            Status::NotFound
        );
        assert_eq!(status("GET /missing.js HTTP/1.1\r\n\r\n"), Status::NotFound);
        assert_eq!(status("POST / HTTP/1.1\r\n\r\n"), Status::MethodNotAllowed);
        assert_eq!(status("GET /\r\n\r\n"), Status::BadRequest);
        let head = respond(&site, "HEAD / HTTP/1.1\r\n\r\n").to_bytes();
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n"));
        assert!(!text.contains("Content-Length: 0\r\n"), "{text}");
    }
}
