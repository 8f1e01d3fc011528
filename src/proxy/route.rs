//! Phase 2, route: pick the provider and check the endpoint and method.

use super::error::ProxyError;
use crate::http::RequestHead;
use crate::providers::Provider;
use crate::server::worker::Worker;

pub fn route<'w>(
    worker: &'w Worker,
    head: &RequestHead,
    buf: &[u8],
) -> Result<(usize, &'w Provider), ProxyError> {
    let path = head.path(buf);
    if has_unsafe_segment(path) {
        return Err(ProxyError::BadRequest(
            "dot segments and encoded slashes are not allowed in the path".into(),
        ));
    }
    let table = &worker.settings.providers;
    let provider = table.default_provider();
    if !provider.allows_path(path) {
        return Err(ProxyError::EndpointNotAllowed(
            String::from_utf8_lossy(path).into_owned(),
        ));
    }
    if !provider.allows_method(&head.method) {
        return Err(ProxyError::MethodNotAllowed {
            method: head.method.clone(),
            allow: provider.allow.clone(),
        });
    }
    Ok((table.default, provider))
}

/// Segments that could make the upstream resolve a different path than the
/// one the allowlist checked.
fn has_unsafe_segment(path: &[u8]) -> bool {
    const DOTS: [&[u8]; 6] = [b".", b"..", b"%2e", b"%2e%2e", b".%2e", b"%2e."];
    path.split(|&b| b == b'/').any(|segment| {
        DOTS.iter().any(|dots| segment.eq_ignore_ascii_case(dots))
            || segment
                .windows(3)
                .any(|w| w.eq_ignore_ascii_case(b"%2f") || w.eq_ignore_ascii_case(b"%5c"))
    })
}

#[cfg(test)]
mod tests {
    use super::has_unsafe_segment;

    #[test]
    fn unsafe_segments() {
        assert!(!has_unsafe_segment(b"/v1/chat/completions"));
        assert!(has_unsafe_segment(b"/v1/chat/../admin"));
        assert!(has_unsafe_segment(b"/v1/%2E%2e/admin"));
        assert!(has_unsafe_segment(b"/v1/files%2f..%2fx"));
        assert!(!has_unsafe_segment(b"/v1/files/file.txt"));
    }
}
