#!/usr/bin/env node
// The `aop` command of the aop-collector npm package: finds the aop binary in the package for this
// platform (an optional dependency, installed by npm only where its `os`/`cpu`/`libc` match) and
// runs it with this process's arguments, passing signals and the exit status through.
"use strict";

const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");

// Platform (process.platform + "-" + process.arch) -> the package holding its binary. Keep in
// step with optionalDependencies in package.json (scripts/package.sh writes both).
const PACKAGES = {
  "linux-x64": "aop-collector-linux-x64",
  "linux-arm64": "aop-collector-linux-arm64",
  "darwin-arm64": "aop-collector-darwin-arm64",
  "darwin-x64": "aop-collector-darwin-x64",
  "win32-x64": "aop-collector-win32-x64",
};

function fail(message) {
  process.stderr.write(`aop-collector: ${message}\n`);
  process.exit(1);
}

// A package's manifest: undefined where there is none, null where it cannot be read as JSON.
function manifest(dir) {
  let text;
  try {
    text = fs.readFileSync(path.join(dir, "package.json"), "utf8");
  } catch (e) {
    if (e.code === "ENOENT" || e.code === "ENOTDIR") return undefined;
    return null;
  }
  try {
    const parsed = JSON.parse(text);
    return parsed !== null && typeof parsed === "object" ? parsed : null;
  } catch {
    return null;
  }
}

const platform = `${process.platform}-${process.arch}`;
const pkg = PACKAGES[platform];
if (!pkg) {
  fail(
    `there is no prebuilt aop binary for this platform (${platform}); prebuilt: ` +
      `${Object.keys(PACKAGES).join(", ")}. Build it from source with Rust instead: ` +
      "`cargo install --locked --path .` in a checkout of the repository.",
  );
}

// This copy of aop-collector, symlinks resolved: pnpm links it from its store, and Node.js may have
// been told to keep the link it was started through (--preserve-symlinks-main).
const self = fs.realpathSync(path.join(__dirname, ".."));
const version = manifest(self)?.version;
if (typeof version !== "string") fail(`cannot read the version of aop-collector in ${self}`);

// The platform package is looked for only where a package manager installs the dependencies of this
// copy: nested in its own node_modules (npm's global installs, or npm when another version holds
// the top), then beside it in the node_modules that holds it (npm, npx, Yarn and Bun hoist it there;
// pnpm links it there, inside its store). Not through require.resolve, which would go on to every
// parent folder's node_modules and to NODE_PATH and run whatever aop it found there.
const places = [path.join(self, "node_modules", pkg)];
const holder = path.dirname(self);
if (path.basename(holder) === "node_modules") places.push(path.join(holder, pkg));
const found = places
  .map((dir) => ({ dir, manifest: manifest(dir) }))
  .filter((p) => p.manifest !== undefined);
const match = found.find((p) => p.manifest?.name === pkg && p.manifest?.version === version);

if (found.length === 0) {
  fail(
    `the aop binary for this platform (${platform}) comes in the package ${pkg}, which is not ` +
      `installed with aop-collector (looked in ${places.join(" and ")}). npm installs it unless ` +
      "optional dependencies are left out (--omit=optional, --no-optional): install again without " +
      `that, or add ${pkg}@${version} yourself.`,
  );
}
if (!match) {
  const seen = found.map((p) =>
    p.manifest === null
      ? `an unreadable package.json in ${p.dir}`
      : `${p.manifest.name ?? "a package"} ${p.manifest.version ?? "without a version"} in ${p.dir}`,
  );
  fail(
    `aop-collector ${version} runs the binary of ${pkg} ${version}, and found ${seen.join(", and ")}. ` +
      `Install them again at one version: \`npm install aop-collector@${version}\` installs the ` +
      `matching ${pkg} with it (or \`npm install ${pkg}@${version}\` if you added it yourself).`,
  );
}
const binary = path.join(match.dir, "bin", process.platform === "win32" ? "aop.exe" : "aop");

const child = spawn(binary, process.argv.slice(2), { stdio: "inherit" });

// A signal sent to this process (a supervisor's SIGTERM) is the binary's to act on: forward it,
// and let the binary's exit decide ours. Ctrl-C reaches both already; aop ignores the repeat.
// (SIGUSR1 is left alone: Node.js keeps it for its debugger.)
const forwarded = ["SIGINT", "SIGTERM", "SIGHUP"];
if (process.platform !== "win32") forwarded.push("SIGQUIT", "SIGUSR2");
for (const signal of forwarded) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}

child.on("error", (e) => fail(`cannot run ${binary}: ${e.message}`));
child.on("exit", (code, signal) => {
  if (signal) {
    // Die of the same signal, so whoever started us sees what the binary did.
    for (const s of forwarded) process.removeAllListeners(s);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code);
});
