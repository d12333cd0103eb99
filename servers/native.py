"""Compile the project's C reference programs on first use, and cache them.

sockbench ships two small C programs as package data (``servers/c/*.c``): an
epoll echo server (the ``c-reference`` model) and a closed-loop echo client.
They measure what the machine can do, so that every Python figure can be shown
beside its ceiling. They are compiled here, with the system C compiler, the
first time they are needed, and reused afterwards.

Design
------
- The cache key is the SHA-256 of the source, the compiler's path and version
  line, and the flags. A changed source or a new compiler gives a new folder;
  a stale binary is never run. Old folders are left behind (they are a few
  tens of KiB each).
- The cache folder is ``$XDG_CACHE_HOME/sockbench/native/<key>/`` (falling back
  to ``~/.cache``), overridable with ``$SOCKBENCH_NATIVE_CACHE``; where it cannot
  be created (a read-only home), ``$TMPDIR/sockbench-native-<uid>/<key>/``.
- Compilation writes a temporary name in the same folder and renames it into
  place, so a concurrent build (two test workers, two benchmark runs) never
  sees a half-written binary: both may compile, and the last rename wins with
  an identical file.
- The compiler is ``$CC`` when set, else the first of ``cc``, ``gcc`` and
  ``clang`` on ``PATH``. Flags are fixed (``-O2``); the programs use only
  libc and Linux's epoll.

Error handling
--------------
A missing compiler (or a platform without epoll) is not an error: :func:`build`
returns ``None`` and :func:`why_unavailable` gives a one-line note the caller
prints before skipping what needed the program. A compiler that is present but
fails is an error: :class:`NativeBuildError` carries the command and the
compiler's output, since that is a bug in the project or a broken toolchain.

Resource handling
-----------------
Temporary files of a failed or interrupted compile are removed. Nothing is
left running: the compiler driver runs in a process group of its own, and a
timeout or any exception while it runs (Ctrl-C, a stop signal turned into an
exception) kills the whole group and reaps the driver, so its ``cc1``/``as``/
``ld`` children do not outlive the build.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

#: Optimisation as a user building by hand would choose; -O2 is what the
#: figures in docs/guide.md were measured with.
CFLAGS: tuple[str, ...] = ("-O2", "-std=gnu11", "-Wall", "-Wextra")

#: Compilers tried in order when $CC is not set.
COMPILER_NAMES: tuple[str, ...] = ("cc", "gcc", "clang")

#: A compile of these few hundred lines takes well under a second; a minute
#: means something is wrong (a hung wrapper, a dead NFS cache).
COMPILE_TIMEOUT_S = 60.0


class NativeBuildError(RuntimeError):
    """A C compiler exists but failed; the message holds its command line and output."""


def compiler() -> str | None:
    """Path of the C compiler to use, or None when there is none."""
    cc = os.environ.get("CC")
    if cc:
        found = shutil.which(cc)
        if found:
            return found
    for name in COMPILER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def why_unavailable() -> str:
    """One line saying why the C programs cannot be built here, or "" when they can."""
    if not sys.platform.startswith("linux"):
        return f"C reference programs skipped: they use Linux's epoll, and this is {sys.platform}"
    if compiler() is None:
        wanted = "$CC, " + ", ".join(COMPILER_NAMES)
        return f"C reference programs skipped: no C compiler found on PATH (looked for {wanted}); install gcc to measure ceilings"
    return ""


def available() -> bool:
    """True when :func:`build` can produce binaries here."""
    return why_unavailable() == ""


def source_path(name: str) -> Path:
    """Path of ``servers/c/<name>.c`` (package data)."""
    path = Path(str(resources.files("servers").joinpath("c", f"{name}.c")))
    if not path.is_file():
        raise FileNotFoundError(f"no C program named {name!r}: {path} does not exist")
    return path


def cache_root() -> Path:
    """Folder under which compiled programs are cached."""
    override = os.environ.get("SOCKBENCH_NATIVE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sockbench" / "native"


@functools.lru_cache(maxsize=8)
def _compiler_version(cc: str) -> str:
    """First line of ``cc --version``: part of the cache key."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except OSError as exc:
        raise NativeBuildError(f"cannot run the C compiler {cc}: {exc}") from None
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0] if lines else "unknown"


def cache_key(source: bytes, cc: str, extra: tuple[str, ...] = ()) -> str:
    """Hex SHA-256 of everything that decides the binary's content (``extra``: further compiler arguments)."""
    h = hashlib.sha256()
    for part in (source, cc.encode(), _compiler_version(cc).encode(), " ".join(CFLAGS + extra).encode()):
        h.update(len(part).to_bytes(8, "little"))  # length-prefixed so parts cannot run together
        h.update(part)
    return h.hexdigest()


def build(name: str, source: Path | None = None, extra: tuple[str, ...] = ()) -> Path | None:
    """Return the path of the compiled program ``name``, compiling it if needed.

    ``source`` defaults to ``servers/c/<name>.c``; another package's C program
    passes its own path. ``extra`` are compiler arguments placed after the
    source (defines, ``-l`` libraries); they are part of the cache key.
    Returns None when no compiler exists (see :func:`why_unavailable`).
    Raises :class:`NativeBuildError` when the compiler fails.
    """
    if not available():
        return None
    cc = compiler()
    assert cc is not None  # available() checked it
    src = source if source is not None else source_path(name)
    key = cache_key(src.read_bytes(), cc, extra)
    folder = cache_root() / key
    target = folder / name
    if target.is_file() and os.access(target, os.X_OK):
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home (some CI runners): a per-user folder in the temp dir
        folder = Path(tempfile.gettempdir()) / f"sockbench-native-{os.getuid()}" / key
        target = folder / name
        if target.is_file() and os.access(target, os.X_OK):
            return target
        folder.mkdir(parents=True, exist_ok=True)
    _compile(cc, src, folder, target, extra)
    return target


def _run_compiler(cmd: list[str]) -> tuple[int, str, str]:
    """Run the compiler in a new process group; kill the group on a timeout or any exception.

    ``subprocess.run`` kills only the driver it started: the driver's own
    children (``cc1``, ``as``) would be orphaned and go on compiling.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=COMPILE_TIMEOUT_S)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    return proc.returncode, stdout, stderr


def _compile(cc: str, src: Path, folder: Path, target: Path, extra: tuple[str, ...] = ()) -> None:
    """Compile ``src`` to a temporary name in ``folder`` and rename it to ``target``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [cc, *CFLAGS, "-o", str(tmp), str(src), *extra]
    try:
        try:
            returncode, stdout, stderr = _run_compiler(cmd)
        except subprocess.TimeoutExpired:
            raise NativeBuildError(f"{' '.join(cmd)} took more than {COMPILE_TIMEOUT_S:.0f} s") from None
        if returncode != 0:
            output = (stderr + stdout).strip()
            raise NativeBuildError(f"compiling {src.name} failed (exit {returncode}): {' '.join(cmd)}\n{output}")
        tmp.chmod(0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
