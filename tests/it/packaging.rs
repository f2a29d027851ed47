//! How users get aop (README, "Install"): the artefacts of `scripts/package.sh` installed the way
//! users install them — the wheel into a fresh Python virtual environment with pip, the npm
//! tarballs into an empty folder with npm — and the collector run from there; what
//! `cargo package` would publish; `aop --version` and `aop completions`.
//!
//! `scripts/package.sh` runs once per test run, with `--binary` set to the binary this test run
//! built (the release profile, like `cargo build --release`): cargo holds its build directory's
//! lock while tests run, so the script's own `cargo build` would wait for this run to end.
//! Nothing touches the network: pip installs from the wheel file (`--no-index`), npm from the
//! tarballs (`--offline`, with an empty cache of the test's own).

use crate::support::{event, Launch, Sandbox};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_aop");
const NAME: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` to its end, its stdin closed; panics naming it, with its output, unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, said(&out));
    out
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn said(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The folder `scripts/package.sh` filled, made once per test run (the other tests wait for it).
fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let dist = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-dist");
        let started = Instant::now();
        let out = run_ok(
            Command::new(manifest_dir().join("scripts/package.sh"))
                .args(["--binary", BIN, "--out"])
                .arg(&dist)
                .env("npm_config_cache", dist.with_extension("npm-cache")),
        );
        eprintln!("scripts/package.sh took {:.1?}\n{}", started.elapsed(), String::from_utf8_lossy(&out.stderr));
        dist
    })
}

/// The artefacts, without blocking the test's runtime: `(wheel, npm main tarball, npm platform tarball)`.
async fn artefacts() -> (PathBuf, PathBuf, PathBuf) {
    let dist = match tokio::task::spawn_blocking(|| dist().to_owned()).await {
        Ok(dist) => dist,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dist).expect("dist/").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let pick = |name: String| {
        let found = files.iter().find(|f| f.file_name().unwrap().to_string_lossy() == name);
        found.unwrap_or_else(|| panic!("no {name} in {}: {names:?}", dist.display())).clone()
    };
    let wheels: Vec<&String> = names.iter().filter(|n| n.ends_with(".whl")).collect();
    let dist_name = NAME.replace('-', "_");
    assert_eq!(wheels.len(), 1, "one wheel: {names:?}");
    assert!(
        wheels[0].starts_with(&format!("{dist_name}-{VERSION}-py3-none-manylinux_2_"))
            && wheels[0].ends_with("_x86_64.whl"),
        "the wheel's name carries the crate's version and a manylinux tag: {}",
        wheels[0]
    );
    assert_eq!(names.len(), 3, "dist/ holds the wheel and two tarballs, nothing else: {names:?}");
    (pick(wheels[0].clone()), pick(format!("{NAME}-{VERSION}.tgz")), pick(format!("{NAME}-linux-x64-{VERSION}.tgz")))
}

/// uv, which the README's `uvx aop-collector start` needs: pinned, installed from PyPI once into
/// `target/packaging-uv-<version>` (built beside it and renamed into place) and reused after.
const UV: &str = "0.13.9";

fn uvx() -> &'static Path {
    static UVX: OnceLock<PathBuf> = OnceLock::new();
    UVX.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/").to_owned();
        let venv = target.join(format!("packaging-uv-{UV}"));
        if !venv.join("bin/uvx").exists() {
            let building = target.join(format!("packaging-uv-{UV}.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&building);
            run_ok(Command::new("python3").args(["-m", "venv"]).arg(&building));
            run_ok(Command::new(building.join("bin/pip")).args([
                "install",
                "--disable-pip-version-check",
                "--quiet",
                &format!("uv=={UV}"),
            ]));
            // Another test run may have won the race: keep its environment.
            if std::fs::rename(&building, &venv).is_err() {
                let _ = std::fs::remove_dir_all(&building);
            }
        }
        venv.join("bin/uvx")
    })
}

/// `aop --version` of the build itself.
fn version_line() -> String {
    String::from_utf8(run_ok(Command::new(BIN).arg("--version")).stdout).expect("UTF-8")
}

/// `program` (an installed aop, or a launcher of it) serves like the build: `/health` answers
/// with the crate's version, an event posted is stored and read back, and SIGTERM sent to
/// `program` ends it with 0.
async fn serves(program: &Path) {
    let sandbox = Arc::new(Sandbox::new());
    let mut server = Launch::in_sandbox(sandbox).program(program).start().await;
    let health = server.health().await;
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["version"], VERSION, "{health}");
    let ev = event("sess_installed", 1, "session.started", json!({"goal": "run from a package"}));
    server.ingest_one(&ev).await;
    let events = server.events("sess_installed").await;
    assert_eq!(events, vec![ev], "the event comes back as sent");
    assert_eq!(server.session("sess_installed").await["goal"], "run from a package");
    server.sigterm().await;
}

/// pip installs the wheel into a fresh virtual environment, with no index; the `aop` it puts in
/// the environment's `bin/` is the build's binary, and serves. The metadata PyPI would show
/// carries the crate's name, version, licence and the quick start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wheel_installs_with_pip_and_aop_runs_from_the_environment() {
    let (wheel, _, _) = artefacts().await;
    let dir = tempfile::Builder::new().prefix("aop-wheel-").tempdir().expect("temporary directory");
    let venv = dir.path().join("venv");
    run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    let pip = run_ok(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--no-index", "--disable-pip-version-check", "--no-cache-dir"])
            .arg(&wheel),
    );
    let installed = venv.join("bin/aop");
    assert!(installed.is_file(), "pip put no aop in the environment's bin/\n{}", said(&pip));
    let version = run_ok(Command::new(&installed).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&version.stdout), version_line());

    let show = run_ok(Command::new(venv.join("bin/python")).args([
        "-c",
        "import importlib.metadata as m, sys; d = m.distribution(sys.argv[1]); \
         print(d.version); print(d.metadata['License-Expression']); print(d.metadata['Summary']); \
         print(d.metadata.get_payload())",
        NAME,
    ]));
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    let mut lines = show.lines();
    assert_eq!(lines.next(), Some(VERSION), "{show}");
    assert_eq!(lines.next(), Some("MIT"), "{show}");
    assert!(lines.next().is_some_and(|s| s.contains("Agent Observability Protocol")), "{show}");
    assert!(show.contains(&format!("uvx {NAME} start")), "the long description shows the quick start:\n{show}");

    serves(&installed).await;

    // `uvx aop-collector start`, with the wheel in place of the index (uv never asks one here).
    let uvx = tokio::task::spawn_blocking(|| uvx().to_owned()).await.expect("uv");
    let script = dir.path().join("uvx-aop");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nUV_CACHE_DIR='{}' UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1 exec '{}' --offline --from '{}' aop \"$@\"\n",
            dir.path().join("uv-cache").display(),
            uvx.display(),
            wheel.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let version = run_ok(Command::new(&script).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&version.stdout), version_line(), "through uvx");
    serves(&script).await;
}

/// An empty folder `npm install`s the two tarballs (offline, from the files): the launcher finds
/// the binary in the platform package and passes everything through (`--version`'s output, a
/// refused command's exit code and message, SIGTERM); `npx <package>` runs it as the README says;
/// without the platform package the launcher says which platform and package, and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_packages_install_offline_and_the_launcher_passes_everything_through() {
    let (_, main, platform) = artefacts().await;
    let dir = tempfile::Builder::new().prefix("aop-npm-").tempdir().expect("temporary directory");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).expect("project folder");
    let npm = |args: &[&str]| {
        let mut cmd = Command::new("npm");
        cmd.args(args)
            .current_dir(&project)
            .env("npm_config_cache", dir.path().join("npm-cache"))
            .env("npm_config_update_notifier", "false");
        cmd
    };
    let install = run_ok(npm(&["install", "--offline", "--no-audit", "--no-fund"]).arg(&main).arg(&platform));
    let launcher = project.join("node_modules/.bin/aop");
    assert!(launcher.exists(), "npm made no node_modules/.bin/aop\n{}", said(&install));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.join(format!("node_modules/{NAME}/package.json"))).expect("package.json"),
    )
    .expect("JSON");
    assert_eq!(manifest["version"], VERSION);
    assert_eq!(manifest["optionalDependencies"][format!("{NAME}-linux-x64")], VERSION, "{manifest}");
    assert!(
        std::fs::read_to_string(project.join(format!("node_modules/{NAME}/README.md")))
            .expect("README")
            .contains(&format!("npx {NAME} start")),
        "the npm README shows the quick start"
    );

    // Arguments and output pass through, as do a refusal's exit code and message.
    let version = run_ok(Command::new(&launcher).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&version.stdout), version_line());
    let direct = run(Command::new(BIN).args(["start", "--port", "notaport"]));
    let through = run(Command::new(&launcher).args(["start", "--port", "notaport"]));
    assert!(!direct.status.success() && direct.status.code().is_some(), "{}", said(&direct));
    assert_eq!(through.status.code(), direct.status.code(), "{}", said(&through));
    assert_eq!(through.stderr, direct.stderr, "{}", said(&through));
    // `npx <package>` in a folder that has it runs its `aop`: the README's `npx aop-collector
    // start` without the registry (which would fetch the same two packages).
    let npx = run_ok(
        Command::new("npx")
            .args(["--offline", "--no-install", NAME, "--version"])
            .current_dir(&project)
            .env("npm_config_cache", dir.path().join("npm-cache")),
    );
    assert_eq!(String::from_utf8_lossy(&npx.stdout), version_line());

    // The collector, through the launcher: SIGTERM goes to node, which forwards it.
    serves(&launcher).await;

    // Without the platform package (installed with --omit=optional, say): a clear refusal.
    std::fs::remove_dir_all(project.join(format!("node_modules/{NAME}-linux-x64"))).expect("remove");
    let missing = run(Command::new(&launcher).args(["start"]));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{}", said(&missing));
    assert!(
        stderr.contains("(linux-x64)")
            && stderr.contains(&format!("{NAME}-linux-x64"))
            && stderr.contains("--omit=optional"),
        "the message names the platform, the package and the likely cause: {stderr}"
    );
}

/// What `cargo package` would publish: what a build needs, nothing private or generated.
#[test]
fn the_crate_package_holds_what_a_build_needs_and_nothing_else() {
    let out = run_ok(
        Command::new(env!("CARGO"))
            .args(["package", "--list", "--allow-dirty", "--offline"])
            .current_dir(manifest_dir()),
    );
    let list = String::from_utf8(out.stdout).expect("UTF-8");
    let files: Vec<&str> = list.lines().collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "src/lib.rs",
        "dashboard/index.html",
        "README.md",
        "LICENSE",
    ] {
        assert!(files.contains(&needed), "{needed} is not in the package:\n{list}");
    }
    for file in &files {
        let private =
            ["tests/", "target/", "dist/", "fuzz/", "deploy/", "packaging/", "proptest-regressions/", "scripts/", "."]
                .iter()
                .any(|dir| file.starts_with(dir) && *file != ".cargo_vcs_info.json");
        let data = [".db", ".db-wal", ".db-shm", ".sqlite", ".png", ".jpg", ".whl", ".tgz", ".pem", ".key"]
            .iter()
            .any(|ext| file.ends_with(ext));
        assert!(!private && !data, "{file} should not be in the package:\n{list}");
    }
}

/// `aop --version` names the version and the commit it was built from (this checkout's HEAD when
/// git can read it), and each shell's completion script completes the subcommands.
#[test]
fn version_names_the_commit_and_completions_print_for_each_shell() {
    let version = version_line();
    let commit = version
        .strip_prefix(&format!("aop {VERSION} (commit "))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("not `aop {VERSION} (commit …)`: {version:?}"));
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(manifest_dir()).output();
    match head {
        Ok(head) if head.status.success() && manifest_dir().join(".git").exists() => {
            assert_eq!(commit, String::from_utf8_lossy(&head.stdout).trim(), "the build's commit is HEAD");
        }
        _ => assert!(commit == "unknown" || commit.len() == 12, "{version:?}"),
    }

    let dir = tempfile::Builder::new().prefix("aop-completions-").tempdir().expect("temporary directory");
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(Command::new(BIN).args(["completions", shell]));
        let script = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(script.len() > 500 && script.contains("start") && script.contains("completions"), "{shell}: {script}");
        let file = dir.path().join(format!("aop.{shell}"));
        std::fs::write(&file, &script).expect("write");
        if shell == "bash" {
            run_ok(Command::new("bash").arg("-n").arg(&file));
        }
    }
    let refused = run(Command::new(BIN).args(["completions", "cmd.exe"]));
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
}
