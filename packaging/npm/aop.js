#!/usr/bin/env node
// The `aop` command of the aop-collector npm package: finds the aop binary in the package for this
// platform (an optional dependency, installed by npm only where its `os`/`cpu`/`libc` match) and
// runs it with this process's arguments, passing signals and the exit status through.
"use strict";

const { spawn } = require("child_process");
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

const platform = `${process.platform}-${process.arch}`;
const pkg = PACKAGES[platform];
if (!pkg) {
  fail(
    `there is no prebuilt aop binary for this platform (${platform}); prebuilt: ` +
      `${Object.keys(PACKAGES).join(", ")}. Build it from source with Rust instead: ` +
      "`cargo install --locked --path .` in a checkout of the repository.",
  );
}

let binary;
try {
  const dir = path.dirname(require.resolve(`${pkg}/package.json`));
  binary = path.join(dir, "bin", process.platform === "win32" ? "aop.exe" : "aop");
} catch (e) {
  fail(
    `the aop binary for this platform (${platform}) comes in the package ${pkg}, which is not ` +
      "installed. npm installs it with aop-collector unless optional dependencies are left out " +
      `(--omit=optional, --no-optional): install again without that, or add ${pkg} yourself.`,
  );
}

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
