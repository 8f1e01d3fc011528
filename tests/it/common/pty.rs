//! `llm-proxy` on a pseudo-terminal, for the interactive commands.
//!
//! [`Pty`] runs `script -qfec 'exec llm-proxy <args>' /dev/null` (util-linux)
//! with a cleared environment but for `TERM` (and `HOME` if given). What the
//! terminal shows is collected by a thread; [`Pty::expect`] waits for a text
//! after what was matched before, [`Pty::send`] types keys.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Pty::expect`] waits for its text.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(20);

/// `llm-proxy` on a pseudo-terminal made by `script(1)`.
pub struct Pty {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
    /// Collects the output; done once `script` has exited.
    reader: JoinHandle<()>,
    /// Output up to here has been matched already.
    seen: usize,
    exited: bool,
}

impl Pty {
    /// Runs `llm-proxy <args>` on a terminal of type `term`, in `dir`, with
    /// `HOME` set to `home` if given and nothing else in its environment.
    pub fn spawn(args: &[&str], dir: &Path, term: &str, home: Option<&Path>) -> Pty {
        if Command::new("script").arg("--version").output().is_err() {
            panic!("`script` (util-linux) is needed for this test");
        }
        // `exec`: signals (Ctrl-C) must reach llm-proxy alone, not a shell
        // around it.
        let mut command = format!("exec '{}'", super::bin());
        for arg in args {
            assert!(!arg.contains('\''), "{arg}");
            command.push_str(&format!(" '{arg}'"));
        }
        let mut script = Command::new("script");
        script
            .args(["-qfec", &command, "/dev/null"])
            .current_dir(dir)
            .env_clear()
            .env("TERM", term)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(home) = home {
            script.env("HOME", home);
        }
        let mut child = script.spawn().expect("run script");
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take().unwrap();
        Pty {
            child,
            stdin,
            output,
            reader,
            seen: 0,
            exited: false,
        }
    }

    /// Everything the terminal showed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for `needle` after what was matched before.
    #[track_caller]
    pub fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + EXPECT_TIMEOUT;
        loop {
            let text = self.output();
            if let Some(at) = text[self.seen..].find(needle) {
                self.seen += at + needle.len();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} after {:?} in {text:?}",
                &text[..self.seen]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: impl AsRef<[u8]>) {
        self.stdin.write_all(keys.as_ref()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits up to `timeout` for the command to exit (killed and a panic
    /// after that), then for the rest of its output.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let output = self.output.clone();
        let status = super::wait_or_kill(&mut self.child, timeout, || {
            format!(
                "llm-proxy on a terminal; output:\n{}",
                output.lock().unwrap()
            )
        });
        self.exited = true;
        // The reader ends at the end of the output, once `script` is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
