//! Upstream connections: DNS (off the worker), TCP, TLS, and the pool.

mod pool;
mod stream;
pub mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio_rustls::TlsConnector;
use rustls_pki_types::ServerName;

pub use pool::{Pool, Slot};
pub use stream::UpstreamStream;

use crate::error::ProxyError;
use crate::providers::Target;

/// How long a DNS answer is reused before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Host names a worker remembers; at the bound, expired answers go, and if
/// that is not enough, all of them (hosts come from the provider table and
/// registered deployments, but those can change at run time).
const DNS_MAX_ENTRIES: usize = 1024;

/// Per-worker cache of resolved upstream addresses.
#[derive(Default)]
pub struct DnsCache {
    entries: RefCell<HashMap<String, (Vec<SocketAddr>, Instant)>>,
}

impl DnsCache {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ProxyError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = format!("{host}:{port}");
        if let Some((addrs, at)) = self.entries.borrow().get(&key)
            && at.elapsed() < DNS_TTL
        {
            return Ok(addrs.clone());
        }
        // getaddrinfo blocks: run it on the blocking pool, never on a worker.
        let lookup = key.clone();
        let addrs = monoio::spawn_blocking(move || lookup.to_socket_addrs().map(Vec::from_iter))
            .await
            .map_err(|_| {
                ProxyError::UpstreamConnect(std::io::Error::other("DNS lookup cancelled"))
            })?
            .map_err(ProxyError::UpstreamConnect)?;
        if addrs.is_empty() {
            return Err(ProxyError::UpstreamConnect(std::io::Error::other(format!(
                "{host} has no address"
            ))));
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= DNS_MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < DNS_TTL);
            if entries.len() >= DNS_MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

/// Opens a new connection to `target` (TCP, then TLS for https).
pub async fn connect(
    target: &Target,
    connect_timeout: Duration,
    dns: &DnsCache,
    tls: &TlsConnector,
) -> Result<UpstreamStream, ProxyError> {
    let attempt = async {
        let addrs = dns.resolve(&target.host, target.port).await?;
        let mut last_error = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_addr(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let tcp = match tcp {
            Some(tcp) => tcp,
            None => {
                return Err(ProxyError::UpstreamConnect(last_error.unwrap_or_else(
                    || std::io::Error::other("no address to connect to"),
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return Ok(UpstreamStream::Plain(tcp));
        }
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| ProxyError::UpstreamTls(e.to_string()))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| ProxyError::UpstreamTls(e.to_string()))?;
        Ok(UpstreamStream::Tls(Box::new(stream)))
    };
    match monoio::time::timeout(connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::UpstreamConnectTimeout),
    }
}
