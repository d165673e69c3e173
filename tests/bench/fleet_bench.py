#!/usr/bin/env python3
"""Fleet benchmark: edgeforge against Ansible and pyinfra on real sshd nodes.

Starts N OpenSSH sshd processes on 127.0.0.2 .. 127.0.0.(N+1) (one host key and
one config each), then runs the same 20-step workload (tests/bench/workload/)
with each tool against the first N nodes: "cold" with every node root wiped,
"warm" immediately after with nothing to change. For each run it measures the
wall time, the controller's CPU time (user+sys of the tool's whole process
tree, through the rusage of reaped children) and its memory (the peak of the
summed RSS of the tree, sampled at 20 Hz, and the largest single process).

Results go to stdout, to tests/bench/results/<name>.md with the machine's
description, and to <name>.svg (wall time against N, log scale). Raw numbers
are kept in <name>.json and merged across invocations, so tools and fleet
sizes can be measured separately and land in one table.

Every tool logs in to the nodes as a dedicated user (`--user`, default
edgebench, created with the stock /etc/skel dotfiles if missing), not as root:
root's dotfiles on a development machine may do expensive work on every SSH
session (pyenv init, say), and tools that open one session per task would be
measured paying for it. The node roots are owned by that user.

`--verify` runs each tool once cold and once warm, then checks that every
tool left byte-identical node roots (same paths, types, modes, contents) and
that the warm run modified nothing.

`--workload artifacts` runs a second workload on the same fleet, with the same
login user, measurement and reporting (tests/bench/workload-artifacts/): a
70 MB binary and a 200 MB tarball, generated once (seeded, incompressible) and
kept in the workdir, placed on every node by edgeforge (two `artifact` steps,
from an artifact cache filled by `edgeforge images import`), Ansible `copy`,
pyinfra `files.put`, and plain `scp` (one process per node, all at once: the
floor). Results: results/artifacts-<date>.*, and the generated block of the
artifact sections of README.md and tests/bench/README.md.

Run from the repository root, e.g.:
    python3 tests/bench/fleet_bench.py --tools ansible,pyinfra --nodes 20 --runs 1
    python3 tests/bench/fleet_bench.py --workload artifacts --nodes 10,20 --runs 3 --fresh
Needs: /usr/sbin/sshd (openssh-server), ssh-keygen, and for the peers
ansible-core and pyinfra (tests/setup-host.sh installs them into the test venv,
/opt/edgeforge-test/venv or $EDGEFORGE_TEST_VENV, where they are looked for
first); zstd for the artifacts workload. Stdlib only otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import platform
import pwd
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKLOAD = HERE / "workload"
ARTIFACT_WORKLOAD = HERE / "workload-artifacts"
RESULTS = HERE / "results"
ALL_TOOLS = ("edgeforge", "ansible", "pyinfra")
# The artifacts workload adds the floor: plain scp, one process per node.
ARTIFACT_TOOLS = ALL_TOOLS + ("scp",)
TOOL_ORDER = ARTIFACT_TOOLS
# cold / warm as for the fleet; `rehash` (artifacts only, edgeforge only) is a warm run with
# --force, which hashes every placed file on the node again, as the peers' warm runs do.
MODE_ORDER = ("cold", "warm", "rehash")
DEFAULT_USER = "edgebench"
STEPS_PER_NODE = 20
NODES_PER_SITE = 5
PAGE = os.sysconf("SC_PAGE_SIZE")
# Node names are DNS labels and addresses go up to 127.0.0.254.
MAX_NODES = 253
BLOB_SEEDS = {"blob-a.bin": 20261127, "blob-b.bin": 20261128}
BLOB_SIZE = 1 << 20
# Every node root must hold these after any tool's run (2 dirs, 8 templates,
# 2 uploads, 3 files made by commands; the line edits change two of them).
CONFS = ("app.conf", "db.conf", "cache.conf", "proxy.conf", "logging.conf",
         "metrics.yaml", "network.conf", "agent.env")
EXPECTED_PATHS = (
    ["etc/app", "var/lib/app"]
    + [f"etc/app/{c}" for c in CONFS]
    + ["var/lib/app/blob-a.bin", "var/lib/app/blob-b.bin", "etc/app/limits.env",
       "etc/app/environment", "var/lib/app/registry", "var/lib/app/SHA256SUMS"]
)
# The artifacts workload: generated once into <workdir>/artifacts/src/ (seeded, incompressible),
# placed in each node's root. name → (seed, size in bytes, mode); the tarball is a real tar of
# random members, so its size is what tar makes of ARTIFACT_TAR_MEMBERS.
ARTIFACT_BINARY = ("bench-agent", 20261201, 70_000_000, 0o755)
ARTIFACT_TARBALL = ("bench-images.tar", 20261202, 0o644)
ARTIFACT_TAR_MEMBERS = (("images/base-layer.bin", 80_000_000), ("images/app-layer.bin", 70_000_000),
                        ("images/config-layer.bin", 30_000_000), ("images/data-layer.bin", 19_985_000))
ARTIFACT_PATHS = ("bench-agent", "bench-images.tar")
# file → its name in edgeforge's artifact cache (the `name:` of workload-artifacts/edgeforge.yaml's steps).
ARTIFACT_NAMES = {"bench-agent": "bench-agent", "bench-images.tar": "bench-images"}
ARTIFACT_VERSION = "1.0.0"
# Bumped when the generator changes, so a cached copy in the workdir is made again.
ARTIFACT_GENERATOR = "artifacts-v1"


class BenchError(Exception):
    """A problem that stops the benchmark, with a message saying what to do."""


class Interrupted(BaseException):
    """SIGTERM received; unwinds like Ctrl-C so everything is torn down."""


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _raise_interrupted)
    become_subreaper()
    try:
        return run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; fleet and tool processes stopped", file=sys.stderr)
        return 130


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fleet benchmark: edgeforge, Ansible and pyinfra on N real sshd nodes.")
    p.add_argument("--workload", choices=("fleet", "artifacts"), default="fleet",
                   help="fleet: the 20-step configuration workload (default); artifacts: a 70 MB binary and "
                        "a 200 MB tarball placed on every node, with plain scp as the floor")
    p.add_argument("--nodes", default="20", help="fleet sizes, comma-separated (default 20)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool, N and mode (default 3)")
    p.add_argument("--tools", default=None,
                   help=f"tools to run, comma-separated (default {','.join(ALL_TOOLS)}; "
                        f"with --workload artifacts also scp)")
    p.add_argument("--modes", default=None,
                   help="cold, warm or both (default cold,warm); with --workload artifacts also rehash "
                        "(edgeforge's warm run with --force, hashing every file again; default cold,warm,rehash)")
    p.add_argument("--verify", action="store_true",
                   help="instead of measuring: run each tool once, check all left identical node roots")
    p.add_argument("--edgeforge", type=Path, default=None,
                   help="edgeforge binary (default target/release/edgeforge, else target/debug/edgeforge)")
    p.add_argument("--no-force", action="store_true",
                   help="run edgeforge without --force, so a warm run skips the steps its journal "
                        "records as applied (not comparable with the peers; use with --no-save); fleet "
                        "workload only: with --workload artifacts, only the rehash mode adds --force")
    p.add_argument("--port", type=int, default=22022, help="sshd port on every 127.0.0.x (default 22022)")
    p.add_argument("--user", default=DEFAULT_USER,
                   help=f"account every tool logs in to the nodes as; created with the stock /etc/skel "
                        f"dotfiles if missing (default {DEFAULT_USER}; `root` measures root's own dotfiles too)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/edgeforge-bench"),
                   help="scratch directory for keys, configs, node roots, logs (default /tmp/edgeforge-bench)")
    p.add_argument("--results-name", default=None,
                   help="base name of the results files in tests/bench/results/ (default fleet-<UTC date>, "
                        "or artifacts-<UTC date> with --workload artifacts)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new results file instead of merging into an existing one")
    p.add_argument("--no-save", action="store_true", help="print the table only; write no results files")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite the .md and .svg of --results-name from its .json")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a tool run is killed")
    p.add_argument("--note", default="",
                   help="a remark about this invocation (e.g. what else ran on the machine), shown in the results")
    p.add_argument("--nice", type=int, default=0,
                   help="run the fleet and the tools at this nice value (e.g. -10 on a machine busy with "
                        "other jobs, so they skew the numbers less); recorded in the results")
    args = p.parse_args()
    try:
        args.nodes = sorted({int(x) for x in args.nodes.split(",") if x.strip()})
    except ValueError:
        p.error(f"--nodes takes numbers separated by commas, got {args.nodes!r}")
    if not args.nodes or min(args.nodes) < 1 or max(args.nodes) > MAX_NODES:
        p.error(f"--nodes: each fleet size must be between 1 and {MAX_NODES}")
    artifacts = args.workload == "artifacts"
    known = ARTIFACT_TOOLS if artifacts else ALL_TOOLS
    if args.results_name is None:
        args.results_name = f"{args.workload}-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}"
    args.tools = [t.strip() for t in (args.tools or ",".join(known)).split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in known]
    if unknown or not args.tools:
        p.error(f"--tools: unknown {unknown}; choose from {', '.join(known)}")
    known_modes = MODE_ORDER if artifacts else ("cold", "warm")
    args.modes = [m.strip() for m in (args.modes or ",".join(known_modes)).split(",") if m.strip()]
    if not args.modes or any(m not in known_modes for m in args.modes):
        p.error(f"--modes takes {' and/or '.join(known_modes)}, comma-separated")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", args.user):
        p.error(f"--user: {args.user!r} is not a plain user name (lower case letters, digits, _ and -)")
    return args


def run(args: argparse.Namespace) -> int:
    if args.render:
        path = RESULTS / f"{args.results_name}.json"
        if not path.exists():
            raise BenchError(f"{path} does not exist; run a measurement first or pass --results-name")
        report = Report.load_or_new(path, fresh=False)
        report.save(RESULTS, args.results_name, readmes=True)
        print(report.markdown_table())
        print(f"\nwrote {RESULTS / args.results_name}.md and .svg from {path.name}")
        return 0
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    lock = open(work / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BenchError(f"another fleet_bench.py is running on {work}; wait for it or pass --workdir")

    if args.nice:
        # Inherited by the sshd fleet and by every tool process.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    user = ensure_login_user(args.user)
    tools = [make_tool(name, args) for name in args.tools]
    runnable = []
    for tool in tools:
        reason = tool.unavailable()
        if reason:
            print(f"skipping {tool.name}: {reason}", file=sys.stderr)
        else:
            runnable.append(tool)
    if not runnable:
        raise BenchError("none of the requested tools can run here (see the messages above)")

    if args.workload == "artifacts":
        workload = prepare_artifact_workload(work, runnable)
    else:
        workload = prepare_workload(work)
    machine = machine_info(runnable)
    machine["note"] = args.note
    machine["login_user"] = user.name
    report = Report.load_or_new(RESULTS / f"{args.results_name}.json", fresh=args.fresh or args.no_save,
                                workload=args.workload)
    if args.workload == "artifacts":
        report.data["artifact_bytes"] = {n: (workload / "files" / n).stat().st_size for n in ARTIFACT_PATHS}
    invocation = report.add_machine(machine)

    def record_done(block: list[Record]) -> None:
        # Saved after every run, so an interrupted invocation keeps what it measured.
        machine["load_after"] = os.getloadavg()
        report.merge(invocation, block)
        if not args.no_save:
            report.save(RESULTS, args.results_name, readmes=True)

    with Fleet(work / "fleet", max(args.nodes), args.port, user) as fleet:
        if args.verify:
            return verify(args, runnable, fleet, work, workload)
        records = measure_all(args, runnable, fleet, work, workload, record_done)
    print()
    print(report.markdown_table())
    if not args.no_save:
        print(f"\nwrote {RESULTS / args.results_name}.md, .svg and .json")
    return 1 if any(r.failures for r in records) else 0


# --------------------------------------------------------------------------
# Measuring


@dataclass
class RunResult:
    """One timed run of one tool."""
    wall_s: float
    cpu_s: float
    peak_tree_rss_mb: float
    peak_single_rss_mb: float
    rc: int
    missing_paths: int = 0
    warm_modified: int = 0
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.missing_paths == 0


@dataclass
class Record:
    """All runs of one tool at one fleet size and mode."""
    tool: str
    version: str
    nodes: int
    mode: str
    runs: list[RunResult] = field(default_factory=list)
    failures: int = 0


def measure_all(args, tools, fleet, work, workload, record_done) -> list[Record]:
    records: list[Record] = []
    for n in args.nodes:
        nodes = fleet.nodes[:n]
        for tool in tools:
            ctx = RunContext(tool.name, n, nodes, fleet, work, workload, args.workload)
            modes = [m for m in args.modes if tool.runs_mode(m, args.workload)]
            skipped = [m for m in args.modes if m not in modes]
            if skipped:
                print(f"{tool.name} N={n}: no {' or '.join(skipped)} runs ({tool.skip_reason})")
            if not modes:
                continue
            by_mode = {m: Record(tool.name, tool.version(), n, m) for m in modes}
            if "cold" not in modes:
                # Warm runs need applied state: one untimed cold run first.
                print(f"{tool.name} N={n}: untimed cold run to prepare the warm runs")
                setup = run_once(tool, ctx, "cold", 0, args.timeout)
                if not setup.ok:
                    raise BenchError(f"{tool.name} N={n}: the preparing cold run failed; see {setup.log}")
            for i in range(1, args.runs + 1):
                for mode in modes:
                    res = run_once(tool, ctx, mode, i, args.timeout)
                    by_mode[mode].runs.append(res)
                    if not res.ok:
                        by_mode[mode].failures += 1
                    print(f"{tool.name:9} N={n:<3} {mode} {i}/{args.runs}: {describe(res)}", flush=True)
                    record_done([r for r in by_mode.values() if r.runs])
            records.extend(by_mode.values())
            if args.workload == "artifacts":
                # N × 270 MB per tool: free the disk before the next tool fills its own roots.
                ctx.wipe()
    return records


def describe(res: RunResult) -> str:
    s = (f"{res.wall_s:8.2f} s wall, {res.cpu_s:8.2f} s CPU, "
         f"{res.peak_tree_rss_mb:7.1f} MB peak (tree), {res.peak_single_rss_mb:6.1f} MB largest process")
    if res.rc != 0:
        s += f"  FAILED rc={res.rc}, log {res.log}"
    if res.missing_paths:
        s += f"  INCOMPLETE: {res.missing_paths} expected paths missing, log {res.log}"
    if res.warm_modified:
        s += f"  NOT IDEMPOTENT: warm run modified {res.warm_modified} paths"
    return s


def run_once(tool, ctx: RunContext, mode: str, index: int, timeout: float) -> RunResult:
    if mode == "cold":
        ctx.wipe()
    ctx.own_roots()
    before = snapshot(ctx.roots, ctx.nodes) if mode != "cold" else None
    argv, env, cwd = tool.prepare(ctx, mode)
    log = ctx.dir / f"{mode}-{index}.log"
    res = measure(argv, env, cwd, log, timeout, exclude=set(ctx.fleet.pids()))
    res.missing_paths = count_missing(ctx.roots, ctx.nodes, ctx.expected)
    if before is not None:
        after = snapshot(ctx.roots, ctx.nodes)
        res.warm_modified = sum(1 for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if res.rc != 0 or res.missing_paths:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print(f"--- last lines of {log}:", *tail, "---", sep="\n", file=sys.stderr)
    return res


def measure(argv, env, cwd, log_path: Path, timeout: float, exclude: set[int]) -> RunResult:
    """Runs argv; returns wall, CPU and memory of its whole process tree.

    CPU is the rusage delta of reaped children: the tool, everything it
    waited for, and anything it orphaned (we are a child subreaper, so
    orphans such as ssh ControlPersist masters are reparented to us and are
    ended and reaped here, counted in this run).
    """
    sampler = TreeSampler(os.getpid(), exclude)
    with open(log_path, "wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        sampler.start()
        waited: dict = {}

        def waiter():
            _, status, ru = os.wait4(proc.pid, 0)
            waited.update(t=time.perf_counter(), status=status, ru=ru)

        wt = threading.Thread(target=waiter, daemon=True)
        wt.start()
        try:
            wt.join(timeout)
            if wt.is_alive():
                print(f"timeout after {timeout:.0f} s: killing {argv[0]}", file=sys.stderr)
                _killpg(proc.pid, signal.SIGKILL)
                sampler.kill_seen()
                wt.join()
        except BaseException:
            _killpg(proc.pid, signal.SIGKILL)
            wt.join(10)
            proc.returncode = -9
            sampler.stop()
            # Ansible's workers call setsid(), so the process group misses them.
            sampler.kill_seen()
            reap_orphans(exclude)
            raise
    wall = waited["t"] - t0
    proc.returncode = os.waitstatus_to_exitcode(waited["status"])
    ru = waited["ru"]
    single = ru.ru_maxrss
    # The tool and what it waited for, plus its orphans; not the node side: sshd
    # session processes whose parent ended are reparented to us too, and their CPU
    # is the nodes' work, not the controller's.
    cpu = ru.ru_utime + ru.ru_stime
    early_peak, early_cpu = reap_orphans(exclude, sampler.node_side)
    single, cpu = max(single, early_peak), cpu + early_cpu
    peak_tree = sampler.stop()
    sampler.kill_seen()
    late_peak, late_cpu = reap_orphans(exclude, sampler.node_side)
    single = max(single, late_peak)
    cpu += late_cpu
    single_mb = single / 1024
    return RunResult(
        wall_s=wall,
        cpu_s=cpu,
        # The sum can never be below the largest process; short runs may end
        # between two samples.
        peak_tree_rss_mb=max(peak_tree / 2**20, single_mb),
        peak_single_rss_mb=single_mb,
        rc=proc.returncode,
        log=str(log_path),
    )


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def reap_orphans(exclude: set[int], known_node_side: set[int] = frozenset()) -> tuple[int, float]:
    """Ends and reaps our children other than the fleet; returns their max ru_maxrss (KiB)
    and the CPU seconds of those that are the tool's (not reparented sshd-side processes)."""
    peak, cpu = 0, 0.0
    orphans = [p for p in children_of(os.getpid()) if p not in exclude]
    node_side = {p for p in orphans if p in known_node_side or _node_side(p)}
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    for pid in orphans:
        while True:
            try:
                done, _, ru = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                if pid not in node_side:
                    peak = max(peak, ru.ru_maxrss)
                    cpu += ru.ru_utime + ru.ru_stime
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
    return peak, cpu


def _node_side(pid: int) -> bool:
    """Whether a process was started by a node's sshd (its shells, sftp-server, their
    children): they carry SSH_CONNECTION, and end up reparented to us, the subreaper,
    when their sshd session ends first. Their work is the node's, not the controller's."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return environ.startswith(b"SSH_CONNECTION=") or b"\0SSH_CONNECTION=" in environ


def children_of(pid: int) -> list[int]:
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


class TreeSampler(threading.Thread):
    """Samples the summed RSS of our process tree (minus the fleet) at 20 Hz."""

    def __init__(self, root: int, exclude: set[int]):
        super().__init__(daemon=True)
        self.root, self.exclude = root, exclude
        self.peak = 0
        # Every process seen in the tree, pid → start time (so a reused pid is not hit).
        self.seen: dict[int, str] = {}
        self.node_side: set[int] = set()
        self._stop_event = threading.Event()

    def kill_seen(self) -> None:
        """SIGKILLs every process of the tree that is still alive, wherever it was reparented."""
        for pid, start in list(self.seen.items()):
            if _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop_event.wait(0.05)

    def sample(self) -> int:
        # Remember the fleet's descendants (node-side shells, sftp-server): they are
        # reparented to us when their sshd session ends first, and are not the tool's.
        node_stack = list(self.exclude)
        while node_stack:
            pid = node_stack.pop()
            for c in children_of(pid):
                self.node_side.add(c)
                node_stack.append(c)
        total, stack = 0, [self.root]
        while stack:
            pid = stack.pop()
            # Node-side processes reparented to us are not the tool's.
            stack.extend(c for c in children_of(pid)
                         if c not in self.exclude and c not in self.node_side)
            if pid != self.root:
                if pid not in self.seen:
                    self.seen[pid] = _start_time(pid)
                try:
                    with open(f"/proc/{pid}/statm") as f:
                        total += int(f.read().split()[1]) * PAGE
                except (OSError, IndexError, ValueError):
                    pass
        return total

    def stop(self) -> int:
        self._stop_event.set()
        if self.is_alive():
            self.join()
        return self.peak


def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (after the parenthesised command name), or "" if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def become_subreaper() -> None:
    """Orphans of the tools (ssh ControlPersist masters) get reparented to us."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: could not become a child subreaper; CPU of daemonized ssh "
              "masters may be missed", file=sys.stderr)


def _raise_interrupted(signum, frame):
    raise Interrupted()


# --------------------------------------------------------------------------
# Node state: wipe, snapshot, compare


def snapshot(roots: Path, nodes) -> dict:
    """path → (type, mode, size, mtime_ns, inode) of everything under the node roots."""
    snap = {}
    for node in nodes:
        top = roots / node.name
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st = p.lstat()
                snap[str(p.relative_to(roots))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return snap


def count_missing(roots: Path, nodes, expected=EXPECTED_PATHS) -> int:
    return sum(1 for node in nodes for rel in expected if not (roots / node.name / rel).exists())


def tree_digest(top: Path) -> dict:
    """rel path → (kind, mode bits, sha256 or link target) for one node root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(top))
            mode = oct(st.st_mode & 0o7777)
            if p.is_symlink():
                out[rel] = ("symlink", mode, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", mode, "")
            else:
                out[rel] = ("file", mode, sha256_file(p))
    return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces (artifacts are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(args, tools, fleet, work, workload) -> int:
    n = args.nodes[0]
    nodes = fleet.nodes[:n]
    digests, failed = {}, False
    for tool in tools:
        ctx = RunContext(tool.name, n, nodes, fleet, work, workload, args.workload)
        # The artifacts workload also checks that edgeforge's --force re-check (rehash) changes nothing.
        modes = [m for m in MODE_ORDER if m in ("cold", "warm") or args.workload == "artifacts"]
        for mode in modes:
            if not tool.runs_mode(mode, args.workload):
                print(f"{tool.name:9} N={n:<3} {mode}: not run ({tool.skip_reason})")
                continue
            res = run_once(tool, ctx, mode, 0, args.timeout)
            print(f"{tool.name:9} N={n:<3} {mode}: {describe(res)}", flush=True)
            failed |= not res.ok or res.warm_modified > 0
        digests[tool.name] = {node.name: tree_digest(ctx.roots / node.name) for node in nodes}
    names = list(digests)
    base = names[0]
    for other in names[1:]:
        diffs = []
        for node in nodes:
            a, b = digests[base][node.name], digests[other][node.name]
            for rel in sorted(a.keys() | b.keys()):
                if a.get(rel) != b.get(rel):
                    diffs.append(f"  {node.name}/{rel}: {base} {a.get(rel)} vs {other} {b.get(rel)}")
        if diffs:
            failed = True
            print(f"DIFFER: {base} and {other} left different node roots ({len(diffs)} differences):")
            print("\n".join(diffs[:30]))
            print(f"  inspect with: diff -r {work}/roots/{base}/{nodes[0].name} {work}/roots/{other}/{nodes[0].name}")
        else:
            print(f"same: {base} and {other} left identical node roots on all {n} nodes")
    per_node = len(digests[base][nodes[0].name])
    if len(names) < 2:
        print(f"only {base} ran: its node roots were checked for completeness and idempotency, "
              "but there was no other tool to compare them with")
    if not failed:
        print(f"verify ok: {len(names)} tools ({', '.join(names)}), {n} nodes, "
              f"{per_node} paths per node, identical contents and modes; warm runs changed nothing")
    return 1 if failed else 0


# --------------------------------------------------------------------------
# The fleet of sshd processes


@dataclass
class Node:
    """One benchmark node: an sshd on its own loopback address."""
    name: str
    address: str
    site: str
    role: str
    app_port: str


@dataclass
class LoginUser:
    """The account every tool logs in to the nodes as."""
    name: str
    uid: int
    gid: int

    def can(self, test: str, path: Path) -> bool:
        """Whether `test <test> <path>` succeeds as this user (sshd reads AuthorizedKeysFile as the user)."""
        if self.uid == os.geteuid():
            return subprocess.run(["test", test, str(path)]).returncode == 0
        return subprocess.run(["test", test, str(path)], user=self.uid, group=self.gid, extra_groups=[],
                              stdin=subprocess.DEVNULL).returncode == 0


def ensure_login_user(name: str) -> LoginUser:
    """The nodes' login account, created if missing (useradd -m: the stock /etc/skel dotfiles,
    as on a real edge node) and, if it is only locked by useradd's `!`, given the password
    field `*` so that sshd without PAM accepts key logins to it."""
    as_root = os.geteuid() == 0
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if not as_root:
            raise BenchError(
                f"login user {name!r} does not exist and only root can create it: run as root, create it "
                f"(useradd -m -s /bin/bash {name}; usermod -p '*' {name}), or pass --user")
        print(f"creating the nodes' login user {name} (useradd -m -s /bin/bash)", file=sys.stderr)
        _run_admin(["useradd", "-m", "-s", "/bin/bash", name])
        pw = pwd.getpwnam(name)
    if not as_root and pw.pw_uid != os.geteuid():
        me = pwd.getpwuid(os.geteuid()).pw_name
        raise BenchError(f"only root can hand the node roots to {name}: run as root, or pass --user {me}")
    if pw.pw_uid != 0 and as_root:
        shadow = subprocess.run(["getent", "shadow", name], capture_output=True, text=True)
        fields = shadow.stdout.split(":")
        password = fields[1] if shadow.returncode == 0 and len(fields) > 1 else ""
        if password in ("!", "!*", "!!"):
            # Locked without a password, as useradd leaves it: with UsePAM no, sshd refuses
            # locked accounts even for key logins. `*` is "no password", not locked.
            _run_admin(["usermod", "-p", "*", name])
        elif password.startswith("!"):
            raise BenchError(f"login user {name} is locked (its password starts with '!'), so sshd refuses "
                             f"it: unlock it (usermod -U {name}) or pass another --user")
    shell = pw.pw_shell or "/bin/sh"
    if not os.access(shell, os.X_OK) or shell.endswith(("/nologin", "/false")):
        raise BenchError(f"login user {name} has the shell {shell}, so no SSH command can run: "
                         f"usermod -s /bin/bash {name}, or pass another --user")
    return LoginUser(name, pw.pw_uid, pw.pw_gid)


def _run_admin(argv: list[str]) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")


class Fleet:
    """N real OpenSSH sshd processes on 127.0.0.2.., a client key and a known_hosts."""

    def __init__(self, root: Path, n: int, port: int, user: LoginUser):
        self.root, self.port, self.user = root, port, user
        self.nodes = [
            Node(
                name=f"node-{i:03d}",
                address=f"127.0.0.{i + 1}",
                site=f"site-{(i - 1) // NODES_PER_SITE + 1:02d}",
                role="server" if (i - 1) % NODES_PER_SITE == 0 else "agent",
                app_port=str(8000 + i),
            )
            for i in range(1, n + 1)
        ]
        self.procs: list[subprocess.Popen] = []
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        sshd = Path("/usr/sbin/sshd")
        if not sshd.exists() or not shutil.which("ssh-keygen"):
            raise BenchError("/usr/sbin/sshd and ssh-keygen are needed: apt-get install -y openssh-server openssh-client")
        t0 = time.perf_counter()
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        keygen(self.client_key)
        authorized = self.root / "authorized_keys"
        shutil.copy(self.client_key.with_suffix(".pub"), authorized)
        # sshd reads AuthorizedKeysFile as the login user (StrictModes no: ownership is not checked).
        self.root.chmod(0o755)
        authorized.chmod(0o644)
        if not self.user.can("-r", authorized):
            raise BenchError(f"login user {self.user.name} cannot read {authorized}: every directory above it "
                             "must be searchable by other users; pass a --workdir such as /tmp/edgeforge-bench")
        known = []
        for node in self.nodes:
            d = self.root / node.name
            d.mkdir()
            hostkey = d / "ssh_host_ed25519_key"
            keygen(hostkey)
            pub = hostkey.with_suffix(".pub").read_text().split()
            known.append(f"[{node.address}]:{self.port} {pub[0]} {pub[1]}\n")
            (d / "sshd_config").write_text(SSHD_CONFIG.format(
                port=self.port, address=node.address, hostkey=hostkey,
                authorized=authorized, pidfile=d / "sshd.pid",
                permit_root="prohibit-password" if self.user.uid == 0 else "no"))
            self.procs.append(subprocess.Popen(
                [str(sshd), "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")],
                stdin=subprocess.DEVNULL, start_new_session=True))
        self.known_hosts.write_text("".join(known))
        self.wait_ready()
        print(f"fleet: {len(self.nodes)} sshd on 127.0.0.2-{self.nodes[-1].address}:{self.port} "
              f"up in {time.perf_counter() - t0:.1f} s; tools log in as {self.user.name}", flush=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        for node, proc in zip(self.nodes, self.procs):
            while True:
                if proc.poll() is not None:
                    log = (self.root / node.name / "sshd.log").read_text(errors="replace").strip()
                    raise BenchError(
                        f"sshd for {node.name} ({node.address}:{self.port}) exited with {proc.returncode}: "
                        f"{log or 'no log'}; is the port taken? pass --port")
                try:
                    with socket.create_connection((node.address, self.port), timeout=1) as s:
                        if s.recv(4).startswith(b"SSH-"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"sshd for {node.name} did not answer on {node.address}:{self.port} in 30 s")
                time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


SSHD_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {hostkey}
PidFile {pidfile}
UsePAM no
StrictModes no
PermitRootLogin {permit_root}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {authorized}
MaxStartups 200:30:400
PrintMotd no
PrintLastLog no
UseDNS no
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# Workload and tools


def prepare_workload(work: Path) -> Path:
    """Copies tests/bench/workload/ to the scratch dir and adds the two seeded 1 MB files."""
    dest = work / "workload"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(WORKLOAD, dest)
    (dest / "files").mkdir(exist_ok=True)
    for name, seed in BLOB_SEEDS.items():
        (dest / "files" / name).write_bytes(random.Random(seed).randbytes(BLOB_SIZE))
    return dest


def artifact_cache_dir(work: Path) -> Path:
    """edgeforge's artifact cache for the artifacts workload (EDGEFORGE_CACHE of its runs)."""
    return work / "artifacts" / "cache"


class RandomReader:
    """A file-like source of `size` seeded pseudo-random bytes (incompressible, reproducible)."""

    def __init__(self, seed: int, size: int):
        self.rng, self.left = random.Random(seed), size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def generate_artifacts(src: Path) -> dict:
    """The two artifacts in `src`, made once and kept: name → {size, sha256}. A stamp records
    what was generated, so later invocations reuse the files without hashing them again."""
    stamp = src / "stamp.json"
    want = [ARTIFACT_BINARY[0], ARTIFACT_TARBALL[0]]
    if stamp.exists():
        try:
            known = json.loads(stamp.read_text())
            files = known["files"]
            if known.get("generator") == ARTIFACT_GENERATOR and all(
                    (src / n).is_file() and (src / n).stat().st_size == files[n]["size"]
                    and (src / n).stat().st_mtime_ns == files[n]["mtime_ns"] for n in want):
                return files
        except (ValueError, KeyError, TypeError):
            pass
    t0 = time.perf_counter()
    src.mkdir(parents=True, exist_ok=True)
    print(f"generating the artifacts in {src} (once; kept for later runs)", flush=True)
    name, seed, size, mode = ARTIFACT_BINARY
    reader = RandomReader(seed, size)
    with open(src / name, "wb") as f:
        while chunk := reader.read(1 << 20):
            f.write(chunk)
    (src / name).chmod(mode)
    name, seed, mode = ARTIFACT_TARBALL
    with tarfile.open(src / name, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (member, msize) in enumerate(ARTIFACT_TAR_MEMBERS):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime, info.uname, info.gname = msize, 0o644, 0, "root", "root"
            tar.addfile(info, RandomReader(seed + i, msize))
    (src / name).chmod(mode)
    files = {}
    for n in want:
        st = (src / n).stat()
        files[n] = {"size": st.st_size, "sha256": sha256_file(src / n), "mtime_ns": st.st_mtime_ns}
    stamp.write_text(json.dumps({"generator": ARTIFACT_GENERATOR, "files": files}, indent=1) + "\n")
    made = ", ".join(f"{n} ({files[n]['size'] / 1e6:.1f} MB)" for n in want)
    print(f"generated {made} in {time.perf_counter() - t0:.1f} s", flush=True)
    return files


def fill_artifact_cache(cache: Path, files: dict, src: Path, edgeforge: Path) -> None:
    """Puts both artifacts into edgeforge's artifact cache, as an operator of an air-gapped site
    would: a bundle (manifest.json, then blobs/<sha256>, tar + zstd) loaded by
    `edgeforge images import`, which verifies every file. Skipped when the cache has them."""
    index = cache / "index.json"
    if index.exists():
        try:
            entries = {(e["name"], e["version"], e["arch"]): e["sha256"]
                       for e in json.loads(index.read_text())["entries"]}
            if all(entries.get((ARTIFACT_NAMES[n], ARTIFACT_VERSION, "amd64")) == files[n]["sha256"]
                   and (cache / "sha256" / files[n]["sha256"]).is_file() for n in ARTIFACT_PATHS):
                return
        except (ValueError, KeyError, TypeError):
            pass
    if not shutil.which("zstd"):
        raise BenchError("zstd is needed to write the artifact bundle: apt-get install -y zstd")
    # The bench's own cache: whatever it held (an older generator's files) goes.
    if cache.exists():
        shutil.rmtree(cache)
    t0 = time.perf_counter()
    bundle = cache.parent / "bench-artifacts.tar.zst"
    manifest = {"format": "edgeforge-bundle/v1", "artifacts": [
        {"name": ARTIFACT_NAMES[n], "version": ARTIFACT_VERSION, "arch": "amd64", "file": n,
         "sha256": files[n]["sha256"], "size": files[n]["size"]} for n in ARTIFACT_PATHS]}
    data = json.dumps(manifest, indent=1).encode()
    with open(bundle, "wb") as out:
        zstd = subprocess.Popen(["zstd", "-q", "-1", "-c"], stdin=subprocess.PIPE, stdout=out)
        with tarfile.open(fileobj=zstd.stdin, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            for n in ARTIFACT_PATHS:
                info = tarfile.TarInfo(f"blobs/{files[n]['sha256']}")
                info.size, info.mode = files[n]["size"], 0o644
                with open(src / n, "rb") as f:
                    tar.addfile(info, f)
        zstd.stdin.close()
        if zstd.wait() != 0:
            raise BenchError(f"zstd failed writing {bundle}")
    cache.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(edgeforge), "--quiet", "images", "import", str(bundle), "--cache", str(cache)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_env(NO_COLOR=1))
    bundle.unlink()
    if out.returncode != 0:
        raise BenchError(f"edgeforge images import failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
    print(f"imported the artifacts into {cache} (edgeforge images import) in {time.perf_counter() - t0:.1f} s",
          flush=True)


def prepare_artifact_workload(work: Path, tools) -> Path:
    """Copies tests/bench/workload-artifacts/ to the scratch dir, links the generated artifacts
    into its files/ (Ansible's and pyinfra's `src`, scp's sources) and, when edgeforge runs,
    imports them into its artifact cache."""
    src = work / "artifacts" / "src"
    files = generate_artifacts(src)
    dest = work / "workload-artifacts"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ARTIFACT_WORKLOAD, dest)
    (dest / "files").mkdir(exist_ok=True)
    for n in ARTIFACT_PATHS:
        os.link(src / n, dest / "files" / n)
    for tool in tools:
        if isinstance(tool, Edgeforge):
            fill_artifact_cache(artifact_cache_dir(work), files, src, tool.binary)
    return dest


@dataclass
class RunContext:
    """Where one tool's runs at one fleet size live."""
    tool: str
    n: int
    nodes: list
    fleet: Fleet
    work: Path
    workload: Path
    kind: str = "fleet"

    @property
    def _suffix(self) -> str:
        # The artifacts workload keeps its node roots and logs apart from the fleet's.
        return "" if self.kind == "fleet" else f"-{self.kind}"

    @property
    def expected(self) -> tuple:
        """The paths every node root must hold after a run."""
        return ARTIFACT_PATHS if self.kind == "artifacts" else tuple(EXPECTED_PATHS)

    @property
    def roots(self) -> Path:
        return self.work / ("roots" + self._suffix) / self.tool

    @property
    def dir(self) -> Path:
        d = self.work / ("runs" + self._suffix) / f"{self.tool}-{self.n}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def wipe(self) -> None:
        """Cold start: no node root, and no tool state that could skip work."""
        if self.roots.exists():
            shutil.rmtree(self.roots)
        self.roots.mkdir(parents=True)
        # Tool state (edgeforge's journal under --state-dir or XDG_STATE_HOME, or next to
        # the inventory) lives in subdirectories of the run directory; logs are files.
        for sub in self.dir.iterdir():
            if sub.is_dir() and not sub.is_symlink():
                shutil.rmtree(sub)

    def own_roots(self) -> None:
        """Every node root exists and belongs to the login user, who writes into it over SSH."""
        user = self.fleet.user
        self.roots.mkdir(parents=True, exist_ok=True)
        self.roots.parent.chmod(0o755)
        for path in [self.roots] + [self.roots / n.name for n in self.nodes]:
            path.mkdir(exist_ok=True)
            st = path.stat()
            if (st.st_uid, st.st_gid) != (user.uid, user.gid):
                os.chown(path, user.uid, user.gid)


def make_tool(name: str, args):
    return {"edgeforge": lambda: Edgeforge(args.edgeforge, force=not args.no_force), "ansible": Ansible,
            "pyinfra": Pyinfra, "scp": Scp}[name]()


def venv_bin() -> Path:
    """The bin directory of the test venv (tests/setup-host.sh installs ansible-core and pyinfra there)."""
    return Path(os.environ.get("EDGEFORGE_TEST_VENV", "/opt/edgeforge-test/venv")) / "bin"


def tool_path() -> str:
    """PATH for finding and running the peers: the test venv's bin first, if it exists."""
    path = os.environ.get("PATH", os.defpath)
    return f"{venv_bin()}{os.pathsep}{path}" if venv_bin().is_dir() else path


def _which(name: str) -> str:
    """The peer's executable as found on tool_path() (the name itself if it is not there)."""
    return shutil.which(name, path=tool_path()) or name


def _version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(pattern, out)
    return m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "unknown"


def _env(**extra) -> dict:
    env = dict(os.environ)
    # Marks node-side processes (see _node_side); the tools must not inherit it.
    env.pop("SSH_CONNECTION", None)
    env["PATH"] = tool_path()
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Peer:
    """What the peers share: every mode but rehash (their warm runs already checksum every file)."""
    skip_reason = "its warm run already checksums every file on the node"

    def runs_mode(self, mode: str, workload: str) -> bool:
        return mode != "rehash"


class Ansible(Peer):
    """ansible-core: forks = N, pipelining, ControlPersist, host keys checked."""
    name = "ansible"

    def unavailable(self) -> str | None:
        if not shutil.which("ansible-playbook", path=tool_path()):
            return "ansible-playbook not found; install with: pip install ansible-core"
        return None

    def version(self) -> str:
        return "ansible-core " + _version([_which("ansible"), "--version"], r"core ([\d.]+)")

    def prepare(self, ctx: RunContext, mode: str):
        d, f = ctx.dir, ctx.fleet
        hosts = "\n".join(
            f"    {n.name}: " + json.dumps({"ansible_host": n.address, **template_vars(n)})
            for n in ctx.nodes)
        common = {
            "ansible_user": f.user.name,
            "ansible_port": f.port,
            "ansible_ssh_private_key_file": str(f.client_key),
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        (d / "inventory.yaml").write_text(f"all:\n  vars: {json.dumps(common)}\n  hosts:\n{hosts}\n")
        (d / "cp").mkdir(exist_ok=True)
        (d / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {ctx.n}\n"
            "host_key_checking = True\n"
            "gathering = explicit\n"
            "retry_files_enabled = False\n"
            f"local_tmp = {d}/ansible-tmp\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes -o BatchMode=yes"
            f" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={f.known_hosts} -o GlobalKnownHostsFile=/dev/null\n"
            f"control_path_dir = {d}/cp\n")
        argv = [_which("ansible-playbook"), "-i", str(d / "inventory.yaml"), "ansible.yaml",
                "-e", f"bench_base={ctx.roots}"]
        return argv, _env(ANSIBLE_CONFIG=d / "ansible.cfg", ANSIBLE_NOCOLOR=1), ctx.workload


class Pyinfra(Peer):
    """pyinfra 3.x: --parallel N, known_hosts verified strictly."""
    name = "pyinfra"

    def unavailable(self) -> str | None:
        if not shutil.which("pyinfra", path=tool_path()):
            return "pyinfra not found; install with: pip install pyinfra"
        return None

    def version(self) -> str:
        return "pyinfra " + _version([_which("pyinfra"), "--version"], r"v?([\d.]+)")

    def prepare(self, ctx: RunContext, mode: str):
        d, f = ctx.dir, ctx.fleet
        hosts = [(n.name, {"ssh_hostname": n.address, **template_vars(n)}) for n in ctx.nodes]
        group = {
            "ssh_user": f.user.name,
            "ssh_port": f.port,
            "ssh_key": str(f.client_key),
            "ssh_known_hosts_file": str(f.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "bench_base": str(ctx.roots),
        }
        (d / "inventory.py").write_text(
            "# Written by fleet_bench.py.\n"
            f"fleet = {(hosts, group)!r}\n")
        argv = [_which("pyinfra"), str(d / "inventory.py"), "pyinfra_deploy.py", "--parallel", str(ctx.n), "-y"]
        return argv, _env(PYINFRA_PROGRESS="off"), ctx.workload


class Edgeforge:
    """edgeforge apply -i <inventory> --playbook <file> --parallel N --force."""
    name = "edgeforge"

    def __init__(self, binary: Path | None, force: bool = True):
        self.force = force
        if binary is None:
            for cand in (REPO / "target/release/edgeforge", REPO / "target/debug/edgeforge"):
                if cand.exists():
                    binary = cand
                    break
        # the tool runs with another working directory, so a relative --edgeforge must be resolved here
        self.binary = binary.resolve() if binary is not None else None

    def unavailable(self) -> str | None:
        if self.binary is None or not self.binary.exists():
            return ("no edgeforge binary (build it with `cargo build --release -p edgeforge`, "
                    "or pass --edgeforge PATH)")
        if "debug" in self.binary.parts:
            print(f"warning: {self.binary} is a debug build; its numbers are not representative", file=sys.stderr)
        return None

    def version(self) -> str:
        return "edgeforge " + _version([str(self.binary), "--version"], r"edgeforge ([^\s]+)")

    skip_reason = ""

    def runs_mode(self, mode: str, workload: str) -> bool:
        return True

    def prepare(self, ctx: RunContext, mode: str):
        d, f = ctx.dir, ctx.fleet
        (d / "inventory.yaml").write_text(edgeforge_inventory(ctx.nodes, f))
        if ctx.kind == "artifacts":
            return self.prepare_artifacts(ctx, mode)
        text = (ctx.workload / "edgeforge.yaml").read_text()
        text, count = re.subn(r"(?m)^(  bench_base: ).*$", lambda m: m.group(1) + json.dumps(str(ctx.roots)), text)
        if count != 1:
            raise BenchError("workload/edgeforge.yaml must set `bench_base:` once under `vars:`")
        (d / "playbook.yaml").write_text(text)
        argv = [str(self.binary), "--data-dir", str(ctx.workload), "apply", "-i", str(d / "inventory.yaml"),
                "--playbook", str(d / "playbook.yaml"), "--parallel", str(ctx.n), "--state-dir", str(d / "state")]
        if self.force:
            # Check every node's real state, as the peers do, rather than trust the journal.
            argv.append("--force")
        return argv, _env(XDG_STATE_HOME=d / "xdg-state", NO_COLOR=1), ctx.workload

    def prepare_artifacts(self, ctx: RunContext, mode: str):
        """The artifact steps from the bench's artifact cache. Cold and warm run as a user would
        (a warm run trusts a file whose stat matches what the journal recorded when it was placed);
        rehash adds --force, which hashes every placed file on the node again."""
        d = ctx.dir
        text = (ctx.workload / "edgeforge.yaml").read_text()
        text, count = re.subn(r"(?m)^(  bench_base: ).*$", lambda m: m.group(1) + json.dumps(str(ctx.roots)), text)
        if count != 1:
            raise BenchError("workload-artifacts/edgeforge.yaml must set `bench_base:` once under `vars:`")
        (d / "playbook.yaml").write_text(text)
        argv = [str(self.binary), "--data-dir", str(ctx.workload), "apply", "-i", str(d / "inventory.yaml"),
                "--playbook", str(d / "playbook.yaml"), "--parallel", str(ctx.n), "--state-dir", str(d / "state")]
        if mode == "rehash":
            argv.append("--force")
        env = _env(XDG_STATE_HOME=d / "xdg-state", NO_COLOR=1, EDGEFORGE_CACHE=artifact_cache_dir(ctx.work))
        return argv, env, ctx.workload


class Scp:
    """The floor of the artifacts workload: one plain `scp` per node, all at once, both files in one
    invocation, OpenSSH's default cipher and protocol (SFTP since 9.0), host keys checked. It has no
    notion of "already there", so it only runs cold."""
    name = "scp"
    skip_reason = "scp always copies; it has no warm run"

    def unavailable(self) -> str | None:
        if not shutil.which("scp"):
            return "scp not found; install with: apt-get install -y openssh-client"
        return None

    def version(self) -> str:
        return _ssh_version()

    def runs_mode(self, mode: str, workload: str) -> bool:
        return mode == "cold"

    def prepare(self, ctx: RunContext, mode: str):
        if ctx.kind != "artifacts":
            raise BenchError("scp only runs the artifacts workload")
        d, f = ctx.dir, ctx.fleet
        files = " ".join(shlex.quote(str(ctx.workload / "files" / name)) for name in ARTIFACT_PATHS)
        opts = (f"-q -B -P {f.port} -i {shlex.quote(str(f.client_key))} -o IdentitiesOnly=yes "
                f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(str(f.known_hosts))} "
                "-o GlobalKnownHostsFile=/dev/null")
        lines = ["#!/bin/bash", "# Written by fleet_bench.py: one scp per node, in parallel; fails if any fails.",
                 "pids=()"]
        for n in ctx.nodes:
            dest = f"{f.user.name}@{n.address}:{ctx.roots / n.name}/"
            lines.append(f"scp {opts} {files} {shlex.quote(dest)} & pids+=($!)")
        lines += ["rc=0", 'for p in "${pids[@]}"; do wait "$p" || rc=1; done', "exit $rc", ""]
        script = d / "scp-all.sh"
        script.write_text("\n".join(lines))
        return ["/bin/bash", str(script)], _env(), ctx.workload


def template_vars(n: Node) -> dict:
    """The variables the templates use, shaped like edgeforge's context (node.*, site.*)."""
    return {
        "node": {"name": n.name, "role": n.role, "address": n.address, "labels": {"app_port": n.app_port}},
        "site": {"name": n.site},
    }


def edgeforge_inventory(nodes, fleet: Fleet) -> str:
    """An edgeforge/v1 inventory: sites of up to 5 nodes, the first of each a server."""
    lines = [
        "apiVersion: edgeforge/v1",
        "name: fleet-bench",
        "defaults:",
        "  ssh:",
        f"    user: {json.dumps(fleet.user.name)}",
        # As Ansible without become and pyinfra without _sudo: the workload writes only
        # into node roots owned by the login user.
        "    sudo: { enabled: false }",
        f"    port: {fleet.port}",
        f"    identityFile: {json.dumps(str(fleet.client_key))}",
        "    hostKey:",
        f"      knownHosts: {json.dumps(str(fleet.known_hosts))}",
        "      policy: strict",
        "sites:",
    ]
    site = None
    for n in nodes:
        if n.site != site:
            site = n.site
            lines += [f"  - name: {site}", "    nodes:"]
        lines += [
            f"      - name: {n.name}",
            f"        role: {n.role}",
            f"        address: {n.address}",
            f"        labels: {{ app_port: \"{n.app_port}\" }}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Machine description and results


def machine_info(tools) -> dict:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": _ssh_version(),
        "tools": {t.name: t.version() for t in tools},
        "load_before": os.getloadavg(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }


def _ssh_version() -> str:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip()


class Report:
    """Records of several invocations merged by (tool, N, mode), rendered as markdown and SVG."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    @classmethod
    def load_or_new(cls, path: Path, fresh: bool, workload: str | None = None) -> Report:
        if path.exists() and not fresh:
            data = json.loads(path.read_text())
            had = data.get("workload", "fleet")
            if workload is not None and had != workload:
                raise BenchError(f"{path} holds the {had} workload's results, not {workload}'s; "
                                 "pass another --results-name")
            return cls(path, data)
        data = {"machines": [], "records": []}
        if workload == "artifacts":
            data["workload"] = workload
        return cls(path, data)

    @property
    def artifacts(self) -> bool:
        return self.data.get("workload", "fleet") == "artifacts"

    def add_machine(self, machine: dict) -> int:
        """Records this invocation's machine description; returns its index."""
        self.data["machines"].append(machine)
        return len(self.data["machines"]) - 1

    def merge(self, invocation: int, records: list[Record]) -> None:
        """Adds records, replacing earlier ones of the same tool, N and mode."""
        keep = [r for r in self.data["records"]
                if not any((r["tool"], r["nodes"], r["mode"]) == (n.tool, n.nodes, n.mode) for n in records)]
        self.data["records"] = keep + [{**asdict(r), "machine": invocation} for r in records]
        self.data["records"].sort(key=lambda r: (r["nodes"], MODE_ORDER.index(r["mode"]), TOOL_ORDER.index(r["tool"])))

    def rows(self) -> list[dict]:
        """One row per record: medians over its successful runs."""
        rows = []
        for r in self.data["records"]:
            good = [x for x in r["runs"] if x["rc"] == 0 and x["missing_paths"] == 0]
            row = {"tool": r["tool"], "version": r["version"], "nodes": r["nodes"], "mode": r["mode"],
                   "runs": len(r["runs"]), "ok": len(good)}
            if good:
                row.update(
                    wall=statistics.median(x["wall_s"] for x in good),
                    cpu=statistics.median(x["cpu_s"] for x in good),
                    mem=statistics.median(x["peak_tree_rss_mb"] for x in good),
                    single=statistics.median(x["peak_single_rss_mb"] for x in good),
                    warm_modified=max(x["warm_modified"] for x in good),
                )
                if self.artifacts and r["mode"] == "cold":
                    # Aggregate: what all N nodes received, per second of wall time.
                    row["mbps"] = r["nodes"] * self.bytes_per_node() / row["wall"] / 1e6
            rows.append(row)
        return rows

    def bytes_per_node(self) -> int:
        return sum(self.data.get("artifact_bytes", {}).values())

    def markdown_table(self) -> str:
        if self.artifacts:
            return self.artifact_table()
        rows = self.rows()
        ref = {(r["nodes"], r["mode"]): r for r in rows if r["tool"] == "edgeforge" and "wall" in r}
        out = [
            "| tool | N | run | runs | median wall | per node | CPU (user+sys) | peak memory (sum RSS) "
            "| largest process | wall vs edgeforge | CPU vs edgeforge | memory vs edgeforge |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if "wall" not in r:
                out.append(f"| {r['tool']} | {r['nodes']} | {r['mode']} | {r['runs']} | FAILED "
                           "| | | | | | | |")
                continue
            e = ref.get((r["nodes"], r["mode"]))
            if r["tool"] == "edgeforge":
                ratios = ["1×"] * 3
            elif e:
                ratios = [f"{r['wall'] / e['wall']:.1f}× slower", f"{r['cpu'] / e['cpu']:.1f}× more",
                          f"{r['mem'] / e['mem']:.1f}× more"]
            else:
                ratios = ["n/a"] * 3
            note = " ⚠ warm run modified files" if r["mode"] == "warm" and r["warm_modified"] else ""
            failed = f" ({r['runs'] - r['ok']} failed)" if r["ok"] < r["runs"] else ""
            out.append(
                f"| {r['tool']} | {r['nodes']} | {r['mode']}{note} | {r['ok']}{failed} | {fmt_s(r['wall'])} "
                f"| {fmt_s(r['wall'] / r['nodes'])} | {fmt_s(r['cpu'])} | {r['mem']:.0f} MB | {r['single']:.0f} MB | "
                + " | ".join(ratios) + " |")
        return "\n".join(out)

    def save(self, results: Path, name: str, readmes: bool = False) -> None:
        results.mkdir(parents=True, exist_ok=True)
        (results / f"{name}.json").write_text(json.dumps(self.data, indent=1) + "\n")
        if self.artifacts:
            (results / f"{name}.md").write_text(self.artifact_markdown(name))
            (results / f"{name}.svg").write_text(svg_chart(
                self.rows(), self.data["machines"][-1], "Artifact placement (70 MB + 200 MB per node): wall time"))
            if readmes:
                update_readmes(self, name)
            return
        (results / f"{name}.md").write_text(self.markdown(name))
        (results / f"{name}.svg").write_text(svg_chart(self.rows(), self.data["machines"][-1]))

    # The artifacts workload: throughput against scp, the targets.

    def artifact_table(self) -> str:
        rows = self.rows()
        floor = {r["nodes"]: r for r in rows if r["tool"] == "scp" and "mbps" in r}
        out = [
            "| tool | N | run | runs | median wall | throughput (aggregate) | vs scp | CPU (user+sys) "
            "| peak memory (sum RSS) | largest process |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if "wall" not in r:
                out.append(f"| {r['tool']} | {r['nodes']} | {r['mode']} | {r['runs']} | FAILED | | | | | |")
                continue
            mbps = f"{r['mbps']:.0f} MB/s" if "mbps" in r else ""
            f = floor.get(r["nodes"])
            vs = f"{r['mbps'] / f['mbps']:.2f}×" if "mbps" in r and f else ""
            note = " ⚠ modified files" if r["mode"] != "cold" and r["warm_modified"] else ""
            failed = f" ({r['runs'] - r['ok']} failed)" if r["ok"] < r["runs"] else ""
            out.append(f"| {r['tool']} | {r['nodes']} | {r['mode']}{note} | {r['ok']}{failed} | {fmt_s(r['wall'])} "
                       f"| {mbps} | {vs} | {fmt_s(r['cpu'])} | {r['mem']:.0f} MB | {r['single']:.0f} MB |")
        return "\n".join(out)

    def artifact_targets(self) -> list[str]:
        """Issue 11's two targets, each met / not met with its numbers (or not measured)."""
        rows = {(r["tool"], r["nodes"], r["mode"]): r for r in self.rows() if "wall" in r}
        ns = sorted({r["nodes"] for r in self.rows()})
        out = []
        for n in ns:
            e, f = rows.get(("edgeforge", n, "cold")), rows.get(("scp", n, "cold"))
            if e and f:
                ratio = e["mbps"] / f["mbps"]
                verdict = "met" if ratio >= 0.9 else "NOT met"
                out.append(f"- Cold throughput at N = {n}, edgeforge ≥ 0.9× scp: **{verdict}**: "
                           f"{e['mbps']:.0f} MB/s against {f['mbps']:.0f} MB/s ({ratio:.2f}×; "
                           f"{fmt_s(e['wall'])} against {fmt_s(f['wall'])}).")
            else:
                out.append(f"- Cold throughput at N = {n}, edgeforge ≥ 0.9× scp: not measured "
                           "(needs both edgeforge and scp cold runs).")
        w = rows.get(("edgeforge", 20, "warm"))
        if w:
            verdict = "met" if w["wall"] < 1 else "NOT met"
            out.append(f"- Warm re-run at N = 20 under 1 s: **{verdict}**: {fmt_s(w['wall'])} "
                       "(no --force: each file's stat is compared with what the journal recorded).")
        else:
            out.append("- Warm re-run at N = 20 under 1 s: not measured (no edgeforge warm run at N = 20).")
        r = rows.get(("edgeforge", 20, "rehash"))
        if r:
            out.append(f"- For comparison, the same re-run with --force (every file hashed again on the node, "
                       f"as the peers' warm runs do): {fmt_s(r['wall'])} at N = 20.")
        return out

    def machine_lines(self) -> list[str]:
        used = sorted({r["machine"] for r in self.data["records"]})
        machines = [self.data["machines"][i] for i in used] or self.data["machines"][-1:]
        m = machines[-1]
        tools = {}
        for mm in machines:
            tools.update(mm["tools"])
        return [
            f"- date: {m['date']}",
            f"- CPU: {m['cpu']}, {m['nproc']} cores available; memory {m['memory_gib']} GiB",
            f"- kernel {m['kernel']}, Python {m['python']}, {m['openssh']}",
            "- login user on the nodes, load average (1, 5, 15 min) at start / end, and nice value, of each"
            " invocation (the machine is shared; other jobs running at the same time add noise):",
            *[f"  - {mm['date']}: {', '.join(sorted(mm['tools']))}: as {mm.get('login_user', 'root')},"
              f" load {fmt_load(mm['load_before'])} / {fmt_load(mm.get('load_after'))}, nice {mm.get('nice', 0)}"
              + (f"; {mm['note']}" if mm.get("note") else "") for mm in machines],
            "- tools: " + ", ".join(f"{v}" for k, v in sorted(tools.items())),
        ]

    def artifact_markdown(self, name: str) -> str:
        sizes = self.data.get("artifact_bytes", {})
        lines = [
            "# Artifact placement: edgeforge, Ansible, pyinfra, scp",
            "",
            "Generated by `tests/bench/fleet_bench.py --workload artifacts`; rerun with the command in",
            "tests/bench/README.md. Each node is a real OpenSSH sshd on its own 127.0.0.x address with its",
            "own host key; every tool places the same two generated, incompressible files in the node's own",
            "root: " + ", ".join(f"`{n}` ({v / 1e6:.1f} MB)" for n, v in sizes.items()) + ".",
            "*cold*: node roots (and edgeforge's state) wiped before the run; *warm*: the same run again right",
            "after, nothing changed (edgeforge as a user runs it: each artifact's `stat` compared with what its",
            "journal recorded when placing it, no hashing); *rehash*: edgeforge's warm run with `--force`,",
            "which hashes every file on the node again, as the peers' warm runs do (Ansible's and pyinfra's",
            "only warm run; scp has none: it always copies).",
            "",
            "*Throughput* is N × the bytes per node divided by the median wall time (cold runs only);",
            "*vs scp* divides it by scp's at the same N. CPU is user+sys of the tool's whole process tree on",
            "the controller (ssh/scp clients included; the sshd side is not counted); memory as in the fleet",
            "benchmark (highest sum of RSS over the tree sampled at 20 Hz, and the largest single process).",
            "",
            self.artifact_table(),
            "",
            "## Targets (issue 11)",
            "",
            *self.artifact_targets(),
            "",
            "![wall time against N](" + f"{name}.svg)",
            "",
            "## Machine",
            "",
            *self.machine_lines(),
            "",
            "## Tool settings",
            "",
            "- edgeforge: `edgeforge --data-dir <workload> apply -i <inventory> --playbook <file> --parallel N",
            "  --state-dir <dir>` with `EDGEFORGE_CACHE` at the bench's artifact cache (filled once by",
            "  `edgeforge images import` of a bundle of both files); two `artifact` steps, `become: false`.",
            "- Ansible: two `copy` tasks; forks = N, pipelining, ControlMaster/ControlPersist=60s,",
            "  `gather_facts: false`, host keys checked.",
            "- pyinfra: two `files.put` operations; `--parallel N -y`, host keys checked.",
            "- scp: one `scp -q -B` per node with both files, all N at once (a bash script waits for them);",
            "  OpenSSH's default cipher and protocol, host keys checked.",
            "",
            "All runs: " + "; ".join(
                f"{r['tool']} N={r['nodes']} {r['mode']}: "
                + ", ".join(fmt_s(x["wall_s"]) + ("" if x["rc"] == 0 and x["missing_paths"] == 0 else " (failed)")
                            for x in r["runs"])
                for r in self.data["records"]) + ".",
            "",
        ]
        return "\n".join(lines)

    def readme_block(self, name: str, link: str) -> str:
        """The generated part of the READMEs' artifact sections: the table and the targets."""
        m = self.data["machines"][-1]
        loads = [fmt_load(mm["load_before"]) for mm in self.data["machines"]]
        return "\n".join([
            f"Generated by `fleet_bench.py --workload artifacts` from [{name}]({link}{name}.md)"
            f" ({m['date']}, {m['nproc']} cores, {m['cpu']}; load average at start: {'; '.join(loads)}),",
            "medians:",
            "",
            self.artifact_table(),
            "",
            *self.artifact_targets(),
        ])
        used = sorted({r["machine"] for r in self.data["records"]})
        machines = [self.data["machines"][i] for i in used] or self.data["machines"][-1:]
        m = machines[-1]
        tools = {}
        for mm in machines:
            tools.update(mm["tools"])
        # Invocations before --user existed logged in as root.
        users = sorted({mm.get("login_user", "root") for mm in machines})
        if users == ["root"]:
            login = ["Every tool logs in to the nodes as root, so root's own dotfiles run on every SSH session."]
        elif len(users) == 1:
            login = [f"Every tool logs in to the nodes as `{users[0]}`, a dedicated user with the stock /etc/skel",
                     "dotfiles (as on a real edge node), not as root."]
        else:
            login = ["The invocations below logged in to the nodes as different users ("
                     + ", ".join(f"`{u}`" for u in users) + "); see *Machine*."]
        lines = [
            "# Fleet benchmark: edgeforge, Ansible, pyinfra",
            "",
            "Generated by `tests/bench/fleet_bench.py`; rerun with the command in the README.",
            "Each node is a real OpenSSH sshd on its own 127.0.0.x address with its own host key;",
            f"every tool does the same {STEPS_PER_NODE} steps per node (8 templated files, 4 guarded commands,",
            "4 line edits, 2 directories, 2 uploads of 1 MB) into the node's own root directory.",
            "*cold*: node roots wiped before the run; *warm*: the same run again right after, nothing to change.",
            *login,
            "",
            "Wall and CPU are medians over the successful runs (column *runs*). CPU is user+sys of the",
            "tool's whole process tree on the controller (ssh clients and ControlPersist masters included;",
            "the sshd side is not counted). *Peak memory* is the highest sum of RSS over that tree, sampled",
            "at 20 Hz (shared pages of forked workers count once per process, which overstates forking",
            "tools); *largest process* is the maximum RSS of any single process of the tree.",
            "*Per node* is the median wall time divided by N. Ratios are the tool's number divided by",
            "edgeforge's at the same N and run (\"n/a\" until edgeforge has run at that N).",
            "",
            self.markdown_table(),
            "",
            "![wall time against N](" + f"{name}.svg)",
            "",
            "## Machine",
            "",
            f"- date: {m['date']}",
            f"- CPU: {m['cpu']}, {m['nproc']} cores available; memory {m['memory_gib']} GiB",
            f"- kernel {m['kernel']}, Python {m['python']}, {m['openssh']}",
            "- login user on the nodes, load average (1, 5, 15 min) at start / end, and nice value, of each"
            " invocation (the machine is shared; other jobs running at the same time add noise):",
            *[f"  - {mm['date']}: {', '.join(sorted(mm['tools']))}: as {mm.get('login_user', 'root')},"
              f" load {fmt_load(mm['load_before'])} / {fmt_load(mm.get('load_after'))}, nice {mm.get('nice', 0)}"
              + (f"; {mm['note']}" if mm.get("note") else "") for mm in machines],
            "- tools: " + ", ".join(f"{v}" for k, v in sorted(tools.items())),
            "",
            "## Tool settings",
            "",
            "- Ansible: forks = N, pipelining on, ssh ControlMaster/ControlPersist=60s, `gather_facts: false`,",
            "  host keys checked (`StrictHostKeyChecking=yes` with the generated known_hosts),",
            "  interpreter pinned to /usr/bin/python3. ControlPersist masters left at the end of a run are",
            "  ended and counted in that run, so every run starts without open connections.",
            "- pyinfra: `--parallel N -y`, `ssh_strict_host_key_checking=yes` with the generated known_hosts.",
            "  pyinfra's `server.shell` has no creates/unless, so the guard runs inside the same remote",
            "  command (one round trip, as Ansible's `creates`).",
            "- edgeforge: `edgeforge --data-dir <workload> apply -i <inventory> --playbook <file> --parallel N",
            "  --state-dir <dir> --force`; `--force` makes warm runs check each node's real state, as the",
            "  peers do, instead of skipping steps its journal records as applied. The playbook sets",
            "  `become: false` and the inventory `sudo: {enabled: false}`: the steps run as the login user,",
            "  as Ansible's (no become) and pyinfra's (no sudo) do.",
            "",
            "All runs: " + "; ".join(
                f"{r['tool']} N={r['nodes']} {r['mode']}: "
                + ", ".join(fmt_s(x["wall_s"]) + ("" if x["rc"] == 0 and x["missing_paths"] == 0 else " (failed)")
                            for x in r["runs"])
                for r in self.data["records"]) + ".",
            "",
        ]
        return "\n".join(lines)


def fmt_s(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1000:.0f} ms" if s >= 0.01 else f"{s * 1000:.2f} ms"


def fmt_tick(s: float) -> str:
    return f"{s:g} s" if s >= 1 else f"{s * 1000:g} ms"


def fmt_load(load) -> str:
    return ", ".join(f"{x:.2f}" for x in load) if load else "n/a"


# --------------------------------------------------------------------------
# The chart, written as SVG by hand


COLORS = {"edgeforge": "#1f6fd1", "ansible": "#d13b1f", "pyinfra": "#2c9a3c", "scp": "#7a4fb0"}


def update_readmes(report: Report, name: str) -> None:
    """Rewrites the generated block of the artifact sections of README.md and tests/bench/README.md
    (between ARTIFACT_MARK_BEGIN and ARTIFACT_MARK_END), so the published table is this run's."""
    for readme, link in ((REPO / "README.md", "tests/bench/results/"), (HERE / "README.md", "results/")):
        if not readme.exists():
            continue
        text = readme.read_text()
        begin, end = text.find(ARTIFACT_MARK_BEGIN), text.find(ARTIFACT_MARK_END)
        if begin < 0 or end < begin:
            print(f"warning: {readme} has no {ARTIFACT_MARK_BEGIN} ... {ARTIFACT_MARK_END} block; not updated",
                  file=sys.stderr)
            continue
        block = report.readme_block(name, link)
        readme.write_text(text[:begin + len(ARTIFACT_MARK_BEGIN)] + "\n" + block + "\n" + text[end:])


ARTIFACT_MARK_BEGIN = "<!-- artifacts-bench: generated by fleet_bench.py --workload artifacts -->"
ARTIFACT_MARK_END = "<!-- artifacts-bench: end -->"


def svg_chart(rows: list[dict], machine: dict, title: str = "Fleet benchmark: wall time against N") -> str:
    """Median wall time against N, both axes log scale; solid = cold, dashed = warm."""
    import math

    pts = [r for r in rows if "wall" in r]
    W, H = 760, 470
    left, right, top, bottom = 80, 190, 50, 60
    pw, ph = W - left - right, H - top - bottom
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="16" font-weight="bold">{title}</text>',
           f'<text x="{left}" y="40" fill="#555">{machine["nproc"]} cores, {machine["cpu"][:48]}; '
           'log-log; solid = cold, dashed = warm'
           + (', dotted = rehash' if any(r["mode"] == "rehash" for r in rows) else '') + '</text>']
    if not pts:
        svg.append(f'<text x="{left}" y="{top + 40}">no successful runs</text></svg>')
        return "\n".join(svg) + "\n"
    ns = sorted({r["nodes"] for r in pts})
    walls = [r["wall"] for r in pts]
    y_lo = 10 ** math.floor(math.log10(min(walls)))
    y_hi = 10 ** math.ceil(math.log10(max(walls)))
    if y_hi <= y_lo:
        y_hi = y_lo * 10
    x_lo, x_hi = min(ns) / 1.4, max(ns) * 1.4

    def x(n):
        return left + pw * (math.log10(n) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))

    def y(s):
        return top + ph * (1 - (math.log10(s) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)))

    # grid and axes
    decade = y_lo
    while decade <= y_hi * 1.0001:
        for k in range(1, 10):
            v = decade * k
            if v > y_hi * 1.0001:
                break
            major = k == 1
            svg.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                       f'stroke="{"#ccc" if major else "#eee"}"/>')
            if k in (1, 2, 5):
                shade = "#000" if major else "#777"
                svg.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end" '
                           f'fill="{shade}">{fmt_tick(v)}</text>')
        decade *= 10
    for n in ns:
        svg.append(f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{top}" y2="{top + ph}" stroke="#eee"/>')
        svg.append(f'<text x="{x(n):.1f}" y="{top + ph + 18}" text-anchor="middle">{n}</text>')
    svg.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    svg.append(f'<text x="{left + pw / 2}" y="{H - 15}" text-anchor="middle">nodes (N)</text>')
    svg.append(f'<text transform="translate(20,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
               'median wall time</text>')
    # series
    legend = []
    for tool in TOOL_ORDER:
        for mode, dash in (("cold", ""), ("warm", ' stroke-dasharray="6,4"'), ("rehash", ' stroke-dasharray="2,3"')):
            series = sorted((r["nodes"], r["wall"]) for r in pts if r["tool"] == tool and r["mode"] == mode)
            if not series:
                continue
            c = COLORS[tool]
            path = " ".join(f"{'M' if i == 0 else 'L'}{x(n):.1f},{y(s):.1f}" for i, (n, s) in enumerate(series))
            svg.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
            for n, s in series:
                fill = c if mode == "cold" else "white"
                svg.append(f'<circle cx="{x(n):.1f}" cy="{y(s):.1f}" r="4" fill="{fill}" stroke="{c}" stroke-width="2">'
                           f'<title>{tool} {mode} N={n}: {fmt_s(s)}</title></circle>')
            legend.append((f"{tool} {mode}", c, dash, mode))
    for i, (label, c, dash, mode) in enumerate(legend):
        ly = top + 10 + i * 22
        lx = left + pw + 16
        svg.append(f'<line x1="{lx}" x2="{lx + 30}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
        svg.append(f'<circle cx="{lx + 15}" cy="{ly}" r="4" fill="{c if mode == "cold" else "white"}" '
                   f'stroke="{c}" stroke-width="2"/>')
        svg.append(f'<text x="{lx + 38}" y="{ly + 4}">{label}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


if __name__ == "__main__":
    sys.exit(main())
