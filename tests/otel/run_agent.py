"""One run of a real coding-agent CLI (Claude Code or Codex), offline, with its telemetry sent to aop.

Must run inside a network namespace that has only loopback (`unshare -n python3 run_agent.py ...`,
as root): it refuses to run where any other interface exists, and brings loopback up itself.
Inside, it starts

    fake_models.py   the scripted model server (--scenario), recording every request it gets
    aop start        the binary under test (--aop), on a free port, with a fresh database

then runs the CLI headless in a throwaway home and working directory (a README.md and two more
files), its model pointed at the fake server and its OpenTelemetry exporters at aop — with the
telemetry settings of the project's README (its `<!-- settings: … -->` blocks), as a user sets
them — and with the settings that turn off updates and every other outgoing request. When the CLI has exited it waits
until aop's count of received records and spans stops growing (the exporters' final flush),
reads back through aop's HTTP API everything it stored, stops aop with SIGTERM, and prints one
JSON object on stdout:

    cli, version, scenario, protocol, traces      what was run
    exit_code, stdout, stderr, seconds            the CLI's (stdout parsed: Claude Code's
                                                  --output-format json object, Codex's --json lines)
    model_requests                                every request the fake model server got, in order
    seeded, mcp                                   aop's answer to --seed, what --mcp did (null without)
    aop: addr, sessions, events {id: [...]},      what aop holds (sessions and alerts as listed,
         alerts, metrics {series: value},         each session's events in order), its /metrics,
         flush_seconds, exit_code, stderr         how long the final flush took, its exit after SIGTERM

Placeholders in --settings files, --claude-arg values and --env values are replaced before the
run: @AOP_URL@ (http://127.0.0.1:PORT), @AOP_PORT@, @MODEL_URL@ and @WORK@ (the run's folder).

--keep-store PATH copies aop's SQLite database to PATH once aop has stopped (and checkpointed it),
so that another `aop start --db PATH` can serve what the run stored (the dashboard's tests do).

--seed FILE posts the aop events of an NDJSON file to aop's /events before the CLI starts (runs for
it to ask about; aop's answer is `seeded` in the output). --mcp http|stdio makes aop an MCP server
of the CLI with the README's `<!-- mcp: … -->` block for it: Claude Code's `claude mcp add` line,
run for real in the throwaway home (its output is `mcp` in the output), or its `.mcp.json`, put in
the project; Codex's `[mcp_servers.aop]` table, added to its config.toml. aop then listens on the
README's address (its default port, free in the namespace), so the blocks work as written, a
folder holding `aop` (the binary under test) leads the CLI's PATH, and Claude Code also gets the
tools the README's `claude -p` line allows.

It exits non-zero, saying why on stderr, when it cannot run (not isolated, a process that does not
start) or when the CLI does not finish within --timeout; the CLI's own failure is not one: its
exit code is in the output.
"""

import argparse
import ctypes
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

PROMPTS = {
    "basic": "List the files, read README.md, then try a command that fails.",
    "loop": "Run `ls -1` five times.",
    "subagent": "Have a general-purpose subagent list the files.",
    "mcp": "Ask aop why the last research-agent run failed and how it differs from a good run.",
}

CLAUDE_PROTOCOLS = ("grpc", "http/protobuf", "http/json")
CODEX_PROTOCOLS = ("json", "binary")

# What aop's /metrics counts of what the exporters sent: stable once the last export is stored.
RECEIVED = (
    "aop_otlp_log_records_accepted_total",
    "aop_otlp_log_records_rejected_total",
    "aop_otlp_spans_accepted_total",
    "aop_otlp_spans_rejected_total",
)


class Failure(Exception):
    """Why the run could not be made; printed on stderr, the driver exits 2."""


# --------------------------------------------------------------------------- isolation


def interfaces() -> list:
    """The network interfaces of this process's namespace (/proc/net/dev follows the namespace)."""
    with open("/proc/net/dev", encoding="ascii") as f:
        return [line.split(":")[0].strip() for line in f.readlines()[2:]]


def loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, struct.pack("16sH", b"lo", 0)))[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


def isolate() -> None:
    others = [name for name in interfaces() if name != "lo"]
    if others:
        raise Failure(
            f"this network namespace has interfaces besides loopback ({', '.join(others)}): "
            "run the driver under `unshare -n` so that nothing can leave the machine"
        )
    loopback_up()


_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it if the driver dies, so no collector outlives a killed run."""
    pr_set_pdeathsig = 1
    _libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


# --------------------------------------------------------------------------- processes


def wait_for(what: str, check, proc: subprocess.Popen, log: str, seconds: float = 20.0):
    """Polls `check` until it returns something; fails naming `what` if `proc` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            raise Failure(f"{what}: the process exited with {proc.returncode}\n{tail(log)}")
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {seconds:.0f} s\n{tail(log)}")
        time.sleep(0.05)


def tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return text[-limit:]


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def start_models(work: str, scenario: str) -> tuple:
    port_file = os.path.join(work, "model.port")
    log = os.path.join(work, "model.log")
    cmd = [
        sys.executable,
        os.path.join(HERE, "fake_models.py"),
        "--port",
        "0",
        "--port-file",
        port_file,
        "--scenario",
        scenario,
        "--record",
        os.path.join(work, "model.jsonl"),
        "--workdir",
        os.path.join(work, "project"),
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, preexec_fn=die_with_parent
        )
    port = wait_for("the fake model server", lambda: read_text(port_file).strip(), proc, log)
    return proc, int(port)


def start_aop(binary: str, work: str, extra: list, port: int = 0) -> tuple:
    """The collector, exec'd directly (not through a shell), so SIGTERM reaches aop itself."""
    home = os.path.join(work, "aop-home")
    os.makedirs(home, exist_ok=True)
    log = os.path.join(work, "aop.stderr")
    cmd = [binary, "start", "--port", str(port), "--db", os.path.join(work, "aop", "events.db"), "--no-open", *extra]
    os.makedirs(os.path.join(work, "aop"), exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": home}
    with open(log, "wb") as err, open(os.path.join(work, "aop.stdout"), "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, preexec_fn=die_with_parent
        )

    def listening():
        match = re.search(r"listening addr=([0-9.]+:[0-9]+)", read_text(log))
        return match.group(1) if match else None

    addr = wait_for(f"aop ({binary}) to start listening", listening, proc, log)
    return proc, addr


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, seconds: float = 15.0):
    """Sends `sig` and waits; SIGKILL after `seconds`. The exit code, or None if it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


# --------------------------------------------------------------------------- aop's API


def get(base: str, path: str):
    with urllib.request.urlopen(f"{base}{path}", timeout=30) as resp:
        body = resp.read()
    return body.decode()


def get_json(base: str, path: str):
    return json.loads(get(base, path))


def metrics(base: str) -> dict:
    series = {}
    for line in get(base, "/metrics").splitlines():
        if line and not line.startswith("#") and " " in line:
            name, value = line.rsplit(" ", 1)
            try:
                series[name] = float(value)
            except ValueError:
                pass
    return series


def received(base: str) -> float:
    m = metrics(base)
    return sum(m.get(name, 0.0) for name in RECEIVED)


def settle(base: str, quiet: float = 1.0, cap: float = 30.0) -> float:
    """Waits until aop's count of received records and spans has not grown for `quiet` seconds
    (at most `cap`); returns how long that took."""
    started = time.monotonic()
    last, since = received(base), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - started < cap:
        time.sleep(0.1)
        now = received(base)
        if now != last:
            last, since = now, time.monotonic()
    return time.monotonic() - started


def read_back(base: str) -> dict:
    sessions, cursor = [], None
    while True:
        page = get_json(base, "/sessions?limit=1000" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""))
        sessions.extend(page["sessions"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    events = {}
    for row in sessions:
        sid, after, got = row["id"], None, []
        while True:
            query = "limit=10000" + (f"&after={after}" if after is not None else "")
            detail = get_json(base, f"/sessions/{urllib.parse.quote(sid, safe='')}?{query}")
            got.extend(detail["events"])
            after = detail.get("next_after")
            if after is None:
                break
        events[sid] = got
    alerts = get_json(base, "/alerts?limit=1000")
    return {"sessions": sessions, "events": events, "alerts": alerts.get("alerts", alerts), "metrics": metrics(base)}


def seed(base: str, path: str) -> dict:
    """Posts the events of an NDJSON file to aop's /events before the CLI runs (runs for it to ask
    about), and waits until every session they name is listed; returns aop's answer."""
    with open(path, "rb") as f:
        body = f.read()
    sessions = {json.loads(line)["session_id"] for line in body.splitlines() if line.strip()}
    request = urllib.request.Request(
        f"{base}/events", data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise Failure(f"--seed {path}: aop answered {e.code}: {e.read()[:2000]!r}") from e
    deadline = time.monotonic() + 20
    while not sessions <= {row["id"] for row in get_json(base, "/sessions?limit=1000")["sessions"]}:
        if time.monotonic() > deadline:
            raise Failure(f"--seed {path}: aop does not list the sessions {sorted(sessions)}: {answer}")
        time.sleep(0.05)
    return answer


# --------------------------------------------------------------------------- the CLIs


def project(work: str) -> str:
    """The agent's working directory: a small project for it to list and read."""
    path = os.path.join(work, "project")
    os.makedirs(path, exist_ok=True)
    files = {
        "README.md": "# Demo project\n\nA tiny project for an agent to look at. It prints a greeting.\n",
        "main.py": 'print("hello from the demo project")\n',
        "notes.txt": "Nothing to see here.\n",
    }
    for name, text in files.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            f.write(text)
    return path


def substitute(text: str, values: dict) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
README_ADDRESS = "http://127.0.0.1:4317"


def readme_settings(name: str) -> str:
    """The fenced block after `<!-- settings: NAME -->` in the README: the telemetry settings a
    user is told to set, which the CLIs run with exactly (aop's address and the protocol under
    test put in)."""
    return readme_block("settings", name)


def readme_mcp(name: str) -> str:
    """The fenced block after `<!-- mcp: NAME -->` in the README: how a user makes aop an MCP
    server of the CLI, which the CLI is configured with exactly."""
    return readme_block("mcp", name)


def readme_block(kind: str, name: str) -> str:
    """The fenced block after `<!-- KIND: NAME -->` in the README."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"<!-- " + re.escape(kind) + ": " + re.escape(name) + r" -->\n```\w*\n(.*?)```", text, re.S)
    if not found:
        raise SystemExit(f"README.md has no {kind} block {name!r}")
    return found.group(1)


def readme_env(name: str, aop_port: int, protocol: str) -> dict:
    env = {}
    for line in readme_settings(name).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        if key == "OTEL_EXPORTER_OTLP_PROTOCOL":
            value = protocol
        env[key] = value.replace(README_ADDRESS, f"http://127.0.0.1:{aop_port}")
    return env


def aop_on_path(args, work: str) -> str:
    """A folder holding `aop`, the binary under test, for a PATH: an MCP client's `"command": "aop"`
    runs it."""
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir, exist_ok=True)
    link = os.path.join(bindir, "aop")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(args.aop), link)
    return bindir


def claude_mcp(args, env: dict, cwd: str, base: str) -> dict:
    """aop made an MCP server of Claude Code as the README says: over HTTP by running its
    `claude mcp add` line (in the project, with the CLI's environment: the server is kept in the
    throwaway home's ~/.claude.json), over stdio by its `.mcp.json` block put in the project.
    Returns what was done, for the output."""
    if args.mcp == "http":
        words = shlex.split(readme_mcp("claude-code-add").strip())
        if words[:3] != ["claude", "mcp", "add"]:
            raise Failure(f"the README's claude-code-add block is not a `claude mcp add` line: {words}")
        cmd = [args.claude, *(w.replace(README_ADDRESS, base) for w in words[1:])]
        out = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        get = [args.claude, "mcp", "get", "aop"]
        listed = subprocess.run(get, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        said = {
            "command": cmd,
            "exit_code": out.returncode,
            "stdout": out.stdout.decode(errors="replace"),
            "stderr": out.stderr.decode(errors="replace"),
            "get": listed.stdout.decode(errors="replace") + listed.stderr.decode(errors="replace"),
        }
        if out.returncode != 0:
            raise Failure(f"{' '.join(cmd)} exited with {out.returncode}: {said}")
        return said
    text = readme_mcp("claude-code-json")
    with open(os.path.join(cwd, ".mcp.json"), "w", encoding="utf-8") as f:
        f.write(text)
    return {"file": os.path.join(cwd, ".mcp.json"), "text": text}


def readme_allowed_tools() -> list:
    """The tools the README's `claude -p` line allows (`--allowedTools`): aop's, which headless
    Claude Code refuses to call otherwise."""
    words = shlex.split(readme_mcp("claude-code-headless").strip())
    allowed = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--allowedTools", "--allowed-tools")]
    tools = [t for value in allowed for t in re.split(r"[,\s]+", value) if t]
    if not tools:
        raise Failure(f"the README's claude-code-headless line allows no tools: {words}")
    return tools


def claude_command(args, work: str, aop_port: int, model_port: int, values: dict) -> tuple:
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    bindir = os.path.dirname(os.path.abspath(args.claude))
    if args.mcp:
        bindir = f"{aop_on_path(args, work)}:{bindir}"
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": home,
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{model_port}",
        "ANTHROPIC_API_KEY": "sk-ant-fake-key",
        # Nothing but the model and the telemetry: no updates, no error reports, no other traffic.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # Faster flushes than the defaults (5 s for logs), so that a run takes a second.
        "OTEL_LOGS_EXPORT_INTERVAL": "500",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_TRACES_EXPORT_INTERVAL": "500",
    }
    # The telemetry settings are the README's, as a user sets them.
    env.update(readme_env("claude-code", aop_port, args.protocol))
    if args.traces:
        # Claude Code sends spans only with the beta flag as well as the exporter.
        env.update(readme_env("claude-code-traces", aop_port, args.protocol))
    cmd = [
        args.claude,
        "-p",
        args.prompt or PROMPTS[args.scenario],
        "--output-format",
        "json",
        "--model",
        "claude-sonnet-4-5",
        "--allowedTools",
        ",".join(["Bash", "Read", *(readme_allowed_tools() if args.mcp else [])]),
    ]
    if args.settings:
        settings = os.path.join(work, "settings.json")
        with open(args.settings, encoding="utf-8") as f:
            text = substitute(f.read(), values)
        with open(settings, "w", encoding="utf-8") as f:
            f.write(text)
        cmd += ["--settings", settings]
    cmd += [substitute(a, values) for a in args.claude_arg]
    return cmd, env


def codex_config(protocol: str, traces: bool, aop_port: int, model_port: int, mcp: bool = False) -> str:
    def readme(name: str) -> list:
        text = readme_settings(name).replace(README_ADDRESS, f"http://127.0.0.1:{aop_port}")
        return [line.replace('protocol = "binary"', f'protocol = "{protocol}"') for line in text.splitlines()]

    lines = [
        'model = "fake-model"',
        'model_provider = "fake"',
        'approval_policy = "never"',
        'sandbox_mode = "danger-full-access"',
        "check_for_update_on_startup = false",
        "",
        "[model_providers.fake]",
        'name = "fake"',
        f'base_url = "http://127.0.0.1:{model_port}/v1"',
        'wire_api = "responses"',
        'env_key = "FAKE_API_KEY"',
        "request_max_retries = 0",
        "stream_max_retries = 0",
        "",
    ]
    # The telemetry settings are the README's `[otel]` table, as a user sets it.
    lines += readme("codex")
    if traces:
        lines += readme("codex-traces")
    if mcp:
        # aop as an MCP server, as the README's `[mcp_servers.aop]` table says.
        lines += ["", *readme_mcp("codex").splitlines()]
    # Without these, Codex looks up github.com, api.github.com and chatgpt.com.
    lines += [
        "",
        "[features]",
        "plugins = false",
        "remote_plugin = false",
        "apps = false",
        "in_app_updates = false",
        "plugin_sharing = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
    ]
    return "\n".join(lines)


def codex_command(args, work: str, aop_port: int, model_port: int) -> tuple:
    home = os.path.join(work, "home")
    codex_home = os.path.join(work, "codex-home")
    os.makedirs(home, exist_ok=True)
    os.makedirs(codex_home, exist_ok=True)
    with open(os.path.join(codex_home, "config.toml"), "w", encoding="utf-8") as f:
        f.write(codex_config(args.protocol, args.traces, aop_port, model_port, bool(args.mcp)))
    env = {
        "PATH": f"{aop_on_path(args, work)}:/usr/bin:/bin" if args.mcp else "/usr/bin:/bin",
        "HOME": home,
        "CODEX_HOME": codex_home,
        "FAKE_API_KEY": "sk-fake-key",
        "TERM": "dumb",
    }
    cmd = [args.codex, "exec", "--skip-git-repo-check", "--json", args.prompt or PROMPTS[args.scenario]]
    return cmd, env


def version(binary: str, env: dict) -> str:
    try:
        out = subprocess.run([binary, "--version"], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failure(f"{binary} --version: {e}") from e
    if out.returncode != 0:
        raise Failure(f"{binary} --version exited with {out.returncode}: {out.stderr.decode(errors='replace')}")
    return out.stdout.decode(errors="replace").strip()


def run_cli(cmd: list, env: dict, cwd: str, work: str, timeout: float) -> tuple:
    """Runs the CLI in its own process group (its shells and tools too), stdin closed (`codex exec`
    otherwise waits reading it). Fails if it does not end within `timeout`."""
    out_path, err_path = os.path.join(work, "cli.stdout"), os.path.join(work, "cli.stderr")
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise Failure(
                f"{os.path.basename(cmd[0])} did not finish within {timeout:g} s\n"
                f"--- its stdout ---\n{tail(out_path)}\n--- its stderr ---\n{tail(err_path)}"
            ) from None
    seconds = time.monotonic() - started
    # Anything it left running in its group goes with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return code, read_text(out_path), read_text(err_path), seconds


def parse_stdout(cli: str, text: str):
    if cli == "claude":
        try:
            return json.loads(text)
        except ValueError:
            return text
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append(line)
    return lines


def keep_store(db: str, to: str) -> None:
    """Copies the stopped collector's database (and its WAL, should one be left) to `to`."""
    to = os.path.abspath(to)
    os.makedirs(os.path.dirname(to), exist_ok=True)
    for suffix in ("", "-wal"):
        target = to + suffix
        if os.path.exists(target):
            os.remove(target)
        if os.path.exists(db + suffix):
            shutil.copyfile(db + suffix, target)
            os.chmod(target, 0o600)
    if not os.path.exists(to):
        raise Failure(f"--keep-store: aop left no database at {db}")


def recorded(work: str) -> list:
    return [json.loads(line) for line in read_text(os.path.join(work, "model.jsonl")).splitlines() if line.strip()]


# --------------------------------------------------------------------------- main


def run(args, work: str) -> dict:
    isolate()
    cwd = project(work)
    models, model_port = start_models(work, args.scenario)
    aop = None
    try:
        # A CLI asking aop over MCP finds it where the README's configuration says (aop's default
        # address), which the namespace has free.
        port = urllib.parse.urlsplit(README_ADDRESS).port if args.mcp else 0
        aop, addr = start_aop(args.aop, work, args.aop_arg, port)
        base = f"http://{addr}"
        aop_port = int(addr.rsplit(":", 1)[1])
        values = {
            "@AOP_URL@": base,
            "@AOP_PORT@": str(aop_port),
            "@MODEL_URL@": f"http://127.0.0.1:{model_port}",
            "@WORK@": work,
        }
        if args.cli == "claude":
            cmd, env = claude_command(args, work, aop_port, model_port, values)
        else:
            cmd, env = codex_command(args, work, aop_port, model_port)
        for pair in args.env:
            key, _, value = pair.partition("=")
            env[key] = substitute(value, values)
        seeded = seed(base, args.seed) if args.seed else None
        mcp = claude_mcp(args, env, cwd, base) if args.mcp and args.cli == "claude" else None
        cli_version = version(cmd[0], env)
        code, stdout, stderr, seconds = run_cli(cmd, env, cwd, work, args.timeout)
        at_exit = received(base)
        flush = settle(base)
        stored = read_back(base)
        stored.update({"addr": addr, "flush_seconds": round(flush, 3), "received_at_cli_exit": at_exit})
    finally:
        aop_exit = stop(aop) if aop else None
        stop(models, signal.SIGKILL)
    if args.keep_store:
        keep_store(os.path.join(work, "aop", "events.db"), args.keep_store)
    stored["exit_code"] = aop_exit
    stored["stderr"] = tail(os.path.join(work, "aop.stderr"))
    return {
        "cli": args.cli,
        "version": cli_version,
        "scenario": args.scenario,
        "protocol": args.protocol,
        "traces": args.traces,
        "command": cmd,
        "exit_code": code,
        "seconds": round(seconds, 3),
        "stdout": parse_stdout(args.cli, stdout),
        "stderr": stderr[-20000:],
        "model_requests": recorded(work),
        "seeded": seeded,
        "mcp": mcp,
        "aop": stored,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cli", choices=("claude", "codex"), required=True)
    parser.add_argument("--scenario", choices=sorted(PROMPTS), default="basic")
    parser.add_argument(
        "--protocol",
        help=f"Claude Code: {', '.join(CLAUDE_PROTOCOLS)} (default http/protobuf); "
        f"Codex: {', '.join(CODEX_PROTOCOLS)} (default json)",
    )
    parser.add_argument("--traces", action=argparse.BooleanOptionalAction, default=False, help="export spans too")
    parser.add_argument("--aop", required=True, help="the aop binary under test")
    parser.add_argument("--claude", help="the claude executable")
    parser.add_argument("--codex", help="the codex executable (the native one)")
    parser.add_argument("--settings", help="Claude Code: a settings file for --settings (placeholders replaced)")
    parser.add_argument("--claude-arg", action="append", default=[], help="Claude Code: one more argument")
    parser.add_argument("--aop-arg", action="append", default=[], help="one more argument for `aop start`")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="one more variable for the CLI")
    parser.add_argument("--prompt", help="instead of the scenario's own prompt")
    parser.add_argument("--seed", metavar="FILE", help="NDJSON events to post to aop's /events before the CLI runs")
    parser.add_argument(
        "--mcp",
        choices=("http", "stdio"),
        help="make aop an MCP server of the CLI with the README's block: Claude Code over HTTP (its "
        "`claude mcp add` line) or stdio (its .mcp.json); Codex over stdio (its [mcp_servers.aop]); "
        "aop then listens on the README's address and `aop` is on the CLI's PATH",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the CLI may take")
    parser.add_argument("--work", help="the run's folder (kept); default: a temporary one, removed after")
    parser.add_argument(
        "--keep-store",
        metavar="PATH",
        help="copy aop's SQLite database to PATH after aop has stopped (for `aop start --db PATH`)",
    )
    args = parser.parse_args()

    protocols = CLAUDE_PROTOCOLS if args.cli == "claude" else CODEX_PROTOCOLS
    args.protocol = args.protocol or protocols[1 if args.cli == "claude" else 0]
    if args.protocol not in protocols:
        parser.error(f"--protocol for {args.cli}: one of {', '.join(protocols)}")
    program = args.claude if args.cli == "claude" else args.codex
    if not program:
        parser.error(f"--{args.cli} is required")
    if args.settings and args.cli != "claude":
        parser.error("--settings is for Claude Code")
    if args.mcp == "http" and args.cli != "claude":
        parser.error("--mcp http is for Claude Code (Codex's block is a stdio server)")

    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="aop-agent-")
    os.makedirs(work, exist_ok=True)
    try:
        result = run(args, work)
    except Failure as e:
        print(f"run_agent: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
