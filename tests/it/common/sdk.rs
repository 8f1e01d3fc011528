//! The providers' official Python SDKs as clients, for wire-format checks.
//!
//! [`sdk_python`] finds the Python that has them (`LLM_PROXY_SDK_PYTHON`,
//! set by CI, which installs them in a venv); [`run_sdk_script`] runs one
//! of the scripts in `tests/sdk/` with it. Where that Python is not
//! configured a test says so and passes, unless `LLM_PROXY_REQUIRE_SDK=1`
//! makes that a failure.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{TempDir, wait_or_kill};

/// How long one SDK script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Variables of the SDKs that would point them elsewhere or add a key.
const SDK_ENV: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GEMINI_BASE_URL",
];

/// The Python of the SDK venv, or `None` (with the reason printed) when
/// `LLM_PROXY_SDK_PYTHON` is not set; panics then if `LLM_PROXY_REQUIRE_SDK=1`.
pub fn sdk_python() -> Option<PathBuf> {
    let required = std::env::var("LLM_PROXY_REQUIRE_SDK").is_ok_and(|v| v == "1");
    match std::env::var_os("LLM_PROXY_SDK_PYTHON") {
        Some(python) if !python.is_empty() => {
            let python = PathBuf::from(python);
            assert!(
                python.is_file(),
                "LLM_PROXY_SDK_PYTHON={} is not a file",
                python.display()
            );
            Some(python)
        }
        _ => {
            assert!(
                !required,
                "LLM_PROXY_REQUIRE_SDK=1 but LLM_PROXY_SDK_PYTHON is not set (.ci/run sets up the SDK venv)"
            );
            eprintln!(
                "skipped: LLM_PROXY_SDK_PYTHON is not set (a Python with the official SDKs; .ci/run sets it up)"
            );
            None
        }
    }
}

/// Runs `tests/sdk/<script>` with `args` and `envs` under the SDK Python;
/// it must exit 0 within two minutes. Returns its stdout, or `None` when
/// skipped (see [`sdk_python`]).
#[track_caller]
pub fn run_sdk_script(script: &str, args: &[&str], envs: &[(&str, &str)]) -> Option<String> {
    let python = sdk_python()?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let dir = TempDir::new("sdk");
    let stdout = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let mut cmd = Command::new(&python);
    cmd.arg(&path)
        .args(args)
        .current_dir(dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for name in SDK_ENV {
        cmd.env_remove(name);
    }
    for (name, value) in envs {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().expect("start the SDK Python");
    let status = wait_or_kill(&mut child, SCRIPT_TIMEOUT, || script.to_string());
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    assert!(
        status.success(),
        "{script} {args:?} failed ({status}):\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    Some(stdout)
}
