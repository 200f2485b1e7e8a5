"""Run a teacher's answer program in a sandbox and read its printed result.

Layers, each enough to stop a different escape:
1. A separate Python process (`-I -S`: no site-packages, no environment), in a new session so the whole
   process group is killed on timeout, with an empty temporary working directory and an empty environment.
2. Resource limits: CPU seconds, address space (memory), file size, open files, and process count.
3. When run as root: a fresh network namespace (no interfaces but a down loopback) where the kernel allows it,
   and the program runs as the unprivileged user `nobody`, so files outside its directory are read-only to it
   and the process limit applies.
4. A Python audit hook installed before the program runs (it cannot be removed from Python code): no
   sockets, no subprocesses or forks, no ctypes, and no writing, deleting or renaming outside the directory.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from selfplay.verify.answers import normalize

NOBODY = 65534
CLONE_NEWNET = 0x40000000
MAX_OUTPUT_CHARS = 10_000

# Runs inside the sandboxed interpreter before the program. `root` is the sandbox directory.
_GUARD = r'''
import os, sys
root = os.path.realpath(os.getcwd())
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "ctypes.", "os.setuid", "os.chroot", "pty.", "webbrowser.")
PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.truncate": 1,
               "os.rename": 2, "os.link": 2, "os.symlink": 2, "shutil.rmtree": 1, "shutil.move": 2, "os.utime": 1}

def inside(path):
    try:
        path = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "/proc/self/fd/%d" % path)
    except Exception:
        return False
    return path == root or path.startswith(root + os.sep)

def hook(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError("sandbox: %s is not allowed" % event)
    if event == "open" and len(args) > 1:
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        if writing and args[0] is not None and not inside(args[0]):
            raise PermissionError("sandbox: writing outside the sandbox is not allowed")
    elif event in PATH_EVENTS:
        for path in args[:PATH_EVENTS[event]]:
            if path is not None and not inside(path):
                raise PermissionError("sandbox: %s outside the sandbox is not allowed" % event)

sys.addaudithook(hook)
del hook
source = open("program.py").read()
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
'''


@dataclass
class ProgramResult:
    answer: str | None  # the last printed line, normalised; None if the program failed
    status: str  # "ok", "timeout", "error: ...", "no output"
    stdout: str
    stderr: str


def _limit(timeout: float, memory_mb: int, as_root: bool):
    def apply() -> None:
        os.setsid()
        seconds = max(1, int(timeout) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() == 0:  # no network at all, where the kernel lets this container make a namespace
            ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
        if as_root:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0) if as_root else (64, 64))

    return apply


def _others_can_run(path: str) -> bool:
    """Can an unprivileged user reach and run this interpreter? (Not when it lives under /root, say.)"""
    path = os.path.realpath(path)
    parts = [path] + [os.path.dirname(path)]
    while parts[-1] != "/":
        parts.append(os.path.dirname(parts[-1]))
    return os.stat(path).st_mode & 0o005 == 0o005 and all(os.stat(p).st_mode & 0o001 for p in parts[1:])


def run_program(code: str, timeout: float = 5.0, memory_mb: int = 512) -> ProgramResult:
    workdir = tempfile.mkdtemp(prefix="selfplay-sandbox-")
    # Drop to `nobody` only where it can still start Python; otherwise the audit hook and limits stand alone.
    as_root = os.geteuid() == 0 and _others_can_run(sys.executable)
    try:
        with open(os.path.join(workdir, "program.py"), "w") as handle:
            handle.write(code)
        if as_root:
            os.chown(workdir, NOBODY, NOBODY)
            os.chown(os.path.join(workdir, "program.py"), NOBODY, NOBODY)
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limit(timeout, memory_mb, as_root),
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return ProgramResult(None, "timeout", stdout.decode(errors="replace")[:MAX_OUTPUT_CHARS], "")
        out = stdout.decode(errors="replace")[:MAX_OUTPUT_CHARS]
        err = stderr.decode(errors="replace")[-MAX_OUTPUT_CHARS:]
        if process.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {process.returncode}"
            if process.returncode < 0:
                last = f"killed by signal {-process.returncode}"
            return ProgramResult(None, f"error: {last}", out, err)
        lines = [line for line in out.splitlines() if line.strip()]
        answer = normalize(lines[-1]) if lines else ""
        if not answer or len(answer) > 200:
            return ProgramResult(None, "no output", out, err)
        return ProgramResult(answer, "ok", out, err)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
