//! rustls client configuration for HTTPS upstreams: the roots of
//! `http::tls` (the system's, plus an optional CA file for private
//! upstreams).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

pub fn client_config(extra_ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = crate::http::tls::roots(extra_ca).map_err(anyhow::Error::msg)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
