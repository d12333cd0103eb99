"""Start a sockbench server as a subprocess, wait until it is ready, and always clean up.

:func:`run_server` is the one way tests and the benchmark runner start a
server. It runs ``python -m servers MODEL SERVICE [options]`` in a new session
(so the server and every child it forks share one process group that can be
found and, if need be, killed as a whole), optionally pinned to CPUs, and
reads the server's ready line::

    with run_server("forking", "echo", ServerOptions(max_children=2)) as server:
        socket.create_connection((server.host, server.port))

Readiness is event-driven: the launcher ``select``\\ s on the server's stdout
pipe until the JSON line arrives, the process exits, or ``ready_timeout_s``
passes. Nothing sleeps waiting for a port. Stopping waits on a pidfd, also
without polling.

Error handling
--------------
:class:`ServerStartError` when the server exits before it is ready, prints
something other than a ready line, or is not ready in time; the message
carries the exit status and the tail of its stderr, which is where the
server says what was wrong. :class:`ServerLeftoverError` when processes of the
server's session outlive it (they are killed first, then reported).

Resource handling
-----------------
The server is stopped (SIGTERM, then SIGKILL to its process group after
``timeout_s``) and reaped when the ``with`` block ends, whether normally or by
any exception, KeyboardInterrupt included; also when starting fails. Its
stderr goes to a file, never a pipe, so a chatty server can never block on a
full pipe; a temporary file is removed at the end, a ``stderr_path`` given by
the caller is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from servers.config import ServerOptions
from servers.processes import KILL_WAIT_S, stop, wait_exit

#: Grace for processes of a stopped server's session to vanish on their own
#: (an orphaned child being reaped by init) before they count as left over.
LEFTOVER_GRACE_S = 1.0

#: Bytes read from the stdout pipe per ``os.read``: a ready line is ~150 bytes.
READ_SIZE = 4096

#: The directory holding the ``servers`` package, put first on the server's
#: PYTHONPATH so the subprocess runs the same code as the launcher imported.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """The server did not become ready; the message has its exit status and stderr tail."""


class ServerLeftoverError(RuntimeError):
    """Processes of the server's session were still running after it stopped (they have been killed)."""

    def __init__(self, message: str, pids: list[int]) -> None:
        super().__init__(message)
        self.pids = pids


class ServerProcess:
    """A running server started by :func:`run_server`."""

    def __init__(self, model: str, service: str, popen: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.model = model
        self.service = service
        self.popen = popen
        self.stderr_path = stderr_path
        self.ready: dict[str, Any] = {}
        #: Anything the server wrote to stdout after its ready line but a stop line (should stay empty).
        self.extra_stdout = b""
        #: The server's stop line (``worker_restarts`` of prefork and reuseport), ``{}`` without one.
        self.stopped: dict[str, Any] = {}
        #: True when stop() had to SIGKILL because SIGTERM was not enough in time.
        self.killed = False
        self._stdout_buffer = bytearray()
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def host(self) -> str:
        return str(self.ready["host"])

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def alive(self) -> bool:
        """True while the server process has not exited."""
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server and its live descendants, so far."""
        total = 0.0
        root = psutil.Process(self.pid)
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stderr_tail(self, n_lines: int = 20) -> str:
        """The last ``n_lines`` lines the server wrote to stderr."""
        try:
            text = self.stderr_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-n_lines:])

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM the server, wait up to ``timeout_s``, then SIGKILL its process group; reap it.

        Returns the exit status (negative: killed by that signal), as
        ``Popen.returncode``; None only if even SIGKILL did not end it.
        Calling it again returns the same status.
        """
        if not self._stopped:
            self._stopped = True
            self.killed = stop(self.popen, timeout_s)
            self._collect_stdout()
        return self.popen.returncode

    def kill_group(self) -> None:
        """SIGKILL every process of the server's process group (the server included, if alive)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # even after the leader is reaped: its group may live on

    def leftover_processes(self) -> list[int]:
        """PIDs of processes of the server's session other than an already reaped server (zombies count)."""
        found = []
        for pid in psutil.pids():
            try:
                if os.getsid(pid) == self.pid:
                    found.append(pid)
            except (ProcessLookupError, PermissionError):
                continue
        if self.popen.returncode is None and self.pid in found:
            return found  # the server itself is still there
        return [pid for pid in found if pid != self.pid]

    def _collect_stdout(self) -> None:
        """Keep whatever is left in the stdout pipe (without blocking: children may hold it open), then close it."""
        stdout = self.popen.stdout
        if stdout is None or stdout.closed:
            return
        fd = stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                break
            self._stdout_buffer += chunk
        rest = []
        for line in bytes(self._stdout_buffer).splitlines(keepends=True):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("event") == "stopped" and not self.stopped:
                self.stopped = parsed
            else:
                rest.append(line)
        self.extra_stdout = b"".join(rest)
        stdout.close()

    def _read_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the ready line (bounded by ``timeout_s``), parse and return it."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._stdout_buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise self._start_error(f"was not ready within {timeout_s:g} s")
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                wait_exit(self.popen, KILL_WAIT_S)
                raise self._start_error("exited before it was ready")
            self._stdout_buffer += chunk
        line, _, rest = bytes(self._stdout_buffer).partition(b"\n")
        self._stdout_buffer = bytearray(rest)
        try:
            ready = json.loads(line)
        except ValueError:
            ready = None
        if not isinstance(ready, dict) or ready.get("event") != "ready" or "port" not in ready:
            raise self._start_error(f"printed {line[:200]!r} instead of a ready line")
        self.ready = ready
        return ready

    def _start_error(self, what: str) -> ServerStartError:
        status = self.stop()
        return ServerStartError(
            f"server {self.model} {self.service} (pid {self.pid}) {what}; exit status {status}; "
            f"stderr tail:\n{self.stderr_tail() or '(empty)'}"
        )


def server_command(model: str, service: str, options: ServerOptions) -> list[str]:
    """The command line :func:`run_server` runs."""
    return [sys.executable, "-m", "servers", model, service, *options.to_argv()]


def _server_env(env: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(os.environ if env is None else env)
    paths = [str(PROJECT_ROOT), *filter(None, result.get("PYTHONPATH", "").split(os.pathsep))]
    result["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return result


@contextlib.contextmanager
def run_server(
    model: str,
    service: str,
    options: ServerOptions | None = None,
    *,
    ready_timeout_s: float = 15.0,
    cpus: set[int] | None = None,
    stderr_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    rlimits: Mapping[int, int] | None = None,
) -> Iterator[ServerProcess]:
    """Start ``python -m servers model service [options]``, yield it once ready, stop it at the end.

    ``cpus`` pins the server (and every process it forks) with
    ``sched_setaffinity`` right after it starts. ``stderr_path`` keeps the
    server's stderr in that file (default: a temporary file, removed at the
    end). ``env`` replaces the environment (the project root is added to
    PYTHONPATH either way). ``rlimits`` lowers resource limits of the server
    right after it starts (``{resource.RLIMIT_NOFILE: 64}``: the soft limit,
    set with ``prlimit`` from outside rather than a ``preexec_fn``, which is
    unsafe with threads); what it forks or execs inherits them.

    Raises :class:`ServerStartError` if it is not ready in ``ready_timeout_s``
    or exits first; :class:`ServerLeftoverError` at the end if processes of
    its session survived it (when no other exception is on its way).
    """
    options = options or ServerOptions()
    temporary = stderr_path is None
    if stderr_path is None:
        fd, name = tempfile.mkstemp(prefix=f"sockbench-{model}-{service}-", suffix=".stderr")
        os.close(fd)
        stderr_path = Path(name)
    server: ServerProcess | None = None
    try:
        with open(stderr_path, "wb") as stderr:
            popen = subprocess.Popen(
                server_command(model, service, options),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,
                start_new_session=True,
                env=_server_env(env),
            )
        server = ServerProcess(model, service, popen, stderr_path)
        if cpus is not None:
            os.sched_setaffinity(popen.pid, cpus)
        for limit, soft in (rlimits or {}).items():
            resource.prlimit(popen.pid, limit, (soft, resource.getrlimit(limit)[1]))
        server._read_ready(ready_timeout_s)
        yield server
    finally:
        leftovers = _finish(server)
        if temporary:
            stderr_path.unlink(missing_ok=True)
    if leftovers:
        raise ServerLeftoverError(
            f"server {model} {service} (pid {server.pid if server else '?'}) left processes behind: {leftovers} "
            "(killed)",
            leftovers,
        )


def _finish(server: ServerProcess | None) -> list[int]:
    """Stop ``server``; kill and return whatever of its session outlived it."""
    if server is None:
        return []
    server.stop()
    leftovers = server.leftover_processes()
    if leftovers:
        procs = []
        for pid in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        _, alive = psutil.wait_procs(procs, timeout=LEFTOVER_GRACE_S)
        server.kill_group()
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=KILL_WAIT_S)
        leftovers = [proc.pid for proc in alive]
    return leftovers


__all__ = ["ServerLeftoverError", "ServerProcess", "ServerStartError", "run_server", "server_command"]
