//! A real PostgreSQL server of the tests' own, from the machine's packages (Debian's `postgresql`):
//! a fresh cluster in a temporary directory under `/tmp`, password authentication, loopback TCP on
//! a free port, `fsync` on so that a crash (`stop -m immediate`) keeps what was committed.
//!
//! `initdb` and `postgres` refuse to run as root, and tests run as root in CI: then every server
//! program runs as the `postgres` user (through `runuser`) in a directory handed to that user.
//!
//! Nothing here relies on the test process ending well. Each cluster has a watchdog, a shell that
//! waits for its stdin to close and then stops the server (`-m immediate`) and removes the
//! directory. Dropping a [`Pg`] closes that stdin and waits for the watchdog; so does the end of
//! the test process however it ends (even a SIGKILL), which is how [`Pg::shared`]'s server, never
//! dropped, goes away. The watchdog ignores the terminal's signals so that a Ctrl-C reaches it
//! only as that closed pipe, and `pg_ctl` puts the server in its own session with its output in
//! the log: no server outlives the test process, and none holds it (or its output) open.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const USER: &str = "aop";
const PASSWORD: &str = "aop-secret-pw";
/// The system user the server programs run as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// A PostgreSQL cluster and its running server, stopped and removed when dropped.
pub(crate) struct Pg {
    /// The temporary directory holding `data/` (the cluster) and, for TLS, `tls/`.
    base: PathBuf,
    data: PathBuf,
    port: u16,
    /// `postgres` options beyond the port, for `pg_ctl start -o` (the same on every start).
    options: String,
    /// Stops the server and removes `base` when its stdin closes (see the module's documentation).
    watchdog: Child,
}

/// What a client needs to verify a [`Pg::start_tls`] server.
pub(crate) struct PgTls {
    /// The certificate of the CA that signed the server's certificate.
    pub(crate) ca_pem: PathBuf,
    /// The name the server's certificate is for.
    pub(crate) server_name: String,
}

impl Pg {
    /// A fresh cluster: `initdb` in a new temporary directory, scram-sha-256 password
    /// authentication for `aop` (password `aop-secret-pw`), 127.0.0.1 only, on a free port, unix
    /// sockets in the data directory, fsync on, 200 connections, the server's log in
    /// `<data>/log`. Returns once it accepts connections.
    pub(crate) fn start() -> Pg {
        let mut pg = Pg::create();
        pg.init_and_launch();
        pg
    }

    /// The same with `ssl = on` and a certificate for `localhost` (and 127.0.0.1) signed by a
    /// throwaway CA.
    pub(crate) fn start_tls() -> (Pg, PgTls) {
        let mut pg = Pg::create();
        let tls = pg.base.join("tls");
        std::fs::create_dir(&tls).expect("the certificates' directory");
        let ca_pem = make_ca(&tls);
        let (cert, key) = make_server_cert(&tls);
        pg.options =
            format!("{} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", pg.options, cert.display(), key.display());
        pg.init_and_launch();
        (pg, PgTls { ca_pem, server_name: "localhost".to_owned() })
    }

    /// A server shared by the whole test process, started on first use, for tests that only need
    /// a database of their own ([`Pg::create_db`]). Never dropped: its watchdog stops it when the
    /// test process ends.
    pub(crate) fn shared() -> &'static Pg {
        static SHARED: OnceLock<Pg> = OnceLock::new();
        SHARED.get_or_init(Pg::start)
    }

    /// `postgres://aop:aop-secret-pw@127.0.0.1:PORT/<db>`
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (`PGDATA`).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data
    }

    /// What the server has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("log")).unwrap_or_default()
    }

    /// A new database, named uniquely in this process (`t_<n>_<pid>`); returns its URL.
    pub(crate) fn create_db(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("t_{}_{}", NEXT.fetch_add(1, Ordering::Relaxed), std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// `psql` as `aop`, with the password and without the caller's `PG*` settings or `~/.psqlrc`,
    /// stopping at the first error and printing bare rows (`-X -q -tA -v ON_ERROR_STOP=1`),
    /// connected by `conninfo` (e.g. `host=localhost port=… dbname=… sslmode=verify-full …`).
    /// The caller adds what to run (`-c`, `-f`).
    pub(crate) fn psql_command(&self, conninfo: &str) -> Command {
        let mut cmd = Command::new(&tools().psql);
        scrub(&mut cmd);
        cmd.env("PGPASSWORD", PASSWORD).env("PGCONNECT_TIMEOUT", "10").args([
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
        ]);
        cmd
    }

    /// Runs `sql` (any number of statements) on database `db`; returns what it printed, trimmed.
    /// Panics with psql's errors if a statement fails.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("{e}\n--- SQL ---\n{sql}"))
    }

    /// [`Pg::psql`], with the failure as an `Err` (psql's exit status and stderr).
    pub(crate) fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let conninfo = format!("host=127.0.0.1 port={} user={USER} dbname={}", self.port, conninfo_value(db));
        let mut cmd = self.psql_command(&conninfo);
        cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let mut stdin = child.stdin.take().expect("piped");
        // Written from another thread: psql may print more than a pipe holds before reading it all.
        let sql = sql.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        });
        let out = child.wait_with_output().expect("psql's output");
        let _ = writer.join();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("psql on {db} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Crashes the server: `pg_ctl stop -m immediate`, no checkpoint, so the next start replays
    /// the WAL. Returns once it is stopped.
    pub(crate) fn stop_immediate(&self) {
        let out = run(self.server_command(&tools().pg_ctl).arg("-D").arg(&self.data).args([
            "stop",
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
        ]));
        assert!(out.status.success(), "pg_ctl stop -m immediate failed\n{}", self.failure(&out, 0));
    }

    /// Starts the cluster again, on the same port, after [`Pg::stop_immediate`].
    pub(crate) fn start_again(&self) {
        let since = self.log().len();
        if let Err(why) = self.pg_ctl_start(self.port, since) {
            panic!("the server did not start again on port {}\n{why}", self.port);
        }
    }

    /// Terminates every other session's backend whose current or last query contains `needle`
    /// (e.g. `LISTEN`), waiting until each is gone; returns how many were terminated.
    pub(crate) fn terminate_backends(&self, needle: &str) -> usize {
        // pg_terminate_backend's timeout (PostgreSQL 14+) makes it wait for the backend to exit.
        let sql = format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND strpos(query, {}) > 0",
            sql_literal(needle)
        );
        let count = self.psql("postgres", &sql);
        count.parse().unwrap_or_else(|_| panic!("a count, not {count:?}"))
    }

    /// The directory and its watchdog, before any cluster is in it: from here on, a panic drops
    /// the [`Pg`] and so cleans up.
    fn create() -> Pg {
        let base = tempfile::Builder::new()
            .prefix("aop-pg-")
            // Not TMPDIR: a unix socket's path must stay short, and the server's user must reach it.
            .tempdir_in("/tmp")
            .expect("a temporary directory under /tmp")
            .keep();
        let data = base.join("data");
        let mut stop = server_argv(&tools().pg_ctl);
        stop.extend(["-D".into(), data.clone().into(), "stop".into(), "-m".into(), "immediate".into(), "-w".into()]);
        // If the test process dies while a `pg_ctl start` it ran goes on, the server may write its
        // pid file after `stop` looked for it and while `rm` empties the directory: then stop and
        // remove again.
        let script = r#"trap '' HUP INT TERM; cat >/dev/null; base=$1; shift
            for _ in 1 2 3 4 5 6 7 8 9 10; do "$@"; rm -rf -- "$base"; [ -e "$base" ] || exit 0; sleep 1; done"#;
        let mut watchdog = Command::new("sh");
        scrub(&mut watchdog);
        watchdog
            .args(["-c", script, "sh"])
            .arg(&base)
            .args(stop)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let watchdog = watchdog.spawn().unwrap_or_else(|e| panic!("cannot run the watchdog {watchdog:?}: {e}"));
        let options = format!(
            "-k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200 -c shared_buffers=64MB",
            data.display()
        );
        Pg { base, data, port: 0, options, watchdog }
    }

    fn init_and_launch(&mut self) {
        let pwfile = self.base.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("the password file");
        if as_root() {
            let out = run(Command::new("chown").args(["-R", &format!("{SERVER_USER}:")]).arg(&self.base));
            assert!(
                out.status.success(),
                "cannot hand {} to the `{SERVER_USER}` user (Debian's postgresql package creates it)\n{}",
                self.base.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let initdb = |locale: &str| {
            let _ = std::fs::remove_dir_all(&self.data);
            run(self
                .server_command(&tools().initdb)
                .arg("-D")
                .arg(&self.data)
                .arg(format!("--pwfile={}", pwfile.display()))
                .args([
                    "--auth=scram-sha-256",
                    &format!("--username={USER}"),
                    "--encoding=UTF8",
                    &format!("--locale={locale}"),
                    // Only initdb's own writes: the server itself runs with fsync on.
                    "--no-sync",
                ]))
        };
        let first = initdb("C.UTF-8");
        if !first.status.success() {
            let second = initdb("C");
            assert!(
                second.status.success(),
                "initdb failed with --locale=C.UTF-8:\n{}\nand with --locale=C:\n{}",
                self.failure(&first, 0),
                self.failure(&second, 0)
            );
        }
        let _ = std::fs::remove_file(&pwfile);

        // The free port may be taken before the server binds it: then try another.
        for attempt in 1.. {
            let port = free_port();
            let since = self.log().len();
            match self.pg_ctl_start(port, since) {
                Ok(()) => {
                    self.port = port;
                    return;
                }
                Err(_) if attempt < 5 && self.log()[since..].contains("Address already in use") => continue,
                Err(why) => panic!("the PostgreSQL server did not start on port {port}\n{why}"),
            }
        }
    }

    fn pg_ctl_start(&self, port: u16, log_since: usize) -> Result<(), String> {
        let out = run(self
            .server_command(&tools().pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("log"))
            .args(["-w", "-t", "60", "-o", &format!("-p {port} {}", self.options), "start"]));
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failure(&out, log_since))
        }
    }

    /// A server program, run as the server's user when the tests run as root.
    fn server_command(&self, program: &Path) -> Command {
        let argv = server_argv(program);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(&self.base);
        scrub(&mut cmd);
        cmd
    }

    /// A failed command's output and the server's log since `log_since`, to explain a failure.
    fn failure(&self, out: &Output, log_since: usize) -> String {
        let log = self.log();
        let log = log.get(log_since..).unwrap_or(&log);
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- {} (last lines) ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            self.data.join("log").display(),
            tail.join("\n")
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // The watchdog stops the server (ignoring a failure: it may be stopped already) and
        // removes the directory.
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

/// A throwaway certificate authority in `dir`: `ca.pem` (returned) and `ca.key`.
pub(crate) fn make_ca(dir: &Path) -> PathBuf {
    let config = dir.join("ca.cnf");
    std::fs::write(
        &config,
        "[req]\ndistinguished_name = dn\nx509_extensions = ca_ext\nprompt = no\n\
         [dn]\nCN = aop throwaway test CA\n\
         [ca_ext]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .expect("the CA's openssl config");
    openssl(dir, &["req", "-x509", "-new", "-config", "ca.cnf", "-days", "7", "-keyout", "ca.key", "-out", "ca.pem"]);
    dir.join("ca.pem")
}

/// A certificate for `localhost` and 127.0.0.1 signed by the CA of [`make_ca`] in `dir`:
/// `server.pem` and `server.key` (mode 0600, as the server requires).
pub(crate) fn make_server_cert(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("server.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n\
         [dn]\nCN = localhost\n\
         [server_ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .expect("the server certificate's openssl config");
    openssl(dir, &["req", "-new", "-config", "server.cnf", "-keyout", "server.key", "-out", "server.csr"]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            "server.cnf",
            "-extensions",
            "server_ext",
            "-out",
            "server.pem",
        ],
    );
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("the key's mode");
    (dir.join("server.pem"), key)
}

/// `openssl <args>` in `dir`, with P-256 keys (quick to make) and no passphrase for `req`.
fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    if args[0] == "req" {
        cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "openssl failed ({}): {cmd:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// Where the programs are.
struct Tools {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(find_tools)
}

/// The server programs from `pg_config --bindir`, else the newest `/usr/lib/postgresql/<N>/bin`
/// (Debian keeps them off PATH), else PATH; `psql` from PATH, else beside them.
fn find_tools() -> Tools {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let debian = || {
        let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
        versions
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| has_server(bin))
            .max()
            .map(|(_, bin)| bin)
    };
    let bin = from_pg_config
        .filter(|dir| has_server(dir))
        .or_else(debian)
        .or_else(|| {
            on_path("initdb").and_then(|initdb| Some(initdb.parent()?.to_owned())).filter(|dir| has_server(dir))
        })
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server programs (initdb, pg_ctl) were not found in `pg_config --bindir`, \
                 /usr/lib/postgresql/<N>/bin or PATH; on Debian: apt-get install postgresql"
            )
        });
    let psql = on_path("psql").or_else(|| Some(bin.join("psql")).filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!("psql was not found on PATH or in {}; on Debian: apt-get install postgresql-client", bin.display())
    });
    Tools { initdb: bin.join("initdb"), pg_ctl: bin.join("pg_ctl"), psql }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Whether the tests run as root (the effective user id, from `/proc/self/status`).
fn as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("a Uid line in /proc/self/status");
        uids.split_whitespace().nth(1) == Some("0")
    })
}

/// How to run a server program: itself, or through `runuser` as the server's user when root.
fn server_argv(program: &Path) -> Vec<std::ffi::OsString> {
    let mut argv = Vec::new();
    if as_root() {
        argv.extend(["runuser", "-u", SERVER_USER, "--"].map(Into::into));
    }
    argv.push(program.into());
    argv
}

/// Leaves out the caller's `PG*` variables, which would point the programs elsewhere.
fn scrub(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
}

/// Runs a command to its end, capturing its output.
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// `value` quoted for a libpq connection string.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `value` as an SQL string literal (standard_conforming_strings is on by default).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
