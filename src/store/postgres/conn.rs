//! Connecting to PostgreSQL: the `--db` URL (libpq style), TLS as its `sslmode` asks, and the URL
//! as it may be shown (password masked).

use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt may take before the store reports the database unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The TLS stream type every connection uses (plain sockets when `sslmode=disable`).
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A parsed `--db` URL: what to connect to and how.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    shown: String,
}

impl Target {
    /// Parses a `postgres://` / `postgresql://` URL. Errors never repeat the password.
    pub fn parse(url: &str) -> Result<Target, String> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string().replace(url, "…"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("aop");
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let roots = rustls::RootCertStore::empty();
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        Ok(Target { config, tls: MakeRustlsConnect::new(tls), shown: redact(url) })
    }

    /// The URL with its password masked.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// One connection; the caller drives (spawns or polls) the returned `Connection`.
    pub async fn connect(&self) -> Result<(Client, Connection<Socket, TlsStream>), tokio_postgres::Error> {
        self.config.connect(self.tls()).await
    }
}

/// The URL with any password replaced by `***` (in the authority and in a `password=` parameter).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| {
                    if kv.to_ascii_lowercase().starts_with("password=") {
                        "password=***".to_owned()
                    } else {
                        kv.to_owned()
                    }
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}
