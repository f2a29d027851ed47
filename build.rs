//! Embeds every file under `dashboard/` into the binary, so the collector serves its dashboard
//! offline from one file, and a new dashboard file needs no code change.

use std::fmt::Write;
use std::path::Path;

fn main() {
    // Read when the script runs, not baked in when it is compiled (`env!`): a target directory
    // copied from another checkout keeps its compiled build script, which must still embed this
    // checkout's files.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&root).join("dashboard");
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
