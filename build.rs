//! Embeds every file under `dashboard/` into the binary, so the collector serves its dashboard
//! offline from one file, and a new dashboard file needs no code change; and tells the binary the
//! commit it is built from (`AOP_COMMIT`, shown by `aop --version`).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Read when the script runs, not baked in when it is compiled (`env!`): a target directory
    // copied from another checkout keeps its compiled build script, which must still embed this
    // checkout's files.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    println!("cargo:rustc-env=AOP_COMMIT={}", commit(root));
    embed_dashboard(root);
}

/// The commit as `--version` shows it: 12 hex digits, or `unknown`.
///
/// From git when the package's own directory is a checkout (a `.git` there: a parent directory's
/// repository is some other project's). Then only `HEAD` and the file of the branch it names are
/// watched, so a new commit reruns this script (and rebuilds this crate, not its dependencies)
/// while edits do not. No `-dirty` mark: keeping it true would mean rerunning on every edit of
/// every file. Without git (a crate unpacked from a registry), the commit `cargo package` recorded
/// in `.cargo_vcs_info.json`; else `unknown`.
fn commit(root: &Path) -> String {
    if root.join(".git").exists() {
        if let Some(sha) = git(root, &["rev-parse", "--short=12", "HEAD"]) {
            for file in watched_git_files(root) {
                println!("cargo:rerun-if-changed={}", file.display());
            }
            return sha;
        }
        // A checkout git cannot read (not installed, another user's): try again once it can.
        println!("cargo:rerun-if-changed={}", root.join(".git").display());
    }
    let info = root.join(".cargo_vcs_info.json");
    if let Ok(text) = std::fs::read_to_string(&info) {
        println!("cargo:rerun-if-changed={}", info.display());
        if let Some(sha) = vcs_info_sha1(&text) {
            return sha;
        }
    }
    "unknown".to_owned()
}

/// `HEAD` (which names the branch) and where git keeps that branch's commit: its loose ref file,
/// else the packed refs (watching its directory only when neither exists yet). Only existing
/// paths: cargo reruns a script that watches a missing file on every build.
fn watched_git_files(root: &Path) -> Vec<PathBuf> {
    let path = |name: &str| git(root, &["rev-parse", "--git-path", name]).map(|p| root.join(p));
    let mut files: Vec<PathBuf> = path("HEAD").into_iter().collect();
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        match path(&branch) {
            Some(loose) if loose.exists() => files.push(loose),
            Some(loose) => {
                let packed = path("packed-refs").filter(|p| p.exists());
                files.extend(packed);
                files.extend(loose.parent().filter(|d| d.exists()).map(Path::to_owned));
            }
            None => {}
        }
    }
    files.retain(|f| f.exists());
    files
}

/// Runs git in `dir`; its first line of output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}

/// The first 12 digits of `"sha1": "<40 hex digits>"` in cargo's `.cargo_vcs_info.json`.
fn vcs_info_sha1(text: &str) -> Option<String> {
    let rest = &text[text.find("\"sha1\"")? + 6..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let sha: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (sha.len() >= 12).then(|| sha[..12].to_owned())
}

fn embed_dashboard(root: &Path) {
    let dir = root.join("dashboard");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<String> = Vec::new();
    collect(&dir, &dir, &mut files);
    files.sort();
    let mut out = String::from("static ASSETS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
        writeln!(out, "    ({f:?}, include_bytes!({:?})),", dir.join(f).display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("dashboard_assets.rs");
    std::fs::write(dest, out).unwrap();
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}
