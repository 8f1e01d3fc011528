//! rustls client configuration for HTTPS upstreams: the system's roots (or
//! the bundled webpki roots where the system has none), plus an optional CA
//! file for private upstreams.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub fn client_config(extra_ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read CA file {}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("invalid PEM in CA file {}", path.display()))?;
        if certs.is_empty() {
            bail!("CA file {} holds no certificate", path.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("unusable certificate in {}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
