//! What the relay's two HTTPS clients share: the MTA-STS policy fetch
//! (RFC 8461 §3.3) and the TLS report upload (RFC 8460 §5.2). Both verify
//! the server's certificate against the relay's outbound trust roots with
//! TLS 1.2 or later, and both persist small JSON state files atomically.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use postern_certs::durable;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::net::dns::Resolver;

/// A TLS client verifying servers against `roots` (WebPKI), TLS 1.2 or 1.3
/// (RFC 8461 §7.2; RFC 8460 §5.2 asks for the same of report servers).
pub(crate) fn connector(roots: Arc<RootCertStore>) -> Result<TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The host's addresses could not be looked up.
    Resolve(String),
    /// No address accepted the connection (the last error).
    Connect(String),
    /// The host is not a valid TLS server name.
    Name(String),
    /// The handshake or the certificate check failed.
    Tls(io::Error),
}

/// Connects to `host` on `port` (its addresses from `resolver`, or the
/// address itself), the first address that answers, and completes a TLS
/// handshake that verifies the certificate for `host`.
pub(crate) async fn connect<R: Resolver>(
    connector: &TlsConnector,
    resolver: &R,
    host: &str,
    port: u16,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver
            .addresses(host)
            .await
            .map_err(|e| ConnectError::Resolve(e.to_string()))?,
    };
    let mut last = String::from("no address");
    let mut tcp = None;
    for ip in ips {
        match TcpStream::connect((ip, port)).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("{ip}: {e}"),
        }
    }
    let tcp = tcp.ok_or(ConnectError::Connect(last))?;
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| ConnectError::Name(e.to_string()))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)
}

/// Aborts a hyper connection task when the exchange that spawned it ends
/// early (an error, a timeout).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `value` as JSON to `path` atomically and durably
/// ([`durable::replace_file`]: temporary file, fsync, rename, fsync of the
/// directory).
pub(crate) fn write_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("state path has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    // 0o666 before the umask: the mode `File::create` gives.
    durable::replace_file(&path.with_extension("json.tmp"), path, &json, 0o666)
}
