//! Opening connections to the target (TCP, TLS for https) with the
//! gateway's own upstream connector, and telling why one failed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use monoio_rustls::TlsConnector;

use super::record::ErrorKind;
use crate::error::ProxyError;
use crate::providers::Target;
use crate::upstream::{self, DnsCache, UpstreamStream};

/// A keep-alive connection and its read buffer.
pub struct Conn {
    pub stream: UpstreamStream,
    pub buf: Vec<u8>,
}

/// A failed connect: its kind for the counts, and words for a person.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub kind: ErrorKind,
    pub reason: String,
}

/// The TLS client configuration: the system's roots plus `ca_file` for an
/// https target; a cheap empty one for plain http (never used there).
pub fn tls_connector(target: &Target, ca_file: Option<&Path>) -> anyhow::Result<TlsConnector> {
    let config = if target.tls {
        upstream::tls::client_config(ca_file)?
    } else {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    Ok(TlsConnector::from(config))
}

pub async fn connect(
    target: &Target,
    timeout: Duration,
    dns: &DnsCache,
    tls: &TlsConnector,
) -> Result<Conn, ConnectError> {
    match upstream::connect(target, timeout, dns, tls).await {
        Ok(stream) => Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 << 10),
        }),
        Err(error) => Err(classify(error, timeout)),
    }
}

fn classify(error: ProxyError, timeout: Duration) -> ConnectError {
    let (kind, reason) = match error {
        ProxyError::UpstreamConnect(io) => {
            let kind = if io.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorKind::ConnectRefused
            } else {
                ErrorKind::Connect
            };
            (kind, io.to_string())
        }
        ProxyError::UpstreamConnectTimeout => (
            ErrorKind::ConnectTimeout,
            format!(
                "no connection within {}",
                humantime::format_duration(timeout)
            ),
        ),
        ProxyError::UpstreamTls(reason) => {
            (ErrorKind::Tls, format!("TLS handshake failed: {reason}"))
        }
        other => (ErrorKind::Connect, other.to_string()),
    };
    ConnectError { kind, reason }
}
