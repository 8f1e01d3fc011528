//! TLS to PostgreSQL with rustls (ring): the system's roots, or the bundled
//! webpki roots where the system has none. Whether TLS is used follows the
//! URL's `sslmode` (`prefer` by default: TLS when the server offers it).

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::SharedError;

pub fn connector() -> Result<MakeRustlsConnect, SharedError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SharedError::Invalid(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
