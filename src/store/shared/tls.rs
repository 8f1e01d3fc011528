//! TLS to PostgreSQL with rustls (ring): the roots of `http::tls` (the
//! system's, plus `DATABASE_CA_FILE`). Whether TLS is used follows the URL's
//! `sslmode` (`prefer` by default: TLS when the server offers it).

use std::path::Path;
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::SharedError;

pub fn connector(extra_ca: Option<&Path>) -> Result<MakeRustlsConnect, SharedError> {
    let roots = crate::http::tls::roots(extra_ca).map_err(SharedError::Invalid)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SharedError::Invalid(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
