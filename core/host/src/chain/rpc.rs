//! A small JSON-RPC client in bitcoind's dialect, over plain TCP or TLS.
//!
//! Hand-written rather than taken from lightning-block-sync because btcd answers with neither
//! `Content-Length` nor chunked encoding (the body ends when the connection closes), which that
//! crate's HTTP client cannot read. One connection per call with `Connection: close` keeps it
//! correct against both btcd and bitcoind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Largest response body accepted: a full regtest block is far smaller, and a bound keeps a
/// misbehaving server from exhausting memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Deadline for one call, connect to last byte.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach a chain node's RPC; the same shape `regtest.json` stores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    pub user: String,
    pub password: String,
    /// PEM file of the CA (or self-signed certificate) to trust for `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<PathBuf>,
}

/// Why an RPC call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("invalid RPC URL {0:?}: expected http://host:port or https://host:port")]
    BadUrl(String),
    #[error("cannot read CA certificate {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("I/O error talking to the chain node: {0}")]
    Io(#[from] std::io::Error),
    #[error("the chain node rejected the RPC user or password (HTTP 401)")]
    Unauthorized,
    #[error("HTTP {status} from the chain node: {body}")]
    Http { status: u16, body: String },
    #[error("RPC error {code} in {method}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("malformed answer to {method}: {reason}")]
    Decode { method: String, reason: String },
    #[error("RPC call {0} timed out")]
    Timeout(String),
}

impl RpcError {
    /// Errors that retrying cannot fix (configuration), as opposed to a node that is down or busy.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RpcError::BadUrl(_) | RpcError::BadCa { .. } | RpcError::Unauthorized
        )
    }

    /// The chain node could not be reached or did not answer (down, restarting, hung): the
    /// request may never have arrived, so sending it again later is the remedy.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. } | RpcError::Io(_) | RpcError::Timeout(_)
        )
    }
}

/// JSON-RPC client; cheap to clone, counts calls per method.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    auth: String,
    tls: Option<TlsConnector>,
    next_id: AtomicU64,
    calls: Mutex<HashMap<String, u64>>,
}

impl RpcClient {
    pub fn new(config: &RpcConfig) -> Result<Self, RpcError> {
        let bad = || RpcError::BadUrl(config.url.clone());
        let (https, rest) = if let Some(r) = config.url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = config.url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || authority.contains('/') {
            return Err(bad());
        }
        let tls = if https {
            Some(tls_connector(config.ca_path.as_ref())?)
        } else {
            None
        };
        let auth = bitcoin::base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", config.user, config.password));
        Ok(RpcClient {
            inner: Arc::new(Inner {
                host: host.to_string(),
                port,
                auth,
                tls,
                next_id: AtomicU64::new(1),
                calls: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How many times `method` was called so far.
    pub fn call_count(&self, method: &str) -> u64 {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Calls `method` with positional `params` and decodes its `result`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<T, RpcError> {
        *self
            .inner
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method.to_string())
            .or_default() += 1;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            serde_json::json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params})
                .to_string();
        let raw = tokio::time::timeout(CALL_TIMEOUT, self.post(&body))
            .await
            .map_err(|_| RpcError::Timeout(method.to_string()))??;
        decode_response(method, &raw)
    }

    async fn post(&self, body: &str) -> Result<Vec<u8>, RpcError> {
        let inner = &self.inner;
        let addr = format!("{}:{}", inner.host, inner.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| RpcError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // The request follows the TLS handshake's last flight at once: without this, Nagle
        // holds it until that flight is acknowledged, which the server delays (~40 ms a call).
        tcp.set_nodelay(true)?;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            inner.auth,
            body.len()
        );
        match &inner.tls {
            None => exchange(tcp, &request).await,
            Some(connector) => {
                let name = ServerName::try_from(inner.host.clone())
                    .map_err(|_| RpcError::BadUrl(inner.host.clone()))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|source| RpcError::Connect { addr, source })?;
                exchange(tls, &request).await
            }
        }
    }
}

fn tls_connector(ca_path: Option<&PathBuf>) -> Result<TlsConnector, RpcError> {
    let path = ca_path.ok_or_else(|| RpcError::BadCa {
        path: PathBuf::new(),
        reason: "https needs a CA certificate (ca_path)".into(),
    })?;
    let bad = |reason: String| RpcError::BadCa {
        path: path.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in file".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Writes the request and reads the whole response (until the server closes).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Vec<u8>, RpcError> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Servers that close without TLS close_notify (btcd) end the body here.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err(RpcError::Http {
                status: 0,
                body: "response too large".into(),
            });
        }
    }
    Ok(buf)
}

/// Splits an HTTP response into status and body, honouring `Content-Length`, chunked encoding,
/// or neither (body runs to the end, as btcd sends it).
fn parse_http(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "non-UTF-8 HTTP header")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad HTTP status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_str = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).ok_or("truncated chunk")?);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: Option<T>,
    error: Option<RpcErrorObject>,
}

#[derive(Deserialize)]
struct RpcErrorObject {
    code: i64,
    message: String,
}

fn decode_response<T: DeserializeOwned>(method: &str, raw: &[u8]) -> Result<T, RpcError> {
    let decode = |reason: String| RpcError::Decode {
        method: method.to_string(),
        reason,
    };
    let (status, body) = parse_http(raw).map_err(|r| decode(r.to_string()))?;
    if status == 401 {
        return Err(RpcError::Unauthorized);
    }
    // bitcoind answers RPC errors with HTTP 500 and a JSON body; only non-JSON bodies are HTTP errors.
    let envelope: Envelope<T> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) if status == 200 => return Err(decode(e.to_string())),
        Err(_) => {
            let body = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(RpcError::Http { status, body });
        }
    };
    if let Some(err) = envelope.error {
        return Err(RpcError::Rpc {
            method: method.to_string(),
            code: err.code,
            message: err.message,
        });
    }
    match envelope.result {
        Some(r) => Ok(r),
        // `null` results (e.g. `addnode`) decode into `()` or `Option`.
        None => serde_json::from_value(serde_json::Value::Null).map_err(|e| decode(e.to_string())),
    }
}

/// What [`RpcClient::call`] makes of the raw bytes a chain node sent for `method`: the HTTP
/// split, the JSON-RPC envelope, the result as `T`. For fuzzing that exact path; not an API.
#[doc(hidden)]
pub fn parse_reply<T: DeserializeOwned>(method: &str, raw: &[u8]) -> Result<T, RpcError> {
    decode_response(method, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_close_delimited_body_like_btcd() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"result\":5,\"error\":null,\"id\":1}\n";
        let v: u64 = decode_response("getblockcount", raw).unwrap();
        assert_eq!(v, 5);
    }

    #[test]
    fn parses_chunked_and_content_length() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"res\r\n16\r\nult\":7,\"error\":null}xx\r\n0\r\n\r\n";
        let (_, body) = parse_http(chunked).unwrap();
        assert_eq!(&body, b"{\"result\":7,\"error\":null}xx");
        let sized =
            b"HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\n{\"result\":8,\"error\":null}garbage";
        assert_eq!(decode_response::<u64>("x", sized).unwrap(), 8);
    }

    #[test]
    fn maps_errors() {
        let unauthorized = b"HTTP/1.1 401 Unauthorized\r\n\r\n";
        assert!(matches!(
            decode_response::<u64>("x", unauthorized),
            Err(RpcError::Unauthorized)
        ));
        let rpc = b"HTTP/1.1 500 Internal\r\n\r\n{\"result\":null,\"error\":{\"code\":-5,\"message\":\"Block not found\"}}";
        assert!(matches!(
            decode_response::<u64>("x", rpc),
            Err(RpcError::Rpc { code: -5, .. })
        ));
        assert!(matches!(
            decode_response::<u64>("x", b"garbage"),
            Err(RpcError::Decode { .. })
        ));
        let bad = RpcConfig {
            url: "ftp://x".into(),
            user: "u".into(),
            password: "p".into(),
            ca_path: None,
        };
        assert!(matches!(RpcClient::new(&bad), Err(RpcError::BadUrl(_))));
    }
}
