//! Unit and golden tests of the Gemini translations. Golden outputs sit
//! beside their inputs in `testdata/`; `UPDATE_GOLDEN=1 cargo test --lib
//! dialect::gemini` rewrites them (review the diff).

mod error;
mod golden;
mod request;
mod response;
mod stream;

use std::path::PathBuf;

pub(super) fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/dialect/gemini/testdata")
        .join(name)
}

pub(super) fn read(name: &str) -> Vec<u8> {
    let path = testdata(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the golden file `name`, or writes it when
/// `UPDATE_GOLDEN` is set.
pub(super) fn golden(name: &str, actual: &[u8]) {
    let path = testdata(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "golden file {name} differs (UPDATE_GOLDEN=1 rewrites it)"
    );
}

/// JSON bytes, pretty, with a final newline: how golden JSON is stored.
pub(super) fn pretty(bytes: &[u8]) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let mut out = serde_json::to_vec_pretty(&value).unwrap();
    out.push(b'\n');
    out
}
