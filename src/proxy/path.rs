//! The path in its normal form, checked before anything is decided from it.

use crate::error::ProxyError;

/// Refuses a path that is not in normal form, before anything is decided
/// from it. Every decision (routing by model, the endpoint allowlist, the
/// cache key) compares the path byte for byte and the upstream gets it as it
/// is, so a spelling that an upstream could read as another path (`//`, a
/// trailing `/`, `.` and `..`, `\`, a fragment, a percent-encoded slash, dot
/// or other unreserved character) is refused rather than rewritten: what
/// the checks saw is exactly what goes upstream. A normal path (the usual
/// case) costs one pass over its bytes and no allocation.
pub fn check_path(path: &[u8]) -> Result<(), ProxyError> {
    match abnormality(path) {
        None => Ok(()),
        Some(what) => Err(ProxyError::BadRequest(format!(
            "the path must be in normal form (like /v1/chat/completions); it has {what}"
        ))),
    }
}

/// What makes `path` (a request target without its query, starting with
/// `/`) other than normal, if anything.
fn abnormality(path: &[u8]) -> Option<&'static str> {
    if path.len() > 1 && path.ends_with(b"/") {
        return Some("a trailing slash");
    }
    // Before the leading slash: nothing.
    for segment in path.split(|&b| b == b'/').skip(1) {
        match segment {
            b"" if path.len() > 1 => return Some("an empty segment (a double slash)"),
            b"." | b".." => return Some("a dot segment"),
            _ => {}
        }
        for (at, &byte) in segment.iter().enumerate() {
            match byte {
                b'\\' => return Some("a backslash"),
                b'#' => return Some("a fragment"),
                b'%' => match segment.get(at + 1..at + 3).and_then(hex_byte) {
                    None => return Some("a malformed percent-encoding"),
                    Some(b'/' | b'\\') => return Some("a percent-encoded slash"),
                    Some(decoded) if is_unreserved(decoded) => {
                        return Some("a percent-encoded letter, digit, dot or '-_~'");
                    }
                    Some(_) => {}
                },
                _ => {}
            }
        }
    }
    None
}

fn hex_byte(digits: &[u8]) -> Option<u8> {
    let value = |d: u8| (d as char).to_digit(16);
    Some((value(digits[0])? * 16 + value(digits[1])?) as u8)
}

/// RFC 3986 §2.3: characters that mean the same encoded or not.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::abnormality;

    #[test]
    fn normal_paths_pass() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/v1/files/file-abc.txt/content",
            "/v1/models/ft:gpt-4o-mini:org::abc",
            "/v1/files/a%20b",
            "/v1/files/a%3Ab%25",
            "/v1/files/..a/b..",
        ] {
            assert_eq!(abnormality(path.as_bytes()), None, "{path}");
        }
    }

    #[test]
    fn other_spellings_are_refused() {
        for path in [
            "/v1/chat/completions/",
            "/v1//chat/completions",
            "//v1/chat/completions",
            "/v1/chat/completions//",
            "/v1/chat/../admin",
            "/v1/./chat/completions",
            "/v1/.",
            "/v1/%2E%2e/admin",
            "/v1/%2e/admin",
            "/v1/files%2f..%2fx",
            "/v1/files%5Cx",
            "/v1/chat\\completions",
            "/v1/chat/complet%69ons",
            "/v1/chat/completions%7E",
            "/v1/chat/completions#x",
            "/v1/files/%",
            "/v1/files/%4",
            "/v1/files/%zz",
        ] {
            assert!(abnormality(path.as_bytes()).is_some(), "{path}");
        }
    }
}
