"""A multi-host Ray cluster on one machine whose hosts share nothing but the network (issue 13).

Each host is a network namespace with its own address on a bridge this module creates (a private /24 under
10.213.0.0/16 that no interface of the machine uses; the host side of the bridge has ``.1``, host ``i`` has
``.(i+1)``) and, for every process started in it, its own mount namespace: ``/tmp`` is the host's own
folder (its "disk", kept across a restart of the host so that its Ray logs can be read afterwards),
``/dev/shm`` a private tmpfs, and every ``hidden`` folder (the test's raw data) is covered by an empty tmpfs.
The namespaces have no route off the bridge and the machine does not forward, so their traffic stays among
them and the host side. Ray runs as ``ray start`` in each host (ray_stack.md §6.2); SeaweedFS and
``mlflow server`` run on the host side, bound to the bridge address.

Every name (namespaces, links) starts with ``ocn<pid of the pytest process>``. :meth:`NetnsCluster.close`
kills every process in the hosts (``ip netns pids``, by pid) and every process group started on the host
side, then deletes the namespaces and the bridge; it runs from the fixture's ``finally`` and from ``atexit``,
and :func:`sweep_stale` removes what a killed test process left behind (names whose pid is gone).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "ocn"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
RAY = str(BIN / "ray")
GCS_PORT, DASHBOARD_PORT = 6379, 8265  # each host has its own ports: Ray's defaults cannot collide


def unavailable() -> str | None:
    """Why this machine cannot build the cluster, or None when it can (root, iproute2, util-linux, netns)."""
    if not sys.platform.startswith("linux"):
        return "network and mount namespaces need Linux"
    if os.geteuid() != 0:
        return "building network namespaces, veth pairs and a bridge needs root"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _netns_pids(ns: str) -> list[int]:
    done = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def free_subnet() -> str:
    """A ``10.213.N`` (N in 1..254) that no address or route of this machine uses, searched from a start
    that depends on this process's pid, so that two test sessions building at once do not pick the same."""
    used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
    for k in range(254):
        n = (os.getpid() + k) % 254 + 1
        if f"10.213.{n}." not in used:
            return f"10.213.{n}"
    raise RuntimeError("no free 10.213.N.0/24 subnet")


def sweep_stale() -> list[str]:
    """Remove namespaces and links named ``ocn<pid>...`` whose pid is no longer alive (a test process killed
    before its teardown), with every process still inside those namespaces. Returns what was removed."""
    removed = []
    pattern = re.compile(rf"^{PREFIX}(\d+)")

    def stale(name: str) -> bool:
        m = pattern.match(name)
        return bool(m) and not Path(f"/proc/{m.group(1)}").exists()

    for line in _ip("netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if stale(ns):
            for pid in _netns_pids(ns):
                _kill(pid)
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if stale(name):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class Host:
    """One host: ``ns`` its network namespace, ``ip`` its bridge address, ``disk`` the folder that is its /tmp."""

    name: str
    ns: str
    ip: str
    disk: Path
    veth: str
    cpus: int
    starts: int = 0

    def processes(self) -> list[int]:
        return _netns_pids(self.ns)


@dataclass
class NetnsCluster:
    """Three hosts (``hosts[0]`` the Ray head), a bridge, and the host-side servers. Build with :meth:`up`."""

    root: Path
    hidden: tuple[Path, ...]
    cpus: tuple[int, ...] = (1, 3, 3)
    # what every host must see at its own path: the code, the virtual environment and the interpreter
    kept: tuple[Path, ...] = (REPO, Path(sys.prefix), Path(sys.executable).resolve().parent)
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    subnet: str = ""
    hosts: list[Host] = field(default_factory=list)
    groups: list[subprocess.Popen] = field(default_factory=list)  # host-side process groups (servers)
    closed: bool = False
    s3: Any = None  # the host-side servers and the jobs' environment, set by whoever starts them
    mlflow: Any = None
    env: dict[str, str] = field(default_factory=dict)

    # ---- the network --------------------------------------------------------------------------------

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def gateway(self) -> str:
        """The host side's address on the bridge (S3, MLflow and the ``ray job`` client live there)."""
        return f"{self.subnet}.1"

    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def dashboard(self) -> str:
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    def build_network(self) -> None:
        atexit.register(self.close)
        self.subnet = free_subnet()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, cpus in enumerate(self.cpus, start=1):
            host = Host(f"h{i}", f"{self.tag}h{i}", f"{self.subnet}.{i + 1}", self.root / "hosts" / f"h{i}" / "tmp",
                        f"{self.tag}v{i}", cpus)
            host.disk.mkdir(parents=True, exist_ok=True)
            self.hosts.append(host)
            _ip("netns", "add", host.ns)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
            _ip("link", "set", host.veth, "master", self.bridge, "up")
            _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", host.ns, "link", "set", "lo", "up")
        names = "".join(f"{h.ip} {h.ns}\n" for h in self.hosts)
        for host in self.hosts:  # each host resolves its own name to its bridge address (Gloo binds to it)
            (host.disk.parent / "hosts").write_text(f"127.0.0.1 localhost\n{names}")

    # ---- processes in a host ----------------------------------------------------------------------------

    def host_env(self) -> dict[str, str]:
        """A host's environment: its own HOME, token auth off in every process (ray_stack.md §6), no AWS keys
        (jobs bring theirs in the runtime environment)."""
        return {
            "PATH": f"{BIN}{os.pathsep}/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/tmp/home", "LANG": "C.UTF-8", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_TMPDIR": "/tmp",
            "RAY_worker_niceness": "0",  # the hosts share this machine's cores: workers at 15 starve (ray_stack.md §11)
        }

    def in_host(self, host: Host, argv: list[str]) -> list[str]:
        """``argv`` run in ``host``: its network namespace, its own host name (a UTS namespace) resolved to its
        bridge address by its own /etc/hosts, and a new mount namespace (private propagation) where /tmp is the
        host's disk, /dev/shm a private tmpfs and the hidden folders are empty."""
        hide = " ".join(shlex.quote(str(p)) for p in self.hidden)
        keep = "".join(  # the code and Python, when they live under /tmp: seen at the same paths in the host
            f"mkdir -p {shlex.quote(str(host.disk / rel))}\n"
            f"mount --bind {shlex.quote(str(path))} {shlex.quote(str(host.disk / rel))}\n"
            for path, rel in _under_tmp(self.kept))
        script = (
            "set -e\n"
            f"hostname {host.ns}\n"
            f"mount --bind {shlex.quote(str(host.disk.parent / 'hosts'))} /etc/hosts\n"
            f"{keep}"
            f"mount --rbind {shlex.quote(str(host.disk))} /tmp\n"
            "mount -t tmpfs -o size=512m,mode=1777 tmpfs /dev/shm\n"
            f"for d in {hide}; do if [ -e \"$d\" ]; then mount -t tmpfs -o size=1m,mode=0755 tmpfs \"$d\"; fi; done\n"
            "mkdir -p /tmp/home\n"
            "cd /tmp\n"  # the caller's folder may be hidden now (a checkout under /tmp): Ray's children need a real one
            'exec "$@"\n'
        )
        return ["ip", "netns", "exec", host.ns, "unshare", "--mount", "--uts", "--propagation", "private", "--",
                "sh", "-c", script, "sh", *argv]

    def run_in(self, host: Host, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.in_host(host, argv), env=self.host_env(), capture_output=True, text=True,
                              timeout=timeout, start_new_session=True, cwd="/")

    def start_ray(self, host: Host) -> None:
        """``ray start`` in ``host``: the head (GCS, dashboard for ``ray job submit``) or a worker joining it.
        Every node gets its own memory and object-store size (the machine's would be announced by each)."""
        common = [f"--node-ip-address={host.ip}", f"--num-cpus={host.cpus}", "--memory=3000000000",
                  "--object-store-memory=200000000", "--disable-usage-stats"]
        if host is self.head:
            argv = [RAY, "start", "--head", f"--port={GCS_PORT}", f"--dashboard-host={host.ip}",
                    f"--dashboard-port={DASHBOARD_PORT}", "--include-dashboard=true", "--temp-dir=/tmp/ray",
                    *common]
        else:
            argv = [RAY, "start", f"--address={self.head.ip}:{GCS_PORT}", *common]
        for _ in range(2):  # once more after a failed start (e.g. a dashboard module missing its start-up window)
            done = self.run_in(host, argv, timeout=180)
            host.starts += 1
            (host.disk.parent / f"ray-start-{host.starts}.log").write_text(done.stdout + done.stderr)
            if done.returncode == 0:
                return
            self.kill_host(host)  # what the failed start left running
        raise RuntimeError(f"ray start in {host.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")

    def kill_host(self, host: Host) -> list[int]:
        """SIGKILL every process of ``host`` (its raylet, agents and workers), by pid; returns the pids."""
        killed: list[int] = []
        for _ in range(20):  # a dying raylet may still be starting a worker: repeat until the host is empty
            pids = host.processes()
            if not pids:
                return killed
            for pid in pids:
                _kill(pid)
            killed += pids
            time.sleep(0.3)
        raise RuntimeError(f"{host.name} still has processes after SIGKILL: {host.processes()}")

    # ---- the cluster ------------------------------------------------------------------------------------

    def start_nodes(self) -> None:
        """``ray start`` in every host, the head first; returns when all are alive."""
        self.start_ray(self.head)
        wait_until(lambda: urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2).status == 200, 90,
                   "the head's dashboard")
        for host in self.hosts[1:]:
            self.start_ray(host)
        self.wait_for_nodes(len(self.hosts))

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        return [n.__dict__ if hasattr(n, "__dict__") else dict(n) for n in
                list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)]

    def wait_for_nodes(self, count: int, timeout: float = 120) -> list[dict]:
        wait_until(lambda: len(self.alive_nodes()) == count, timeout, f"{count} alive Ray nodes")
        return self.alive_nodes()

    def server(self, popen_and_value):
        """Keep a host-side server's process group for the teardown; returns its value."""
        proc, value = popen_and_value
        self.groups.append(proc)
        return value

    def close(self) -> None:
        """Kill every process this cluster started, delete its namespaces, veths and bridge. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for host in self.hosts:
            try:
                self.kill_host(host)
            except RuntimeError:
                pass
        for proc in self.groups:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait(10)
        for host in self.hosts:
            _ip("netns", "del", host.ns, check=False)  # takes the veth pair with it
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Anything of this cluster still on the machine (namespaces, links, /run/netns mounts, processes)."""
        out = [ln for ln in _ip("netns", "list", check=False).stdout.splitlines() if ln.startswith(self.tag)]
        out += [ln for ln in _ip("-o", "link", "show", check=False).stdout.splitlines() if self.tag in ln]
        out += [ln for ln in Path("/proc/self/mounts").read_text().splitlines() if self.tag in ln]
        out += [f"pid {p.pid}" for p in self.groups if p.poll() is None]
        return out

    # ---- jobs -------------------------------------------------------------------------------------------

    def submit(self, sub_id: str, module_args: list[str], env_vars: dict[str, str], working_dir: Path) -> None:
        """``ray job submit --no-wait`` from the host side to the head's dashboard."""
        cmd = [RAY, "job", "submit", "--address", self.dashboard, "--submission-id", sub_id, "--no-wait",
               "--working-dir", str(working_dir), "--runtime-env-json", json.dumps({"env_vars": env_vars}),
               "--", "python", "-m", *module_args]
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        for _ in range(30):  # the head's job agent comes up a little after the dashboard
            sub = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            if sub.returncode == 0 or "No available agent" not in sub.stderr:
                break
            time.sleep(3)
        if sub.returncode != 0:
            raise RuntimeError(f"ray job submit failed: {sub.stdout[-2000:]}\n{sub.stderr[-3000:]}")

    def job_status(self, sub_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard).get_job_status(sub_id).value

    def wait_job(self, sub_id: str, timeout: float = 600) -> tuple[str, str]:
        """``(final status, logs)``; ``TIMEOUT (...)`` when the job did not end in ``timeout`` s."""
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(self.dashboard)
        value = wait_for_job(client, sub_id, timeout, poll=2)
        logs = client.get_job_logs(sub_id)
        (self.root / "jobs").mkdir(exist_ok=True)
        (self.root / "jobs" / f"{sub_id}.log").write_text(f"{value}\n{logs}")  # kept for a failing test
        return value, logs


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s ({last!r})")


def _under_tmp(paths) -> list[tuple[Path, Path]]:
    """``(path, path relative to /tmp)`` of the distinct ``paths`` under /tmp, outermost first, none inside
    another."""
    out: list[tuple[Path, Path]] = []
    for path in sorted({Path(p).resolve() for p in paths}, key=lambda p: len(p.parts)):
        if path.is_relative_to("/tmp") and path != Path("/tmp") and not any(path.is_relative_to(q) for q, _ in out):
            out.append((path, path.relative_to("/tmp")))
    return out


def wait_for_job(client, sub_id: str, timeout: float, poll: float = 2) -> str:
    """The final status of job ``sub_id`` (a ``JobSubmissionClient``'s), polled every ``poll`` s, or
    ``TIMEOUT (<status>)`` when it did not end within ``timeout`` s."""
    deadline = time.time() + timeout
    status = client.get_job_status(sub_id)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(poll)
        status = client.get_job_status(sub_id)
    return status.value if status.is_terminal() else f"TIMEOUT ({status.value})"
