use aop::app::{App, StartError};

/// glibc's allocator showed up as a tenth of the request path's CPU in profiles; mimalloc halves that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use aop::cli::{Cli, Command, CopyArgs, DetectFileArgs, DiffArgs, NotifyCommand, NotifyTestArgs, StartArgs};
use aop::config::{Config, OpenBrowser};
use clap::{CommandFactory, FromArgMatches};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit codes, documented in the README.
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_PORT_IN_USE: u8 = 3;
const EXIT_DATABASE: u8 = 4;
/// `aop diff`'s, as `diff`'s: 0 the same, 1 different, 2 trouble (clap's usage errors are 2 too).
const EXIT_DIFFERENT: u8 = 1;
const EXIT_DIFF_TROUBLE: u8 = 2;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Over stdio the client shows a server's stderr as its log: the SDK's info lines are noise there.
    init_logging(if matches!(cli.command, Command::Mcp(_)) { "warn" } else { "info" });
    match cli.command {
        Command::Start(args) => {
            let start_matches = matches.subcommand_matches("start").cloned().unwrap_or_default();
            start(args, &start_matches)
        }
        Command::Bench(args) => aop::bench::run(args),
        Command::Detect(args) => detect(args),
        Command::Diff(args) => diff(args),
        Command::Copy(args) => {
            let copy_matches = matches.subcommand_matches("copy").cloned().unwrap_or_default();
            copy(args, &copy_matches)
        }
        Command::Demo(args) => aop::demo::run(args),
        Command::Hooks(args) => {
            let aop::cli::HookAgent::ClaudeCode = args.agent;
            let settings = aop::hooks::settings(&args.url, args.token.as_deref().filter(|t| !t.is_empty()));
            println!("{}", serde_json::to_string_pretty(&settings).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Completions(args) => completions(args.shell),
        Command::Notify(args) => match args.command {
            NotifyCommand::Test(args) => notify_test(args),
        },
        Command::Mcp(args) => mcp(args),
    }
}

/// `aop mcp`: MCP over stdio until the client closes stdin.
fn mcp(args: aop::cli::McpArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aop: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let token = args.token.as_deref().filter(|t| !t.is_empty());
    match runtime.block_on(aop::mcp::stdio(&args.url, token, args.mcp_allow_stop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aop mcp: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Prints the completion script; a closed pipe (`| head`) is a failure, not a panic.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aop", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aop: cannot write the completion script: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AOP_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The resolved settings of `aop start` or `aop copy` and the runtime they run on; a settings
/// error is a configuration failure, failing to build the runtime a runtime failure.
fn prepare<T>(settings: anyhow::Result<T>) -> Result<(T, tokio::runtime::Runtime), ExitCode> {
    let settings = settings.map_err(|e| {
        eprintln!("aop: {e:#}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("aop: cannot start the runtime: {e}");
        ExitCode::from(EXIT_FAILURE)
    })?;
    Ok((settings, runtime))
}

fn start(args: StartArgs, matches: &clap::ArgMatches) -> ExitCode {
    let (config, runtime) = match prepare(args.resolve(matches)) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let stop = stop_signal();
        let app = match App::build(config.clone()).await {
            Ok(app) => app,
            Err(e) => return startup_failure(&config, e).await,
        };
        let addr = app.addr();
        let base = format!("http://{addr}");
        println!("aop {} is collecting AOP events", env!("CARGO_PKG_VERSION"));
        println!("  collector  {base}  (agents send to {base}/events)");
        println!("  dashboard  {base}/dashboard/");
        println!("  database   {}", describe_db(&config));
        if !config.notify.targets.is_empty() {
            // Targets by name (else format and host): never a URL, which holds a webhook's token.
            let labels: Vec<String> = config.notify.targets.iter().map(|t| t.label()).collect();
            println!("  notify     {}", aop::clean::text(&labels.join(", ")));
        }
        if config.token.is_some() {
            println!("  access     a token is required (Authorization: Bearer …)");
        }
        tracing::info!(addr = %addr, "listening");
        if config.open == OpenBrowser::Auto {
            open_browser(&format!("{base}/dashboard/"));
        }
        match app.run_until(stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("aop: {e:#}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

/// The store as startup reports it: never a password.
fn describe_db(config: &Config) -> String {
    match &config.db {
        aop::store::Location::File(_) => format!("{} (durability: {})", config.db, config.durability),
        aop::store::Location::Postgres(_) => format!("{} (PostgreSQL, {} read connections)", config.db, config.db_pool),
    }
}

async fn startup_failure(config: &Config, e: StartError) -> ExitCode {
    match e {
        StartError::PortInUse { host, port } => {
            let url = format!("http://{}:{port}", if host.contains(':') { format!("[{host}]") } else { host.clone() });
            match aop::probe::aop_version_at(&host, port).await {
                Some(version) => {
                    eprintln!("aop: an aop collector (version {version}) is already running at {url}; dashboard: {url}/dashboard/");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("aop: port {port} is already in use by another program; choose another with --port (or AOP_PORT), e.g. --port 0 for any free port");
                    ExitCode::from(EXIT_PORT_IN_USE)
                }
            }
        }
        StartError::Bind { .. } => {
            eprintln!("aop: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
        StartError::Store(e) => {
            eprintln!("aop: {e}");
            eprintln!("aop: database: {}", config.db);
            ExitCode::from(EXIT_DATABASE)
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that arrives while the collector is still starting (after
/// it said where it listens, before it serves) stops it cleanly instead of killing it.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = wait(&mut term) => {}
            () = wait(&mut int) => {}
        }
    }
}

/// The next delivery of a signal whose handler could be installed; never, otherwise.
async fn wait(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => drop(s.recv().await),
        None => std::future::pending().await,
    }
}

/// Opens the dashboard only for a person at a terminal with a browser to show it in.
fn open_browser(url: &str) {
    if !std::io::stdout().is_terminal() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        Some("open".to_owned())
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        std::env::var("BROWSER").ok().or_else(|| Some("xdg-open".to_owned()))
    } else {
        None
    };
    let Some(opener) = opener.filter(|o| on_path(o)) else {
        return;
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `aop detect FILE`: the live detectors, offline, over an export. Every line printed may quote
/// agents' text, so each goes through `aop::clean`.
fn detect(args: DetectFileArgs) -> ExitCode {
    use aop::clean;
    use std::io::{BufRead, Write};
    let cfg = match args.detect.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aop: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(&args.file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("aop: {}", clean::text(&format!("cannot read {}: {e}", args.file.display())));
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    };
    let mut lines = aop::jsonl::Lines::new(reader);
    let report = aop::detect::replay(lines.by_ref(), &cfg);
    // Alerts of part of the input would read as the whole's: as `aop diff`, nothing is printed.
    if let Some(e) = lines.error() {
        eprintln!("aop: {}", clean::text(&format!("cannot read {}: {e}", args.file.display())));
        return ExitCode::from(EXIT_FAILURE);
    }
    for err in &report.errors {
        eprintln!("{}", clean::text(&format!("line {}: {}", err.line, err.reason)));
    }
    let printed = (|| {
        let mut out = std::io::stdout().lock();
        for (session, alert) in &report.alerts {
            if args.json {
                writeln!(out, "{}", clean::json(alert.to_json(session, None, None)))?;
            } else {
                let at = alert.sequence.map_or_else(|| "-".to_owned(), |s| format!("#{s}"));
                let line =
                    format!("{session}  {at}  {}  {}: {}", alert.severity.as_str(), alert.kind.as_str(), alert.message);
                writeln!(out, "{}", clean::text(&line))?;
            }
        }
        if !args.json {
            let repeated = match report.duplicates {
                0 => String::new(),
                n => format!(", {n} repeated lines skipped"),
            };
            writeln!(
                out,
                "{} events, {} alerts, {} unreadable lines{repeated}",
                report.events,
                report.alerts.len(),
                report.errors.len()
            )?;
        }
        out.flush()
    })();
    // A closed pipe (`aop detect … | head`) is not an error worth a message.
    if let Some(e) = printed.err().filter(|e| e.kind() != std::io::ErrorKind::BrokenPipe) {
        eprintln!("aop: cannot write the output: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    if report.events == 0 && !report.errors.is_empty() {
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
}

/// `aop diff A B`. Never `EXIT_FAILURE` for a failure: 1 means the runs differ.
fn diff(args: DiffArgs) -> ExitCode {
    let outcome = args.resolve().and_then(|plan| aop::diff::run(&plan));
    match outcome {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(EXIT_DIFFERENT),
        Err(e) => {
            // The reason may quote an agent's text (a session id, a collector's answer).
            eprintln!("aop diff: {}", aop::clean::text(&format!("{e:#}")));
            ExitCode::from(EXIT_DIFF_TROUBLE)
        }
    }
}

/// `aop copy --from DB --to DB`.
fn copy(args: CopyArgs, matches: &clap::ArgMatches) -> ExitCode {
    let (plan, runtime) = match prepare(args.resolve(matches)) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    match runtime.block_on(aop::copy::run(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        // The database's errors may quote what it holds.
        Err(aop::copy::Failure::Open(e)) => {
            eprintln!("aop: {}", aop::clean::text(&e));
            ExitCode::from(EXIT_DATABASE)
        }
        Err(aop::copy::Failure::Copy(e)) => {
            eprintln!("aop: {}", aop::clean::text(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `aop notify test`: 0 when every target took the sample, 1 when one did not, 2 for a
/// configuration without targets (or a bad one).
fn notify_test(args: NotifyTestArgs) -> ExitCode {
    let (config, runtime) = match prepare(args.resolve()) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    if config.notify.targets.is_empty() {
        eprintln!("aop: no notification targets: declare them in [[notify]] tables of the config file (README, \"Notifications\")");
        return ExitCode::from(EXIT_CONFIG);
    }
    let base = aop::app::base_url(&config, None);
    let outcomes = runtime.block_on(aop::notify::check::run(&config.notify, &base));
    let (text, all) = aop::notify::check::report(&outcomes);
    print!("{text}");
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}
