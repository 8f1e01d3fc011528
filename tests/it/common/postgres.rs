//! A throw-away PostgreSQL cluster, for the tests of shared mode
//! (`DATABASE_URL=postgres://...`).
//!
//! [`PgCluster::start`] runs `initdb` in a fresh temporary directory and
//! starts a server on a free loopback port, with the role `llmproxy` (no
//! password: trust on loopback) and a database `llmproxy`; dropping it stops
//! the server and removes the directory. Each test starts its own: nothing is
//! shared with other tests or with a PostgreSQL the machine may already run,
//! a test may stop, kill and restart its server (what shared mode has to
//! survive) without disturbing the others, and nothing needs setting up but
//! the server's binaries, as for a newcomer: `initdb`, `pg_ctl` and
//! `postgres` on `PATH`, else in the newest `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package, which leaves them off `PATH`). Where there
//! are none a test says so and passes, unless `LLM_PROXY_REQUIRE_POSTGRES=1`
//! (set by CI, which installs them) makes that a failure.
//!
//! `initdb` and the server refuse to run as root; as root (CI's containers)
//! they run as the `postgres` user (made by Debian's package), else as
//! `nobody`, through util-linux's `setpriv` (or `runuser`).

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{TempDir, find_on_path, wait_or_kill};

/// The role and the database the tests use.
const NAME: &str = "llmproxy";
/// How long one `initdb`, `pg_ctl` or `psql` may run (`pg_ctl -w` gives up
/// after its own 60 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a killed server's processes may take to be gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's binaries a cluster needs, all in one directory.
const SERVER_TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A PostgreSQL server of its own, on `127.0.0.1`; stopped and removed on drop.
pub struct PgCluster {
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    psql: PathBuf,
    /// Who runs the server when the tests run as root.
    user: Option<User>,
    port: u16,
    /// Holds `data/` (the cluster), `log` (the server's) and its socket.
    dir: TempDir,
}

impl PgCluster {
    /// A new cluster, started, with the database `llmproxy`; `None` after
    /// saying so when PostgreSQL is not installed (a failure when
    /// `LLM_PROXY_REQUIRE_POSTGRES=1`).
    pub fn start() -> Option<PgCluster> {
        Self::start_with(|_| {})
    }

    /// A new cluster that speaks TLS (and plain text) with this certificate
    /// and key (PEM): `ssl = on` in its configuration.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Option<PgCluster> {
        Self::start_with(|cluster| {
            use std::os::unix::fs::PermissionsExt;
            let data = cluster.data();
            for (name, contents, mode) in [
                ("server.crt", cert_pem, 0o644),
                ("server.key", key_pem, 0o600),
            ] {
                let path = data.join(name);
                std::fs::write(&path, contents).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                if let Some(user) = &cluster.user {
                    chown(&path, Some(user.uid), Some(user.gid)).unwrap();
                }
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(&conf, text).unwrap();
        })
    }

    /// [`start`](Self::start), with `configure` run between `initdb` and
    /// the server's start.
    fn start_with(configure: impl FnOnce(&PgCluster)) -> Option<PgCluster> {
        let (bin, psql) = find_binaries()?;
        let user = User::for_server();
        let dir = TempDir::new("pg");
        if let Some(user) = &user {
            chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap_or_else(|error| {
                panic!("chown {} to {}: {error}", dir.path().display(), user.name)
            });
        }
        let mut cluster = PgCluster {
            bin,
            psql,
            user,
            port: 0,
            dir,
        };
        let mut initdb = cluster.server_command("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data())
            .args(["-U", NAME, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        let (status, out, err) = run(initdb);
        assert!(status.success(), "initdb failed ({status}):\n{out}{err}");
        configure(&cluster);
        // The port is free when picked, not necessarily when the server
        // binds it: another test may take it in between; then another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => break,
                Err(error) if attempts < 3 => {
                    eprintln!("PostgreSQL did not start, trying another port: {error}")
                }
                Err(error) => panic!("PostgreSQL did not start: {error}"),
            }
        }
        cluster.psql_in("postgres", &format!("CREATE DATABASE {NAME}"));
        Some(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://llmproxy@127.0.0.1:PORT/llmproxy`.
    pub fn url(&self) -> String {
        format!("postgres://{NAME}@127.0.0.1:{}/{NAME}", self.port)
    }

    /// Runs `sql` in the database `llmproxy` with `psql` and returns what it
    /// printed (unaligned, tuples only, without the last newline); panics
    /// with its stderr when it fails.
    #[track_caller]
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(NAME, sql)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.pg_ctl_stop("fast")
            .unwrap_or_else(|error| panic!("pg_ctl stop failed: {error}"));
    }

    /// Starts the server again, on the same port and directory, after
    /// [`stop`](Self::stop) or [`kill`](Self::kill).
    pub fn start_again(&self) {
        self.pg_ctl_start()
            .unwrap_or_else(|error| panic!("PostgreSQL did not start again: {error}"));
    }

    /// Kills the server at once (`kill -9` of the postmaster), as a crash
    /// would; returns once its processes are gone and its port is free.
    /// Committed transactions survive: the next start recovers from the WAL.
    pub fn kill(&self) {
        let pid = self.postmaster_pid();
        // The backends and helpers notice their postmaster's death and exit;
        // a new postmaster refuses to start while one still holds the old
        // shared memory, so wait for them too.
        let children = children_of(pid);
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 {pid} failed");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while std::iter::once(pid)
            .chain(children.iter().copied())
            .any(|pid| process_state(pid) == Some(Alive::Running))
        {
            assert!(
                Instant::now() < deadline,
                "the processes of the killed postmaster {pid} are still there after {EXIT_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // An unreaped postmaster keeps its pid, which its lock files name:
        // the next server would take it for a running one.
        if process_state(pid) == Some(Alive::Zombie) {
            let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
            let _ =
                std::fs::remove_file(self.dir.path().join(format!(".s.PGSQL.{}.lock", self.port)));
        }
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {} still taken after the kill",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the running postmaster: the first line of `postmaster.pid`.
    pub fn postmaster_pid(&self) -> u32 {
        let path = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error} (is the server running?)", path.display()));
        let first = text.lines().next().unwrap_or_default();
        first
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {}: {text:?}", path.display()))
    }

    /// The temporary directory: `data/` (the cluster), `log`, the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command running the server's `tool`, as the server's user.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = match &self.user {
            Some(user) => user.command(&program),
            None => Command::new(program),
        };
        cmd.current_dir(self.dir.path());
        without_pg_env(&mut cmd);
        cmd
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k '{}' -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        let (status, out, err) = run(cmd);
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start on port {} ({status}):\n{out}{err}server log:\n{}",
                self.port,
                self.log()
            ))
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        let (status, out, err) = run(cmd);
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "({status}):\n{out}{err}server log:\n{}",
                self.log()
            ))
        }
    }

    #[track_caller]
    fn psql_in(&self, database: &str, sql: &str) -> String {
        let url = format!("postgres://{NAME}@127.0.0.1:{}/{database}", self.port);
        let mut cmd = Command::new(&self.psql);
        without_pg_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10").args([
            "-At",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-c",
            sql,
        ]);
        let (status, out, err) = run(cmd);
        assert!(
            status.success(),
            "psql -c {sql:?} failed ({status}):\n{err}"
        );
        out.strip_suffix('\n').unwrap_or(&out).to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Already stopped (or killed) is fine; the directory goes either way.
        let _ = self.pg_ctl_stop("immediate");
    }
}

/// The directory of the server's binaries and `psql`; `None` after saying
/// so when there are none (a failure when `LLM_PROXY_REQUIRE_POSTGRES=1`).
fn find_binaries() -> Option<(PathBuf, PathBuf)> {
    let has_tools = |dir: &Path| SERVER_TOOLS.iter().all(|tool| dir.join(tool).is_file());
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_tools(dir)));
    let bin = on_path.or_else(|| newest_debian_bin(&has_tools));
    let psql = bin
        .as_ref()
        .map(|bin| bin.join("psql"))
        .filter(|psql| psql.is_file())
        .or_else(|| find_on_path("psql"));
    match (bin, psql) {
        (Some(bin), Some(psql)) => Some((bin, psql)),
        _ => {
            let reason = "PostgreSQL not installed (initdb, pg_ctl, postgres and psql on PATH \
                          or in /usr/lib/postgresql/*/bin: apt-get install postgresql)";
            let required = std::env::var("LLM_PROXY_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(!required, "{reason}, and LLM_PROXY_REQUIRE_POSTGRES=1");
            eprintln!("skipped: {reason}");
            None
        }
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with the server's binaries.
fn newest_debian_bin(has_tools: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Takes the libpq variables (`PGHOST`, `PGPORT`, `PGDATA`, ...) of the
/// test's environment away from `cmd`: every connection here is explicit.
fn without_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// Runs `cmd` to its end (killed after [`COMMAND_TIMEOUT`]): its status,
/// stdout and stderr.
#[track_caller]
fn run(mut cmd: Command) -> (ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_or_kill(&mut child, COMMAND_TIMEOUT, || what.clone());
    (status, out.join().unwrap(), err.join().unwrap())
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The unprivileged user the server runs as when the tests run as root.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    /// `setpriv`, else `runuser` (both util-linux).
    switch: PathBuf,
}

impl User {
    /// `None` unless running as root; then `postgres` if there is such a
    /// user, else `nobody`.
    fn for_server() -> Option<User> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let (name, uid, gid) = ["postgres", "nobody"]
            .into_iter()
            .find_map(|name| Some((name.to_string(), id(name, "-u")?, id(name, "-g")?)))
            .expect(
                "running as root, and neither a postgres nor a nobody user to run PostgreSQL as",
            );
        let switch = find_on_path("setpriv")
            .or_else(|| find_on_path("runuser"))
            .or_else(|| Some(PathBuf::from("/usr/sbin/runuser")).filter(|path| path.is_file()))
            .expect("running as root, and no setpriv or runuser (util-linux) to run PostgreSQL as another user");
        Some(User {
            name,
            uid,
            gid,
            switch,
        })
    }

    /// A command running `program` as this user.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(&self.switch);
        if self.switch.ends_with("setpriv") {
            cmd.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--init-groups");
        } else {
            cmd.args(["-u", &self.name]);
        }
        cmd.arg("--").arg(program);
        cmd
    }
}

/// `id FLAG NAME` as a number: the user's uid (`-u`) or group (`-g`), if
/// the user exists.
fn id(name: &str, flag: &str) -> Option<u32> {
    let output = Command::new("id").args([flag, name]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alive {
    Running,
    /// Exited, not yet reaped.
    Zombie,
}

/// Whether process `pid` is there (from `/proc/PID/stat`); `None` when gone.
fn process_state(pid: u32) -> Option<Alive> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...", COMM may hold anything: after its last ')'.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    Some(if state == "Z" || state == "X" {
        Alive::Zombie
    } else {
        Alive::Running
    })
}

/// The pids of `parent`'s children.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}
