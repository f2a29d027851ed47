//! TLS to PostgreSQL as `sslmode` asks, against real servers with and without TLS: which modes
//! encrypt, which verify the chain, which the host name, and the collector itself storing
//! through a verified connection without ever printing the password.

use crate::support::pg::{make_ca, Pg};
use crate::support::{event, eventually, Launch};
use aop::store::postgres::conn::Target;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "aop-secret-pw";

/// `url` with its host replaced (the harness's URLs name 127.0.0.1).
fn with_host(url: &str, host: &str) -> String {
    url.replacen("@127.0.0.1:", &format!("@{host}:"), 1)
}

/// The error and its causes, which is where rustls says why it refused.
fn chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source()).map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

/// Connects through `Target` and asks the server whether this session is encrypted, and what its
/// session settings are.
async fn session(url: &str) -> Result<(bool, String), String> {
    let target = Target::parse(url)?;
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), target.connect())
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| chain(&e))?;
    tokio::spawn(connection);
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| chain(&e))?
        .get(0);
    let settings = client
        .query_one(
            "SELECT current_setting('statement_timeout') || ' ' \
             || current_setting('idle_in_transaction_session_timeout') || ' ' \
             || current_setting('application_name')",
            &[],
        )
        .await
        .map_err(|e| chain(&e))?
        .get(0);
    Ok((ssl, settings))
}

async fn encrypted(url: &str) -> bool {
    match session(url).await {
        Ok((ssl, settings)) => {
            assert_eq!(settings, "10s 30s aop", "{url}");
            ssl
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// Asserts the connection is refused, for a reason that contains `why`, without the password.
async fn refused(url: &str, why: &str) {
    match session(url).await {
        Ok((ssl, _)) => panic!("{url}: connected (ssl: {ssl})"),
        Err(e) => {
            assert!(e.contains(why), "{url}: {e:?} does not say {why:?}");
            assert!(!e.contains(PASSWORD), "{url}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_encrypts_and_verifies_as_libpq_does() {
    let (pg, tls) = Pg::start_tls();
    let other = tempfile::tempdir().unwrap();
    let other_ca = make_ca(other.path());
    let ip = pg.url("postgres");
    let named = with_host(&ip, &tls.server_name);
    let ca = tls.ca_pem.display();
    let other_ca = other_ca.display();
    // Reaches the server by address but names a host its certificate is not for.
    let misnamed = format!("{ip}?host=not-in-the-certificate.example&hostaddr=127.0.0.1");

    assert!(!encrypted(&format!("{ip}?sslmode=disable")).await);
    for mode in ["", "?sslmode=allow", "?sslmode=prefer", "?sslmode=require"] {
        assert!(encrypted(&format!("{ip}{mode}")).await, "{mode}");
    }
    // Nothing verified: a certificate for another name, from an unknown CA, is fine.
    assert!(encrypted(&format!("{misnamed}&sslmode=require")).await);

    assert!(encrypted(&format!("{named}?sslmode=verify-full&sslrootcert={ca}")).await);
    assert!(encrypted(&format!("{ip}?sslmode=verify-full&sslrootcert={ca}")).await, "the certificate names 127.0.0.1");
    refused(&format!("{misnamed}&sslmode=verify-full&sslrootcert={ca}"), "not valid for name").await;
    // The other CA bears the same name as the right one: its signature is what gives it away.
    refused(&format!("{named}?sslmode=verify-full&sslrootcert={other_ca}"), "invalid peer certificate").await;
    // No sslrootcert: the system's roots (or ~/.postgresql/root.crt), which never hold a
    // throwaway CA (and a system may have no roots at all: refused too, saying so).
    refused(&format!("{named}?sslmode=verify-full"), "certificate").await;
    refused(&format!("{named}?sslrootcert=system"), "certificate").await;

    assert!(encrypted(&format!("{ip}?sslmode=verify-ca&sslrootcert={ca}")).await);
    assert!(encrypted(&format!("{misnamed}&sslmode=verify-ca&sslrootcert={ca}")).await);
    refused(&format!("{ip}?sslmode=verify-ca&sslrootcert={other_ca}"), "invalid peer certificate").await;

    // libpq's rule: `require` with a root file verifies the chain, not the name.
    assert!(encrypted(&format!("{misnamed}&sslmode=require&sslrootcert={ca}")).await);
    refused(&format!("{ip}?sslmode=require&sslrootcert={other_ca}"), "invalid peer certificate").await;
}

/// `openssl <args>` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_the_server_asks_for_one() {
    let (pg, tls) = Pg::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = tls.ca_pem.with_file_name("ca.key");
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=aop-client",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
        ],
    );
    // X.509 v3, as rustls insists on (even for its own certificate).
    std::fs::write(
        dir.path().join("client.cnf"),
        "[client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    let ca = tls.ca_pem.to_str().unwrap();
    let ca_key = ca_key.to_str().unwrap();
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.cnf",
            "-extensions",
            "client",
            "-out",
            "client.pem",
        ],
    );
    // With a CA file the server asks every client for a certificate (and checks any it gets).
    pg.psql("postgres", &format!("ALTER SYSTEM SET ssl_ca_file = '{ca}'"));
    pg.psql("postgres", "SELECT pg_reload_conf()");

    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        with_host(&pg.url("postgres"), &tls.server_name),
        dir.path().join("client.pem").display(),
        dir.path().join("client.key").display()
    );
    let target = Target::parse(&url).unwrap();
    let dn = eventually("the server to see the client's certificate", || async {
        let (client, connection) = target.connect().await.ok()?;
        tokio::spawn(connection);
        let row = client.query_one("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.ok()?;
        row.get::<_, Option<String>>(0)
    })
    .await;
    assert_eq!(dn, "/CN=aop-client");

    // A key that is missing, or not the certificate's, is refused before any connection.
    let e = Target::parse(&url.replace("client.key", "missing.key")).err().unwrap();
    assert!(e.contains("sslkey") && e.contains("missing.key"), "{e}");
    let e = Target::parse(&format!("{url}&sslcert={ca}")).err().unwrap();
    assert!(e.starts_with("sslcert and sslkey"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_when_tls_is_required_and_used_plain_when_only_preferred() {
    let pg = Pg::start();
    let url = pg.url("postgres");
    refused(&format!("{url}?sslmode=require"), "server does not support TLS").await;
    refused(&format!("{url}?sslmode=verify-full&sslrootcert=system"), "server does not support TLS").await;
    assert!(!encrypted(&format!("{url}?sslmode=prefer")).await);
    assert!(!encrypted(&url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_stores_through_a_verified_connection_and_never_prints_the_password() {
    let (pg, tls) = Pg::start_tls();
    let db = pg.create_db();
    let db_name = db.rsplit('/').next().unwrap().to_owned();
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", with_host(&db, &tls.server_name), tls.ca_pem.display());
    let mut server = Launch::new().db(url.as_str()).start().await;

    let ev = event("tls_1", 1, "session.started", json!({"goal": "over TLS"}));
    server.ingest_one(&ev).await;
    assert_eq!(server.events("tls_1").await, vec![ev]);
    assert_eq!(server.session("tls_1").await["id"], "tls_1");

    let plain = pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) \
             FROM pg_stat_activity JOIN pg_stat_ssl USING (pid) WHERE datname = '{db_name}'"
        ),
    );
    let (tls_sessions, plain_sessions) = plain.split_once('|').expect("two counts");
    assert!(tls_sessions.parse::<u32>().unwrap() > 0 && plain_sessions == "0", "encrypted|plain: {plain}");

    server.sigterm().await;
    let said = server.stdout() + &server.stderr();
    assert!(!said.contains(PASSWORD), "{said}");
    let shown = format!("aop:***@{}:{}/{db_name}?sslmode=verify-full", tls.server_name, pg.port());
    assert!(server.stdout().contains(&shown), "{shown} not in\n{said}");
}
