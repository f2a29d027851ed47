//! The PostgreSQL servers tests start for themselves ([`crate::support::pg`]): that they are what
//! the tests behind them assume — password authentication on loopback, databases of their own,
//! committed data that survives a crash, sessions that can be cut, and TLS that a client can verify.

use crate::support::pg::{make_ca, Pg};
use crate::support::PATIENCE;
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The database a [`Pg::create_db`] URL names.
fn db_name(url: &str) -> &str {
    url.rsplit_once('/').expect("a database URL").1
}

/// A child process killed (if still running) and reaped when the test ends, however it ends.
struct Reaped(Child);

impl Reaped {
    /// Its exit status, or `None` if it is still running after [`PATIENCE`].
    fn exit_within_patience(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_fresh_server_answers_with_password_auth_on_loopback_only() {
    let started = Instant::now();
    let pg = Pg::start();
    eprintln!("Pg::start took {:?}", started.elapsed());

    assert_eq!(pg.psql("postgres", "SELECT 1"), "1");
    assert_eq!(pg.url("x"), format!("postgres://aop:aop-secret-pw@127.0.0.1:{}/x", pg.port()));
    let settings = pg.psql(
        "postgres",
        "SELECT current_setting('fsync'), current_setting('max_connections'), current_setting('listen_addresses'), \
         (SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1)",
    );
    assert_eq!(settings, "on|200|127.0.0.1|scram-sha-256");

    let wrong = pg
        .psql_command(&format!("host=127.0.0.1 port={} user=aop dbname=postgres", pg.port()))
        .env("PGPASSWORD", "not-the-password")
        .args(["-c", "SELECT 1"])
        .output()
        .expect("psql");
    assert!(!wrong.status.success(), "a wrong password was accepted");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("password authentication failed"), "{stderr}");
}

#[test]
fn create_db_gives_distinct_databases_on_the_shared_server() {
    assert!(std::ptr::eq(Pg::shared(), Pg::shared()));
    let pg = Pg::shared();
    let (a, b) = (pg.create_db(), pg.create_db());
    assert_ne!(a, b);
    assert!(a.starts_with(&pg.url("t_")), "{a}");

    pg.psql(db_name(&a), "CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (1)");
    assert_eq!(pg.psql(db_name(&a), "SELECT count(*) FROM only_in_a"), "1");
    let err = pg.try_psql(db_name(&b), "SELECT count(*) FROM only_in_a").expect_err("the table is only in a");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn data_committed_before_a_crash_is_there_after_a_restart() {
    let pg = Pg::start();
    let url = pg.create_db();
    let db = db_name(&url);
    pg.psql(db, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2), (3)");
    let port = pg.port();

    pg.stop_immediate();
    assert!(pg.try_psql(db, "SELECT 1").is_err(), "the server still answers after stop -m immediate");
    pg.start_again();

    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql(db, "SELECT sum(x) FROM kept"), "6");
    let log = pg.log();
    assert!(log.contains("automatic recovery in progress"), "no crash recovery in the log:\n{log}");
}

#[test]
fn terminate_backends_ends_a_listening_session() {
    let pg = Pg::start();
    let mut listener = Reaped(
        pg.psql_command(&format!("host=127.0.0.1 port={} user=aop dbname=postgres", pg.port()))
            .args(["-c", "LISTEN x; SELECT pg_sleep(30);"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql"),
    );

    let listed =
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND strpos(query, 'LISTEN x') > 0";
    let deadline = Instant::now() + PATIENCE;
    while pg.psql("postgres", listed) != "1" {
        assert!(Instant::now() < deadline, "the LISTEN session never showed in pg_stat_activity");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(pg.terminate_backends("LISTEN"), 1);
    let status = listener.exit_within_patience().expect("psql still running after its backend was terminated");
    assert!(!status.success(), "psql exited successfully: {status}");
    assert_eq!(pg.psql("postgres", listed), "0");
    assert_eq!(pg.terminate_backends("LISTEN"), 0);
}

#[test]
fn a_tls_server_is_verified_by_its_ca_and_not_by_another() {
    let (pg, tls) = Pg::start_tls();
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let connect = |host: &str, ca: &std::path::Path| {
        pg.psql_command(&format!(
            "host={host} port={} user=aop dbname=postgres sslmode=verify-full sslrootcert={}",
            pg.port(),
            ca.display()
        ))
        .args(["-c", ssl_in_use])
        .output()
        .expect("psql")
    };

    for host in [tls.server_name.as_str(), "127.0.0.1"] {
        let out = connect(host, &tls.ca_pem);
        assert!(out.status.success(), "verify-full to {host} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }

    let elsewhere = tempfile::tempdir().expect("a temporary directory");
    let other_ca = make_ca(elsewhere.path());
    let out = connect("127.0.0.1", &other_ca);
    assert!(!out.status.success(), "a server certificate from another CA was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
}

#[test]
fn dropping_a_server_stops_it_and_removes_its_directory() {
    let pg = Pg::start();
    let (data, port) = (pg.data_dir().to_owned(), pg.port());
    assert!(data.join("PG_VERSION").is_file());
    drop(pg);
    let base = data.parent().expect("the cluster's temporary directory");
    assert!(!base.exists(), "{} is still there", base.display());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(), "port {port} still accepts connections");
}
