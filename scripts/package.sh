#!/usr/bin/env bash
# Builds every artefact aop is installed from into dist/, from one release binary:
#   - a Python wheel holding the binary (pip, pipx, uvx put `aop` in the environment's bin/);
#   - two npm tarballs in the esbuild/Biome pattern: `aop-collector` (a Node.js launcher that runs
#     the binary of the platform package npm installed beside it) and `aop-collector-<os>-<cpu>`
#     (the binary, for this machine's platform).
# Name, version, summary, licence and repository come from Cargo.toml's [package]: one source of
# truth. Nothing is published.
#
# Usage: scripts/package.sh [--binary PATH] [--out DIR]
#   --binary PATH  package this binary instead of building one (`cargo build --release --locked`)
#   --out DIR      where the artefacts go (default dist/; its previous artefacts are removed)
# Needs python3 (standard library only), npm, objcopy and strings (binutils).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
binary=""
out="$root/dist"

die() { echo "package.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
command -v python3 >/dev/null || die "python3 is needed (it assembles the wheel)"
command -v npm >/dev/null || die "npm is needed (it packs the npm tarballs)"
command -v objcopy >/dev/null || die "objcopy (binutils) is needed (it strips the debug information)"
command -v strings >/dev/null || die "strings (binutils) is needed (it looks for build paths in the binary)"

# A key of Cargo.toml's [package] table (a one-line string; empty when absent).
cargo_field() {
  awk -v key="$1" '
    /^\[/ { in_package = ($0 == "[package]") }
    in_package && $0 ~ "^" key " *= *\"" {
      sub("^" key " *= *\"", ""); sub("\" *$", ""); print; exit
    }' Cargo.toml
}
name=$(cargo_field name)
version=$(cargo_field version)
summary=$(cargo_field description)
license=$(cargo_field license)
repository=$(cargo_field repository)
[ -n "$name" ] && [ -n "$version" ] && [ -n "$summary" ] && [ -n "$license" ] \
  || die "Cargo.toml's [package] must have name, version, description and license"

if [ -z "$binary" ]; then
  echo "==> cargo build --release --locked --bin aop" >&2
  cargo build --release --locked --bin aop
  binary="$root/target/release/aop"
fi
[ -x "$binary" ] || die "no executable at $binary"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")

# The platform the binary is for, in npm's words (process.platform, process.arch) and the wheel's.
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) npm_os=linux npm_cpu=x64 wheel_arch=x86_64 ;;
  Linux-aarch64) npm_os=linux npm_cpu=arm64 wheel_arch=aarch64 ;;
  *) die "packaging is set up for Linux x86-64 and arm64 only, not $(uname -s) $(uname -m)" ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.whl "$out"/*.tgz
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# What ships: the binary without its debug sections (the release profile keeps line tables: 71 MB
# of an 88 MB binary when this was written); symbol names stay, so a backtrace still names functions.
objcopy --strip-debug "$binary" "$stage/aop"
binary="$stage/aop"

# Nor any path of the machine that built it (the checkout, $HOME, $CARGO_HOME's crate sources):
# packaging/rustc-wrapper maps them out at compile time; a binary built around it is refused.
strings -n 6 "$binary" >"$stage/strings"
paths=("$root" "${HOME:-}" "${CARGO_HOME:-${HOME:-}/.cargo}" /.cargo/registry)
[ "$(pwd -P)" = "$root" ] || paths+=("$(pwd -P)")
leaks=""
for path in "${paths[@]}"; do
  case $path in /?*) ;; *) continue ;; esac  # unset, relative, or `/`: not a prefix to look for
  found=$(grep -cF -- "$path/" "$stage/strings" || true)
  [ "$found" -eq 0 ] || leaks="$leaks${leaks:+, }$found strings with $path/"
done
[ -z "$leaks" ] || die "the binary names paths of this machine ($leaks): it was not compiled \
through packaging/rustc-wrapper (a RUSTC_WRAPPER in the environment replaces the one \
.cargo/config.toml sets); build it again without one"

echo "==> wheel" >&2
python3 - "$binary" "$out" "$name" "$version" "$summary" "$license" "$repository" "$wheel_arch" <<'PY'
"""A binary-only wheel, the layout maturin's `bindings = "bin"` makes: the executable under
<name>-<version>.data/scripts/ (installers copy it into the environment's bin/, executable), and
the metadata in <name>-<version>.dist-info/. Reproducible: sorted entries, fixed timestamps."""
import base64, hashlib, re, sys, zipfile
from pathlib import Path

binary, out, name, version, summary, license, repository, arch = sys.argv[1:]
data = Path(binary).read_bytes()

# The platform tag says which glibc the binary needs: the newest GLIBC_x.y symbol version it
# references (PEP 600). pip refuses the wheel where that glibc is missing instead of installing
# a binary that cannot start.
if data[:4] != b"\x7fELF":
    sys.exit(f"package.sh: {binary} is not an ELF executable")
glibc = max((int(a), int(b)) for a, b in re.findall(rb"GLIBC_(\d+)\.(\d+)", data))
platform = f"manylinux_{glibc[0]}_{glibc[1]}_{arch}"

dist = re.sub(r"[-_.]+", "_", name).lower()
tag = f"py3-none-{platform}"
readme = Path("packaging/pypi/README.md").read_text()
license_text = Path("LICENSE").read_text()

meta = [
    "Metadata-Version: 2.4",
    f"Name: {name}",
    f"Version: {version}",
    f"Summary: {summary}",
    "Keywords: agents,observability,llm,tracing,opentelemetry,collector",
    f"License-Expression: {license}",
    "License-File: LICENSE",
]
if repository:
    meta += [f"Project-URL: Repository, {repository}", f"Project-URL: Issues, {repository}/issues"]
meta += [f"Classifier: {c}" for c in [
    "Development Status :: 4 - Beta",
    "Environment :: Console",
    "Environment :: Web Environment",
    "Intended Audience :: Developers",
    "Operating System :: POSIX :: Linux",
    "Programming Language :: Rust",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Topic :: Software Development :: Debuggers",
    "Topic :: System :: Logging",
    "Topic :: System :: Monitoring",
]]
meta += ["Description-Content-Type: text/markdown", "", readme]
wheel = ["Wheel-Version: 1.0", "Generator: aop scripts/package.sh", "Root-Is-Purelib: false", f"Tag: {tag}", ""]

info = f"{dist}-{version}.dist-info"
files = [
    (f"{dist}-{version}.data/scripts/aop", data, 0o755),
    (f"{info}/METADATA", "\n".join(meta).encode(), 0o644),
    (f"{info}/WHEEL", "\n".join(wheel).encode(), 0o644),
    (f"{info}/licenses/LICENSE", license_text.encode(), 0o644),
]
record = []
for path, body, _ in files:
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(body)}")
record.append(f"{info}/RECORD,,")
files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode(), 0o644))

target = Path(out) / f"{dist}-{version}-{tag}.whl"
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for path, body, mode in files:
        entry = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = (0o100000 | mode) << 16
        entry.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(entry, body)
print(target)
PY

echo "==> npm packages" >&2
platform_pkg="$name-$npm_os-$npm_cpu"
python3 - "$stage/npm" "$name" "$version" "$summary" "$license" "$repository" "$npm_os" "$npm_cpu" <<'PY'
"""package.json of the launcher package and of this platform's package. The launcher lists every
platform package as an optional dependency at exactly this version; npm installs the one whose
os/cpu/libc match and skips the others."""
import json, sys
from pathlib import Path

stage, name, version, summary, license, repository, os_, cpu = sys.argv[1:]
platforms = [("linux", "x64"), ("linux", "arm64"), ("darwin", "arm64"), ("darwin", "x64"), ("win32", "x64")]
assert (os_, cpu) in platforms
common = {"version": version, "license": license, "engines": {"node": ">=16"}}
if repository:
    common["repository"] = {"type": "git", "url": f"git+{repository}.git"}
    common["bugs"] = f"{repository}/issues"
keywords = ["agents", "observability", "llm", "tracing", "opentelemetry", "collector", "aop"]

def write(dir_, manifest):
    Path(stage, dir_).mkdir(parents=True, exist_ok=True)
    Path(stage, dir_, "package.json").write_text(json.dumps(manifest, indent=2) + "\n")

write(name, {
    "name": name, **common, "description": summary, "keywords": keywords,
    "bin": {"aop": "bin/aop.js"}, "files": ["bin/aop.js"],
    "optionalDependencies": {f"{name}-{o}-{c}": version for o, c in platforms},
})
platform = f"{name}-{os_}-{cpu}"
manifest = {
    "name": platform, **common,
    "description": f"The aop binary for {os_}-{cpu}, run by the {name} package.",
    "os": [os_], "cpu": [cpu], "files": ["bin/aop"], "preferUnplugged": True,
}
if os_ == "linux":
    manifest["libc"] = ["glibc"]  # the binary links glibc: not for Alpine (musl)
write(platform, manifest)
Path(stage, platform, "README.md").write_text(
    f"# {platform}\n\nThe `aop` binary for {os_}-{cpu}. Install [`{name}`](https://www.npmjs.com/package/{name}) "
    f"instead: its `aop` command runs this binary (`npx {name} start`).\n")
PY
mkdir -p "$stage/npm/$name/bin" "$stage/npm/$platform_pkg/bin"
cp packaging/npm/aop.js "$stage/npm/$name/bin/aop.js"
chmod 755 "$stage/npm/$name/bin/aop.js"
cp packaging/npm/README.md "$stage/npm/$name/README.md"
cp "$binary" "$stage/npm/$platform_pkg/bin/aop"
chmod 755 "$stage/npm/$platform_pkg/bin/aop"
for dir in "$name" "$platform_pkg"; do
  cp LICENSE "$stage/npm/$dir/LICENSE"
  (cd "$stage/npm/$dir" && npm pack --silent --ignore-scripts --pack-destination "$out" >/dev/null)
done

echo "==> $out" >&2
ls -l "$out"
