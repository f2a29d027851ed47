//! Connecting to PostgreSQL: the `--db` URL (libpq style), TLS as its `sslmode` asks, and the URL
//! as it may be shown (password masked).
//!
//! The URL is read as libpq reads one,
//! `postgres[ql]://[user[:password]@][host[:port][,host[:port]…]][/dbname][?key=value&…]`, each
//! part percent-decoded, a query parameter replacing what the parts before it said. The TLS
//! parameters are taken out here (tokio-postgres knows neither `verify-ca`, `verify-full` nor
//! `sslrootcert`); everything else goes to tokio-postgres, which refuses what it does not know.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | if the server offers it | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` (libpq's rule) |
//! | `verify-ca` | always | a chain to the roots; the host name is not checked |
//! | `verify-full` | always | a chain to the roots, for the host name connected to |
//!
//! `allow` is `prefer` here: tokio-postgres cannot start in plain text and switch to TLS when the
//! server insists. Roots come from `sslrootcert` (a PEM file, or `system`), else from
//! `~/.postgresql/root.crt` if it exists, else from the system (where libpq would refuse).
//! `sslcert` and `sslkey` (PEM, the key not encrypted) give a client certificate.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt may take before the store reports the database unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The TLS stream type every connection uses (plain sockets when `sslmode=disable`).
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// Set on every session unless the URL's `options` set them: a stuck instance must not hold
/// locks the fleet needs, and one that stopped mid-transaction must not hold them until TCP
/// notices it is gone.
const SESSION_SETTINGS: [(&str, &str); 2] =
    [("statement_timeout", "10s"), ("idle_in_transaction_session_timeout", "30s")];

/// TCP keepalives start this soon (the system's default is two hours) unless the URL says.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);

const SSLMODES: &str = "disable, allow, prefer, require, verify-ca, verify-full";

/// A parsed `--db` URL: what to connect to and how.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    shown: String,
    /// What [`Target::scrub`] masks.
    secrets: Arc<[String]>,
}

impl Target {
    /// Parses a `postgres://` / `postgresql://` URL and reads the files its TLS parameters name.
    /// Errors never repeat the password.
    pub fn parse(url: &str) -> Result<Target, String> {
        let plan = Plan::new(url).map_err(|e| scrub(e, url))?;
        let tls = plan.tls().map_err(|e| scrub(e, url))?;
        Ok(Target {
            config: plan.config,
            tls: MakeRustlsConnect::new(tls),
            shown: redact(url),
            secrets: secrets(url).into(),
        })
    }

    /// `message` with the URL's passwords masked: for the driver's errors, which are not written
    /// here and may one day quote the connection's settings.
    pub fn scrub(&self, message: String) -> String {
        mask(message, &self.secrets)
    }

    /// The URL with its password masked.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// What tokio-postgres connects with (its `ssl_mode` set from `sslmode`).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector, verifying as `sslmode` asks.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// One connection; the caller drives (spawns or polls) the returned `Connection`.
    pub async fn connect(&self) -> Result<(Client, Connection<Socket, TlsStream>), tokio_postgres::Error> {
        self.config.connect(self.tls()).await
    }
}

/// What a URL asks for, before any file it names is read.
struct Plan {
    config: tokio_postgres::Config,
    verify: Verify,
    /// `sslcert` and `sslkey`.
    identity: Option<(PathBuf, PathBuf)>,
}

/// How much of the server's certificate is checked.
#[derive(Debug, PartialEq)]
enum Verify {
    /// Nothing: the connection is encrypted, the server not authenticated.
    Nothing,
    /// A chain to the roots, whatever names the certificate holds.
    Chain(Roots),
    /// A chain to the roots, for the host name connected to.
    Full(Roots),
}

#[derive(Debug, PartialEq)]
enum Roots {
    File(PathBuf),
    /// The system's roots (`sslrootcert=system`).
    System,
    /// No `sslrootcert`: `~/.postgresql/root.crt` if it exists (libpq's default file), else the
    /// system's roots. libpq would refuse to verify without that file; falling back to the
    /// system's roots lets `sslmode=verify-full` alone work with the many managed databases
    /// whose certificates chain to a public CA, and still verifies, as asked.
    Default,
}

impl Plan {
    fn new(url: &str) -> Result<Plan, String> {
        let mut params = Params::from_url(url)?;
        let sslmode = params.take("sslmode");
        let roots = params.take_path("sslrootcert").map(|v| match v.as_str() {
            "system" => Roots::System,
            _ => Roots::File(v.into()),
        });
        let system = roots == Some(Roots::System);
        // As libpq: trusting every public CA only makes sense with the name checked too.
        let mode = sslmode.as_deref().unwrap_or(if system { "verify-full" } else { "prefer" });
        let (ssl, verify) = match mode {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
            "require" => (SslMode::Require, roots.map_or(Verify::Nothing, Verify::Chain)),
            "verify-ca" => (SslMode::Require, Verify::Chain(roots.unwrap_or(Roots::Default))),
            "verify-full" => (SslMode::Require, Verify::Full(roots.unwrap_or(Roots::Default))),
            other => return Err(format!("sslmode {} is not one of {SSLMODES}", quoted_keyword(other))),
        };
        if system && mode != "verify-full" {
            return Err("sslrootcert=system needs sslmode=verify-full: any public CA could vouch for any host, so \
                        the host name must be checked too"
                .into());
        }
        let identity = match (params.take_path("sslcert"), params.take_path("sslkey")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            _ => return Err("sslcert and sslkey go together: give both (PEM files) or neither".into()),
        };
        if !params.has("host") && !params.has("hostaddr") {
            return Err("no host: write postgres://USER:PASSWORD@HOST:PORT/DATABASE".into());
        }
        if !params.has("user") {
            return Err("no user name: write postgres://USER:PASSWORD@HOST:PORT/DATABASE".into());
        }
        let mut options = params.take("options").unwrap_or_default();
        for (setting, value) in SESSION_SETTINGS {
            if !sets(&options, setting) {
                options = format!("{options} -c {setting}={value}");
            }
        }
        params.set("options", options.trim_start().to_owned());
        if !params.has("application_name") {
            params.set("application_name", "aop".into());
        }

        // Its message alone says only "invalid connection string"; the cause names the parameter.
        let mut config = tokio_postgres::Config::from_str(&params.conninfo()).map_err(|e| super::full(&e))?;
        config.ssl_mode(ssl);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if !params.has("keepalives_idle") {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        Ok(Plan { config, verify, identity })
    }

    /// The rustls configuration: the ring provider named here, so that nothing depends on a
    /// process-wide default.
    fn tls(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        // With `sslmode=disable` no handshake ever happens, so its verifier does not matter.
        let builder = match &self.verify {
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.signature_verification_algorithms))),
            Verify::Chain(roots) => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(webpki(roots, &provider)?)))
            }
            Verify::Full(roots) => builder.with_webpki_verifier(webpki(roots, &provider)?),
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
                    pem::Error::NoItemsFound => {
                        format!("sslkey {}: no private key in it (PEM, not encrypted)", key.display())
                    }
                    e => format!("sslkey {}: {}", key.display(), pem_error(e)),
                })?;
                builder
                    .with_client_auth_cert(certificates(cert, "sslcert")?, key)
                    .map_err(|e| format!("sslcert and sslkey: {e}"))?
            }
        };
        // What libpq 17 offers: servers that take TLS straight away (`sslnegotiation=direct`)
        // insist on it, and the others ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }
}

/// Whether `options` already sets `setting` (`-c name=value`, `-cname=value`, `--name=value`;
/// PostgreSQL takes `-` for `_` in these names).
fn sets(options: &str, setting: &str) -> bool {
    options.split_whitespace().any(|word| {
        let word = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")).unwrap_or(word);
        word.split_once('=').is_some_and(|(name, _)| name.replace('-', "_") == setting)
    })
}

impl Roots {
    fn load(&self) -> Result<RootCertStore, String> {
        match self {
            Roots::File(path) => roots_from(path),
            Roots::System => system_roots(),
            Roots::Default => match default_root_file(std::env::var_os("HOME").map(PathBuf::from)) {
                Some(path) => roots_from(&path),
                None => system_roots(),
            },
        }
    }
}

fn default_root_file(home: Option<PathBuf>) -> Option<PathBuf> {
    home.map(|home| home.join(".postgresql").join("root.crt")).filter(|path| path.exists())
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, "sslrootcert")? {
        store
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: a certificate that cannot be a root: {e}", path.display()))?;
    }
    Ok(store)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no root certificates found on this system{}; give sslrootcert=<PEM file>",
            if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
        ));
    }
    Ok(store)
}

/// Every certificate of a PEM file, which must hold at least one.
fn certificates(path: &Path, param: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{param} {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("{param} {}: no certificate in it (PEM expected)", path.display()));
    }
    Ok(certs)
}

fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        e => format!("not valid PEM: {e}"),
    }
}

fn webpki(roots: &Roots, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots.load()?), Arc::clone(provider))
        .build()
        .map_err(|e| format!("cannot verify against these roots: {e}"))
}

/// `prefer`, `require`: any certificate will do, but the handshake must still be signed with the
/// key of the certificate presented. Otherwise a man in the middle could present the server's own
/// certificate, and SCRAM's channel binding (which hashes the certificate presented) would no
/// longer catch him.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the full check, but a certificate for another name passes. rustls checks the
/// name only once the chain (validity, usage, signatures up to a root) passed, so a name error
/// means everything else was fine.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A URL cut where libpq cuts it, nothing decoded. The authority ends at the first `/` or `?`
/// and the user information at its last `@`, so in a URL whose password was not
/// percent-encoded the password never ends up in a host name or a query parameter unnoticed.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    /// With its leading `/`, if any.
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(url: &'a str) -> Option<Parts<'a>> {
        let (scheme, rest) = url.split_once("://")?;
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        Some(Parts { scheme, userinfo, hosts, path, query })
    }

    /// The query's `key=value` pairs, undecoded.
    fn pairs(&self) -> impl Iterator<Item = &'a str> {
        self.query.into_iter().flat_map(|q| q.split('&')).filter(|pair| !pair.is_empty())
    }
}

/// A URL's settings as libpq keywords; setting one again replaces it, as in libpq.
struct Params(Vec<(String, String)>);

impl Params {
    fn from_url(url: &str) -> Result<Params, String> {
        let parts = Parts::split(url)
            .filter(|p| matches!(p.scheme.to_ascii_lowercase().as_str(), "postgres" | "postgresql"))
            .ok_or("not a postgres:// or postgresql:// URL")?;
        if parts.path.contains('@') {
            return Err("an `@` after the host: percent-encode `@`, `/` and `?` in the user name and password \
                        (as %40, %2F and %3F)"
                .into());
        }
        let mut params = Params(Vec::new());
        if let Some(userinfo) = parts.userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.set("user", decode(user, "the user name")?);
            }
            if let Some(password) = password {
                params.set("password", decode(password, "the password")?);
            }
        }
        params.hosts(parts.hosts)?;
        let dbname = parts.path.strip_prefix('/').unwrap_or(parts.path);
        if !dbname.is_empty() {
            params.set("dbname", decode(dbname, "the database name")?);
        }
        for pair in parts.pairs() {
            let (key, value) =
                pair.split_once('=').ok_or("a query parameter without `=`: write key=value&key=value")?;
            let key = decode(key, "a parameter name")?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err("a query parameter whose name is not a libpq keyword".into());
            }
            let value = decode(value, &format!("the value of {key}"))?;
            // libpq's nod to JDBC URLs.
            if key == "ssl" && value == "true" {
                params.set("sslmode", "require".into());
            } else {
                params.set(&key, value);
            }
        }
        Ok(params)
    }

    /// `host1:port1,[::1]:port2,…` as libpq's `host` and `port` lists.
    fn hosts(&mut self, hosts: &str) -> Result<(), String> {
        if hosts.is_empty() {
            return Ok(());
        }
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for host in hosts.split(',') {
            let (name, port) = match host.strip_prefix('[') {
                Some(bracketed) => {
                    let (name, rest) = bracketed.split_once(']').ok_or("an IPv6 address without its closing `]`")?;
                    match rest {
                        "" => (name, ""),
                        _ => {
                            (name, rest.strip_prefix(':').ok_or("something other than `:port` after an IPv6 address")?)
                        }
                    }
                }
                None => host.split_once(':').unwrap_or((host, "")),
            };
            if name.is_empty() {
                return Err("an empty host name in the host list".into());
            }
            names.push(decode(name, "a host name")?);
            ports.push(decode(port, "a port")?);
        }
        self.set("host", names.join(","));
        if ports.iter().any(|p| !p.is_empty()) {
            self.set("port", ports.join(","));
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// A file parameter; empty means not given, as in libpq.
    fn take_path(&mut self, key: &str) -> Option<String> {
        self.take(key).filter(|v| !v.is_empty())
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// As a libpq `key='value' …` string, the one form in which tokio-postgres takes every value
    /// as it is (its URL reader cuts at the first `@`, wherever it is).
    fn conninfo(&self) -> String {
        let quoted = |v: &str| v.replace('\\', "\\\\").replace('\'', "\\'");
        self.0.iter().map(|(k, v)| format!("{k}='{}'", quoted(v))).collect::<Vec<_>>().join(" ")
    }
}

/// Percent-decodes one part of the URL; errors name the part, never its text.
fn decode(s: &str, what: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a `%` not followed by two hex digits in {what}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

/// A keyword-like value quoted for an error message; anything else is not repeated, as it may be
/// part of a password in a URL cut in the wrong place.
fn quoted_keyword(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 32
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        format!("`{value}`")
    } else {
        "(value not shown)".to_owned()
    }
}

/// Masks any password the URL holds in `message`, raw or decoded: tokio-postgres's messages are
/// not written here, and may one day quote what they refuse.
fn scrub(message: String, url: &str) -> String {
    mask(message, &secrets(url))
}

fn mask(message: String, secrets: &[String]) -> String {
    secrets.iter().fold(message, |message, secret| message.replace(secret.as_str(), "***"))
}

/// The passwords a URL holds, raw and decoded, longest first (so that none is half masked).
fn secrets(url: &str) -> Vec<String> {
    let Some(parts) = Parts::split(url) else { return Vec::new() };
    let mut secrets: Vec<String> = Vec::new();
    if let Some((_, password)) = parts.userinfo.and_then(|u| u.split_once(':')) {
        secrets.push(password.to_owned());
    }
    for pair in parts.pairs() {
        if let Some((key, value)) = pair.split_once('=') {
            if decode(key, "").is_ok_and(|k| k == "password") {
                secrets.push(value.to_owned());
            }
        }
    }
    let decoded: Vec<String> = secrets.iter().filter_map(|s| decode(s, "").ok()).collect();
    secrets.extend(decoded);
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// The URL with any password replaced by `***` (in the authority and in a `password=` parameter).
/// A URL whose path holds an `@` (a password with a raw `/`, most likely) is shown as
/// `scheme://…`.
pub fn redact(url: &str) -> String {
    let Some(parts) = Parts::split(url) else { return url.to_owned() };
    if parts.path.contains('@') {
        return format!("{}://…", parts.scheme);
    }
    let userinfo = match parts.userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            None => format!("{userinfo}@"),
        },
        None => String::new(),
    };
    let query = match parts.query {
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if decode(key, "").is_ok_and(|k| k == "password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("?{}", pairs.join("&"))
        }
        None => String::new(),
    };
    format!("{}://{userinfo}{}{}{query}", parts.scheme, parts.hosts, parts.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::Host;

    fn plan(url: &str) -> Plan {
        Plan::new(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        match Target::parse(url) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e,
        }
    }

    const BASE: &str = "postgres://aop:pw@db.example:5432/aop";

    #[test]
    fn each_sslmode_gives_its_tls_and_its_verification() {
        let file = || Roots::File("/etc/ca.pem".into());
        let table = [
            ("", SslMode::Prefer, Verify::Nothing),
            ("?sslmode=disable", SslMode::Disable, Verify::Nothing),
            ("?sslmode=allow", SslMode::Prefer, Verify::Nothing),
            ("?sslmode=prefer", SslMode::Prefer, Verify::Nothing),
            ("?sslmode=prefer&sslrootcert=/etc/ca.pem", SslMode::Prefer, Verify::Nothing),
            ("?sslmode=require", SslMode::Require, Verify::Nothing),
            ("?ssl=true", SslMode::Require, Verify::Nothing),
            ("?sslmode=require&sslrootcert=/etc/ca.pem", SslMode::Require, Verify::Chain(file())),
            ("?sslmode=verify-ca", SslMode::Require, Verify::Chain(Roots::Default)),
            ("?sslmode=verify-ca&sslrootcert=/etc/ca.pem", SslMode::Require, Verify::Chain(file())),
            ("?sslmode=verify-full", SslMode::Require, Verify::Full(Roots::Default)),
            ("?sslmode=verify-full&sslrootcert=/etc/ca.pem", SslMode::Require, Verify::Full(file())),
            ("?sslmode=verify-full&sslrootcert=system", SslMode::Require, Verify::Full(Roots::System)),
            ("?sslrootcert=system", SslMode::Require, Verify::Full(Roots::System)),
            ("?sslrootcert=&sslmode=verify-ca", SslMode::Require, Verify::Chain(Roots::Default)),
            // The last word wins, as in libpq.
            ("?sslmode=verify-full&sslmode=disable", SslMode::Disable, Verify::Nothing),
        ];
        for (query, ssl, verify) in table {
            let p = plan(&format!("{BASE}{query}"));
            assert_eq!((p.config.get_ssl_mode(), &p.verify), (ssl, &verify), "{query}");
        }
    }

    #[test]
    fn unknown_or_contradictory_tls_settings_are_refused_saying_what_fits() {
        let e = refused(&format!("{BASE}?sslmode=verify_full"));
        assert!(e.contains("`verify_full`") && e.contains(SSLMODES), "{e}");
        let e = refused(&format!("{BASE}?sslmode=Require"));
        assert!(e.contains(SSLMODES), "{e}");
        for mode in ["disable", "prefer", "require", "verify-ca"] {
            let e = refused(&format!("{BASE}?sslmode={mode}&sslrootcert=system"));
            assert!(e.contains("sslmode=verify-full"), "{mode}: {e}");
        }
        let e = refused(&format!("{BASE}?sslcert=/c.pem"));
        assert!(e.contains("sslcert and sslkey"), "{e}");
        let e = refused(&format!("{BASE}?sslkey=/k.pem"));
        assert!(e.contains("sslcert and sslkey"), "{e}");
    }

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_reaches_tokio_postgres_decoded() {
        let p = plan(
            "postgresql://me%40corp:p%40ss%3Aw%2Fd%25@db.example:6432/my%20db?sslmode=verify-full\
             &sslrootcert=%2Ftmp%2Fca%20x.pem&application_name=it's%5C%27&connect_timeout=7\
             &options=-c%20search_path%3Dx&target_session_attrs=read-write",
        );
        let c = &p.config;
        assert_eq!(p.verify, Verify::Full(Roots::File("/tmp/ca x.pem".into())));
        assert_eq!(c.get_user(), Some("me@corp"));
        assert_eq!(c.get_password(), Some(&b"p@ss:w/d%"[..]));
        assert_eq!(c.get_hosts(), [Host::Tcp("db.example".into())]);
        assert_eq!(c.get_ports(), [6432]);
        assert_eq!(c.get_dbname(), Some("my db"));
        assert_eq!(c.get_application_name(), Some("it's\\'"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(
            c.get_options(),
            Some("-c search_path=x -c statement_timeout=10s -c idle_in_transaction_session_timeout=30s")
        );
        assert_eq!(c.get_target_session_attrs(), tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }

    #[test]
    fn defaults_fill_what_the_url_leaves_out() {
        let c = plan("postgres://aop@db.example/aop").config;
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(c.get_application_name(), Some("aop"));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert!(c.get_ports().is_empty(), "tokio-postgres then uses 5432");
        assert_eq!(c.get_password(), None);
        assert_eq!(c.get_options(), Some("-c statement_timeout=10s -c idle_in_transaction_session_timeout=30s"));

        let c = plan("postgres://aop@db.example/aop?keepalives_idle=5&keepalives=0").config;
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(5));
        assert!(!c.get_keepalives());
    }

    #[test]
    fn a_session_setting_the_url_gives_itself_is_kept() {
        for options in ["-c%20statement_timeout%3D60s", "-cstatement_timeout%3D60s", "--statement-timeout%3D60s"] {
            let c = plan(&format!("postgres://aop@h/aop?options={options}")).config;
            let got = c.get_options().unwrap();
            assert!(!got.contains("=10s") && got.contains("60s"), "{options}: {got}");
            assert!(got.ends_with("-c idle_in_transaction_session_timeout=30s"), "{options}: {got}");
        }
    }

    #[test]
    fn hosts_are_read_as_libpq_reads_them() {
        let c = plan("postgres://aop@a.example:5433,[::1]:5434,b.example/aop").config;
        assert_eq!(
            c.get_hosts(),
            [Host::Tcp("a.example".into()), Host::Tcp("::1".into()), Host::Tcp("b.example".into())]
        );
        assert_eq!(c.get_ports(), [5433, 5434, 5432]);

        let c = plan("postgres://aop@%2Fvar%2Frun%2Fpostgresql/aop").config;
        assert_eq!(c.get_hosts(), [Host::Unix("/var/run/postgresql".into())]);

        // A query parameter replaces the authority's host, as in libpq.
        let c = plan("postgres://aop@ignored.example/aop?host=db.example&hostaddr=127.0.0.1").config;
        assert_eq!(c.get_hosts(), [Host::Tcp("db.example".into())]);
        assert_eq!(c.get_hostaddrs(), ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);

        // An `@` in a query value belongs to the value.
        let c = plan("postgres://aop@db.example?application_name=me@there").config;
        assert_eq!(c.get_hosts(), [Host::Tcp("db.example".into())]);
        assert_eq!(c.get_application_name(), Some("me@there"));

        let c = plan("POSTGRES://aop@db.example/aop").config;
        assert_eq!(c.get_dbname(), Some("aop"));
    }

    #[test]
    fn malformed_urls_are_refused_with_what_is_wrong() {
        let cases = [
            ("mysql://aop@db/aop", "postgres://"),
            ("postgres://aop@/aop", "no host"),
            ("postgres://db.example/aop", "no user"),
            ("postgres://aop@db.example:port/aop", "port"),
            ("postgres://aop@[::1/aop", "`]`"),
            ("postgres://aop@[::1]x/aop", "IPv6"),
            ("postgres://aop@a,,b/aop", "empty host"),
            ("postgres://aop@db/aop?sslmode", "without `=`"),
            ("postgres://aop@db/aop?Bad Key=1", "not a libpq keyword"),
            ("postgres://aop@db/aop?sslmod=require", "sslmod"),
            ("postgres://aop@db/%zzaop", "database name"),
            ("postgres://aop@db/%ff", "UTF-8"),
        ];
        for (url, says) in cases {
            let e = refused(url);
            assert!(e.contains(says), "{url}: {e:?} does not say {says:?}");
        }
    }

    #[test]
    fn errors_never_repeat_the_password() {
        let pw = "hunter2-Sekr1t";
        let urls = [
            // Raw `/`, `?`, `@` in the password: cut in the wrong place.
            format!("postgres://aop:{pw}/x@db.example/aop"),
            format!("postgres://aop:x?{pw}@db.example/aop"),
            format!("postgres://aop:{pw}@@db.example/aop?sslmode=nope"),
            format!("postgres://aop:{pw}@db.example:port/aop"),
            format!("postgres://aop:{pw}@[::1/aop"),
            format!("postgres://aop:{pw}%zz@db.example/aop"),
            format!("postgres://aop:{pw}@db.example/aop?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            format!("postgres://aop@db.example/aop?password={pw}&sslmode={pw}"),
            format!("postgres://aop@db.example/aop?password=a&{pw}=b"),
            format!("postgres://aop@db.example/aop?password=a&{pw}"),
            format!("postgres://{pw}:{pw}@db.example/aop?sslmode=bad"),
        ];
        for url in urls {
            let e = refused(&url);
            assert!(!e.contains(pw) && !e.contains("hunter2"), "{url}: {e}");
        }
    }

    #[test]
    fn the_drivers_messages_are_scrubbed_of_every_form_of_the_password() {
        let target = Target::parse("postgres://aop:p%40ss-word1@db.example/aop?password=other-secret").unwrap();
        let said = "FATAL: p@ss-word1 / p%40ss-word1 / other-secret for user aop";
        assert_eq!(target.scrub(said.to_owned()), "FATAL: *** / *** / *** for user aop");
    }

    #[test]
    fn root_files_that_cannot_serve_are_refused_when_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("empty.pem"), "").unwrap();
        std::fs::write(path("text.pem"), "not a certificate\n").unwrap();
        std::fs::write(path("bad64.pem"), "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        std::fs::write(path("junk.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let cases = [
            ("missing.pem", "cannot read"),
            ("empty.pem", "no certificate"),
            ("text.pem", "no certificate"),
            ("bad64.pem", "not valid PEM"),
            ("junk.pem", "cannot be a root"),
        ];
        for (file, says) in cases {
            for mode in ["require", "verify-ca", "verify-full"] {
                let url = format!("{BASE}?sslmode={mode}&sslrootcert={}", path(file).display());
                let e = refused(&url);
                assert!(e.starts_with("sslrootcert ") && e.contains(file) && e.contains(says), "{url}: {e}");
            }
        }
        // Not read where nothing is verified.
        for mode in ["disable", "prefer"] {
            Target::parse(&format!("{BASE}?sslmode={mode}&sslrootcert={}", path("missing.pem").display())).unwrap();
        }
        let e =
            refused(&format!("{BASE}?sslcert={}&sslkey={}", path("empty.pem").display(), path("text.pem").display()));
        assert!(e.contains("sslkey") && e.contains("no private key"), "{e}");
    }

    #[test]
    fn without_sslrootcert_the_home_file_is_preferred_to_the_system_roots() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(default_root_file(Some(home.path().into())), None);
        assert_eq!(default_root_file(None), None);
        std::fs::create_dir(home.path().join(".postgresql")).unwrap();
        std::fs::write(home.path().join(".postgresql/root.crt"), "").unwrap();
        assert_eq!(default_root_file(Some(home.path().into())), Some(home.path().join(".postgresql/root.crt")));
    }

    #[test]
    fn every_mode_builds_a_connector() {
        for query in ["", "?sslmode=disable", "?sslmode=require", "?sslmode=verify-full&sslrootcert=system"] {
            let url = format!("{BASE}{query}");
            if query.contains("system") && system_roots().is_err() {
                continue;
            }
            let target = Target::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.shown(), format!("postgres://aop:***@db.example:5432/aop{query}"));
        }
    }

    #[test]
    fn redaction_masks_every_password_and_nothing_else() {
        let cases = [
            ("postgres://aop:s3cret@db:5432/aop", "postgres://aop:***@db:5432/aop"),
            ("postgresql://aop:s3c%40ret@db/aop?sslmode=require", "postgresql://aop:***@db/aop?sslmode=require"),
            ("postgres://aop:@db/aop", "postgres://aop:***@db/aop"),
            ("postgres://aop@db/aop", "postgres://aop@db/aop"),
            ("postgres://db/aop?user=aop&password=s3cret&x=1", "postgres://db/aop?user=aop&password=***&x=1"),
            ("postgres://db/aop?pass%77ord=s3cret", "postgres://db/aop?pass%77ord=***"),
            ("postgres://a:b@db/aop?PASSWORD=kept", "postgres://a:***@db/aop?PASSWORD=kept"),
            ("postgres://aop:p@ss@db/aop", "postgres://aop:***@db/aop"),
            ("postgres://aop:s3/cret@db/aop", "postgres://…"),
            ("postgres://db?application_name=me@x", "postgres://db?application_name=me@x"),
            ("/var/lib/aop/events.db", "/var/lib/aop/events.db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
