"""A single-node Slurm cluster for tests: munged, slurmctld and slurmd from Debian's packages, on localhost.

`SlurmCluster.start()` writes a munge key, slurm.conf and cgroup.conf into a fresh
directory, starts the three daemons as child processes (private ports and sockets, so
two test runs on one machine do not meet) and waits until the node is idle. Anything
that keeps it from coming up raises `ClusterUnavailable` with the reason (and the
daemon's last log lines), which the test turns into a skip. `stop()` cancels every job,
stops the daemons and ends whatever they left (processes carrying this cluster's
SLURM_CONF in their environment, found by id in /proc).

No accounting database: `AccountingStorageType=accounting_storage/none`, so `sacct`
answers nothing and biobench reads job states with `squeue` (`executors.squeue_states`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

COMMANDS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo")
INSTALL = "apt-get install slurm-wlm munge"


class ClusterUnavailable(Exception):
    """The daemons cannot run here; the message says why."""


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


def _tail(path: Path, n: int = 8) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path.name})"
    return " | ".join(lines[-n:])


class SlurmCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bb-slurm-"))  # short: unix socket paths are limited to 108 bytes
        self.conf = self.dir / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        # At least 4 CPUs declared (SlurmdParameters=config_overrides lets slurmd believe the config), so a test's
        # 4 one-CPU jobs run at once even on a 2-core machine.
        self.cpus = max(4, os.cpu_count() or 1)

    # Starting

    def start(self, timeout: float = 40) -> SlurmCluster:
        missing = [c for c in COMMANDS if shutil.which(c) is None]
        if missing:
            raise ClusterUnavailable(f"{', '.join(missing)} not installed ({INSTALL})")
        if not Path("/proc/self/environ").exists():
            raise ClusterUnavailable("needs /proc to find the processes the daemons leave")
        try:
            self._munge()
            self._slurm(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.out", "wb")
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=self.dir)
        except OSError as err:
            raise ClusterUnavailable(f"cannot start {name}: {err}") from err
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def _wait(self, name: str, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ClusterUnavailable(f"{name} exited with status {proc.returncode}: {_tail(self.dir / f'{name}.out')}")
            time.sleep(0.2)
        raise ClusterUnavailable(f"{what} within {timeout:.0f} s: {_tail(self.dir / f'{name}.out')}")

    def _munge(self) -> None:
        d = self.dir / "munge"
        d.mkdir(mode=0o700)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = d / "munge.socket"
        # --force: munged refuses to run as root, or with its socket under /tmp, without it.
        self._spawn("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={self.socket}",
                               f"--pid-file={d / 'munged.pid'}", f"--seed-file={d / 'seed'}", f"--log-file={d / 'munged.log'}"])  # fmt: skip
        self._wait("munged", self.socket.exists, 15, "munged did not create its socket")
        try:
            cred = subprocess.run(["munge", "-n", "-S", str(self.socket)], capture_output=True, timeout=10, check=True).stdout
            subprocess.run(["unmunge", "-S", str(self.socket)], input=cred, capture_output=True, timeout=10, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            raise ClusterUnavailable(f"munge cannot encode and decode a credential: {err}") from err

    def _slurm(self, timeout: float) -> None:
        ctld_port, d_port = _free_ports(2)
        for sub in ("state", "spool/localhost", "log"):
            (self.dir / sub).mkdir(parents=True)
        mem = int(_mem_mb() * 0.9)
        self.conf.write_text(
            "\n".join([
                f"ClusterName=bb{os.getpid()}",
                "SlurmctldHost=localhost(127.0.0.1)",
                f"SlurmctldPort={ctld_port}",
                f"SlurmdPort={d_port}",
                f"SlurmUser={pwd.getpwuid(os.geteuid()).pw_name}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.socket}",
                f"StateSaveLocation={self.dir / 'state'}",
                f"SlurmdSpoolDir={self.dir / 'spool' / '%n'}",
                f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}",
                f"SlurmdPidFile={self.dir / 'slurmd.pid'}",
                f"SlurmctldLogFile={self.dir / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={self.dir / 'log' / 'slurmd.log'}",
                # No cgroups (a container rarely lets them be managed): processes tracked by their parent ids.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "MpiDefault=none",
                "MailProg=/bin/true",
                "ReturnToService=2",
                "SlurmdParameters=config_overrides",
                "SchedulerType=sched/builtin",
                "MinJobAge=600",
                "KillWait=2",
                "InactiveLimit=0",
                "SlurmctldTimeout=30",
                "SlurmdTimeout=30",
                f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} State=UNKNOWN",
                "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
                "",
            ])
        )  # fmt: skip
        # Nothing uses cgroups (proctrack/linuxproc, task/none); a cgroup.conf of our own keeps the system's out.
        (self.dir / "cgroup.conf").write_text("# No cgroup plugin is used: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none.\n")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", "localhost"])
        self._wait("slurmd", self._node_idle, timeout, "the node did not become idle")

    def _node_idle(self) -> bool:
        try:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is not None:
            raise ClusterUnavailable(f"slurmctld exited: {_tail(self.dir / 'slurmctld.out')}")
        return out.returncode == 0 and out.stdout.strip() == "idle"

    # Using

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)

    def wait_for(self, what: str, cond, timeout: float = 60, poll: float = 0.1):
        """`cond()`'s first truthy value, polled until `timeout`; else an AssertionError naming `what`, with the queue
        and the daemons' logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}\n{self.run('squeue', '-a').stdout}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"{p.name}: {_tail(p, 15)}" for p in sorted([*self.dir.glob("*.out"), *(self.dir / "log").glob("*.log")]))

    # Stopping

    def _leftovers(self) -> list[int]:
        """Processes (not this one) started under this cluster: their environment names its slurm.conf."""
        mark = f"SLURM_CONF={self.conf}".encode()
        out = []
        for env in Path("/proc").glob("[0-9]*/environ"):
            pid = int(env.parent.name)
            if pid == os.getpid():
                continue
            try:
                if mark in env.read_bytes().split(b"\0"):
                    out.append(pid)
            except OSError:
                continue
        return out

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", f"--user={os.geteuid()}", timeout=10)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    q = self.run("squeue", "-h", "-o", "%i", timeout=10)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.3)
            except subprocess.TimeoutExpired:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in self._leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
