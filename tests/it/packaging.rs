//! How users get aop (README, "Install"): the artefacts of `scripts/package.sh` installed the way
//! users install them — the wheel into a fresh Python virtual environment with pip, the npm
//! tarballs into an empty folder with npm (and pnpm) — and the collector run from there; which
//! platform package the npm launcher runs; what paths the shipped binary names; what `cargo
//! package` would publish; `aop --version` and `aop completions`.
//!
//! `scripts/package.sh` runs once per test run, with `--binary` set to the binary this test run
//! built (the release profile, like `cargo build --release`): cargo holds its build directory's
//! lock while tests run, so the script's own `cargo build` would wait for this run to end.
//! The installs under test touch no network: pip installs from the wheel file (`--no-index`), npm
//! and pnpm from the tarballs (`--offline`, with empty caches of the test's own). Only the tools
//! Debian does not ship, uv and pnpm, come from their registries, pinned, once into `target/`.

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

/// pnpm, pinned (10.x: 11.x needs a newer Node.js than Debian's), installed from the npm registry
/// once into `target/packaging-pnpm-<version>` (built beside it and renamed into place) and reused.
const PNPM: &str = "10.34.9";

fn pnpm() -> &'static Path {
    static PNPM_BIN: OnceLock<PathBuf> = OnceLock::new();
    PNPM_BIN.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/").to_owned();
        let prefix = target.join(format!("packaging-pnpm-{PNPM}"));
        if !prefix.join("node_modules/.bin/pnpm").exists() {
            let building = target.join(format!("packaging-pnpm-{PNPM}.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&building);
            std::fs::create_dir_all(&building).expect("pnpm folder");
            run_ok(
                Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                    .arg(&building)
                    .arg(format!("pnpm@{PNPM}"))
                    .env("npm_config_update_notifier", "false"),
            );
            // Another test run may have won the race: keep its copy.
            if std::fs::rename(&building, &prefix).is_err() {
                let _ = std::fs::remove_dir_all(&building);
            }
        }
        prefix.join("node_modules/.bin/pnpm")
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

/// `npm install`s the two tarballs into `<dir>/project`, offline, with a cache of its own under
/// `dir`: the project folder and npm's output.
fn npm_install(dir: &Path, main: &Path, platform: &Path) -> (PathBuf, Output) {
    let project = dir.join("project");
    std::fs::create_dir(&project).expect("project folder");
    let install = run_ok(
        Command::new("npm")
            .args(["install", "--offline", "--no-audit", "--no-fund"])
            .arg(main)
            .arg(platform)
            .current_dir(&project)
            .env("npm_config_cache", dir.join("npm-cache"))
            .env("npm_config_update_notifier", "false"),
    );
    (project, install)
}

/// An empty folder `npm install`s the two tarballs (offline, from the files): the launcher finds
/// the binary in the platform package and passes everything through (`--version`'s output, a
/// refused command's exit code and message, SIGTERM); `npx <package>` runs it as the README says;
/// without the platform package the launcher says which platform and package, and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_packages_install_offline_and_the_launcher_passes_everything_through() {
    let (_, main, platform) = artefacts().await;
    let dir = tempfile::Builder::new().prefix("aop-npm-").tempdir().expect("temporary directory");
    let (project, install) = npm_install(dir.path(), &main, &platform);
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

/// A stand-in `aop-collector-linux-x64` at the launcher's own version, in `node_modules`, whose
/// `aop` only prints `marker`: what a folder above the project, or one on `NODE_PATH`, might hold.
fn decoy(node_modules: &Path, marker: &str) {
    let dir = node_modules.join(format!("{NAME}-linux-x64"));
    std::fs::create_dir_all(dir.join("bin")).expect("decoy folder");
    let manifest = json!({"name": format!("{NAME}-linux-x64"), "version": VERSION, "bin": {"aop": "bin/aop"}});
    std::fs::write(dir.join("package.json"), manifest.to_string()).expect("decoy package.json");
    let aop = dir.join("bin/aop");
    std::fs::write(&aop, format!("#!/bin/sh\necho '{marker}'\n")).expect("decoy aop");
    std::fs::set_permissions(&aop, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The launcher refused to start: exit 1, nothing run (no output, no decoy's marker), and a
/// message on stderr, returned.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", said(out));
    assert!(out.stdout.is_empty() && !stderr.contains("decoy"), "something ran: {}", said(out));
    stderr
}

/// The launcher runs the platform package installed for its own copy, where npm and pnpm put it
/// (nested in its `node_modules`, hoisted beside it, linked beside it in pnpm's store), at its own
/// version, and nothing else: a platform package of another version is refused with both versions
/// and the command that fixes it, and an `aop-collector-linux-x64` in a parent folder's
/// `node_modules` or on `NODE_PATH` is never run, whatever its version says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_runs_only_the_platform_package_of_its_own_install_and_version() {
    let (_, main, platform) = artefacts().await;
    let dir = tempfile::Builder::new().prefix("aop-npm-").tempdir().expect("temporary directory");
    let (project, _) = npm_install(dir.path(), &main, &platform);
    let modules = project.join("node_modules");
    let launcher = modules.join(".bin/aop");
    let own = modules.join(NAME);
    let hoisted = modules.join(format!("{NAME}-linux-x64"));

    // pnpm (real, pinned) links each package's dependencies beside it in its store folder, not in
    // the project's node_modules. The overrides stand in for the registry: the platform package
    // from its tarball, the other platforms' left out.
    let pnpm_project = dir.path().join("pnpm");
    std::fs::create_dir(&pnpm_project).expect("pnpm project");
    let mut overrides = serde_json::Map::new();
    for other in ["linux-arm64", "darwin-arm64", "darwin-x64", "win32-x64"] {
        overrides.insert(format!("{NAME}-{other}"), json!("-"));
    }
    overrides.insert(format!("{NAME}-linux-x64"), json!(format!("file:{}", platform.display())));
    let manifest = json!({"name": "project", "version": "1.0.0", "pnpm": {"overrides": overrides}});
    std::fs::write(pnpm_project.join("package.json"), manifest.to_string()).expect("package.json");
    let pnpm = tokio::task::spawn_blocking(|| pnpm().to_owned()).await.expect("pnpm");
    run_ok(
        Command::new(&pnpm)
            .args(["add", "--offline", "--reporter=silent", "--store-dir"])
            .arg(dir.path().join("pnpm-store"))
            .arg("--cache-dir")
            .arg(dir.path().join("pnpm-cache"))
            .arg(&main)
            .current_dir(&pnpm_project),
    );
    assert!(!pnpm_project.join(format!("node_modules/{NAME}-linux-x64")).exists(), "pnpm hoisted it");
    let through_pnpm = run_ok(Command::new(pnpm_project.join("node_modules/.bin/aop")).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&through_pnpm.stdout), version_line(), "through pnpm");

    // Nested in the launcher's own node_modules, as npm installs it globally.
    let nested = own.join(format!("node_modules/{NAME}-linux-x64"));
    std::fs::create_dir(own.join("node_modules")).expect("nested node_modules");
    std::fs::rename(&hoisted, &nested).expect("move the platform package");
    let version = run_ok(Command::new(&launcher).arg("--version"));
    assert_eq!(String::from_utf8_lossy(&version.stdout), version_line(), "nested");

    // Another version: refused, saying what was found where, and how to fix it.
    let real_nested = nested.canonicalize().expect("the platform package's folder");
    let manifest_file = nested.join("package.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_file).expect("package.json")).expect("JSON");
    manifest["version"] = json!("0.0.1-other");
    std::fs::write(&manifest_file, manifest.to_string()).expect("package.json");
    let other = refused(&run(Command::new(&launcher).arg("--version")));
    assert!(
        other.contains(&format!("{NAME} {VERSION}"))
            && other.contains(&format!("{NAME}-linux-x64 0.0.1-other in {}", real_nested.display()))
            && other.contains(&format!("npm install {NAME}@{VERSION}")),
        "the message names both versions, where the other is, and the fix: {other}"
    );
    std::fs::remove_dir_all(&nested).expect("remove the platform package");

    // Decoys at the right version, first in a parent folder's node_modules (which Node.js's own
    // resolution would reach), then on NODE_PATH: neither is run, and the message is the one for
    // a missing platform package.
    let above = dir.path().join("node_modules");
    decoy(&above, "decoy from a parent folder ran");
    let parent = refused(&run(Command::new(&launcher).arg("--version").current_dir(&project)));
    assert!(parent.contains("--omit=optional"), "{parent}");
    std::fs::remove_dir_all(&above).expect("remove the decoy");
    let node_path = dir.path().join("node-path");
    decoy(&node_path, "decoy on NODE_PATH ran");
    let on_node_path = refused(&run(Command::new(&launcher).arg("--version").env("NODE_PATH", &node_path)));
    assert!(on_node_path.contains("--omit=optional"), "{on_node_path}");
}

/// The printable ASCII runs of at least 6 bytes in `bytes`, as `strings -n 6` lists them.
fn printable_runs(bytes: &[u8]) -> Vec<&str> {
    bytes
        .split(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t'))
        .filter(|run| run.len() >= 6)
        .map(|run| std::str::from_utf8(run).expect("ASCII"))
        .collect()
}

/// The binary that ships, the same in the wheel and the npm platform package, names no path of the
/// machine that built it: not the checkout, not `$HOME`, not `$CARGO_HOME`'s crate sources. Panic
/// locations still name their files: `src/…` for aop's own, `/cargo/registry/src/…` for a crate's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_binary_names_no_path_of_the_machine_that_built_it() {
    let (wheel, _, platform) = artefacts().await;
    let from_wheel = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
         [name] = [n for n in z.namelist() if n.endswith('.data/scripts/aop')]; \
         sys.stdout.buffer.write(z.read(name))",
            )
            .arg(&wheel),
    )
    .stdout;
    let from_npm = run_ok(Command::new("tar").arg("-xzOf").arg(&platform).arg("package/bin/aop")).stdout;
    assert!(from_wheel == from_npm, "the wheel and the npm package ship different binaries");
    let runs = printable_runs(&from_npm);

    let home = std::env::var("HOME").ok().filter(|home| home.starts_with('/') && home.len() > 1);
    let cargo_home = std::env::var("CARGO_HOME").ok().or_else(|| home.as_ref().map(|home| format!("{home}/.cargo")));
    let checkout = manifest_dir().to_string_lossy().into_owned();
    let real_checkout = manifest_dir().canonicalize().expect("checkout").to_string_lossy().into_owned();
    let mut machine: Vec<String> =
        [Some(checkout), Some(real_checkout), home, cargo_home, Some("/.cargo/registry".to_owned())]
            .into_iter()
            .flatten()
            .map(|path| format!("{}/", path.trim_end_matches('/')))
            .collect();
    machine.dedup();
    let mut leaks = Vec::new();
    for path in &machine {
        let found: Vec<&str> = runs.iter().copied().filter(|run| run.contains(path.as_str())).collect();
        eprintln!("strings naming {path}: {}", found.len());
        if !found.is_empty() {
            leaks.push(format!("{} strings name {path}, e.g. {:?}", found.len(), &found[..found.len().min(3)]));
        }
    }
    let sources: Vec<&str> = runs.iter().copied().filter(|run| run.contains(".rs")).collect();
    let count = |prefix: &str| sources.iter().filter(|run| run.starts_with(prefix)).count();
    eprintln!(
        "strings naming a .rs file: {} (/cargo/registry/src/…: {}, src/…: {}, /rustc/…: {}, /rust/deps/…: {})",
        sources.len(),
        count("/cargo/registry/src/"),
        count("src/"),
        count("/rustc/"),
        count("/rust/deps/")
    );
    assert!(leaks.is_empty(), "the shipped binary names paths of the machine that built it: {leaks:#?}");
    assert!(count("/cargo/registry/src/") > 0 && count("src/") > 0, "panic locations still name their files");
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
