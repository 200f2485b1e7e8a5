"""Run a teacher's answer program in an operating-system sandbox and read its printed result.

Teacher programs are hostile input. CPython's audit hooks are documented as not a security boundary, so the
isolation is the kernel's, in two layers, each enough on its own to stop the escapes the other one would miss:

1. bubblewrap (`bwrap`): new user, mount, PID, network, IPC, UTS and cgroup namespaces; the program runs as
   `nobody` with no capabilities, sees only a read-only view of the system libraries and the interpreter, a
   16 MiB writable tmpfs as its working directory and nothing else of the filesystem (no run directory, no
   /etc, no home), has no network interface but loopback, and dies with its parent.
2. A seccomp filter, compiled here by libseccomp (pyseccomp) and loaded by the sandboxed interpreter before the
   first line of the program: no execve, no new processes (fork, vfork, clone without CLONE_THREAD), no
   sockets, no ptrace or cross-process memory access, no new namespaces or mounts.

Resource limits (CPU seconds, address space, file size, open files) and a wall-clock kill of the whole
process group stay. Where bwrap or libseccomp is missing, or the kernel refuses the namespaces, `require()`
says what is missing, and program mode refuses to start rather than running programs unguarded.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from selfplay.errors import SelfPlayError
from selfplay.verify.answers import normalize

MAX_OUTPUT_CHARS = 10_000
NOBODY = 65534
WORKDIR = "/sandbox"
WORKDIR_BYTES = 16 << 20
CLONE_THREAD = 0x00010000

# Denied with EPERM. Threads stay possible (clone with CLONE_THREAD); clone3 answers ENOSYS, which makes the
# C library fall back to clone, whose flags the filter can read.
DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "socket", "socketpair", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf",
    "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "io_uring_setup",
)

# Runs inside the sandbox: read the program from stdin, load the seccomp filter (argv[1], hex of the compiled
# BPF), then run the program. Nothing of the program runs before the filter is in place.
_BOOT = r'''
import ctypes, sys
source = sys.stdin.read()
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
bpf = bytes.fromhex(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(Program(len(bpf) // 8, bpf)), 0, 0):
    raise SystemExit("sandbox: the seccomp filter was refused (errno %d)" % ctypes.get_errno())
del ctypes, sys, Program, bpf, libc
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
'''


class SandboxUnavailable(SelfPlayError):
    """This machine cannot isolate teacher programs; program mode must not start."""


@dataclass
class ProgramResult:
    answer: str | None  # the last printed line, normalised; None if the program failed
    status: str  # "ok", "timeout", "error: ...", "no output"
    stdout: str
    stderr: str


@functools.cache
def _seccomp_filter() -> str:
    """The compiled BPF program, as hex for the sandboxed interpreter's command line."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as error:  # RuntimeError: pyseccomp found no libseccomp
        raise SandboxUnavailable(f"program mode needs libseccomp through pyseccomp: {error}") from error
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        rules.add_rule(deny, name)
    rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as compiled:  # libseccomp writes to a file descriptor
        rules.export_bpf(compiled)
        compiled.seek(0)
        return compiled.read().hex()


def _system_paths() -> list[str]:
    """bwrap arguments that show the system libraries and the interpreter, read-only, at their own paths."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):  # merged-/usr systems make these symlinks
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    if os.path.commonpath([sys.base_prefix, "/usr"]) != "/usr":  # e.g. pyenv or conda under a home directory
        args += ["--ro-bind", sys.base_prefix, sys.base_prefix]
    return args


def _command() -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("program mode needs bubblewrap: `bwrap` is not on PATH "
                                 "(Debian/Ubuntu: apt-get install bubblewrap)")
    interpreter = os.path.join(sys.base_prefix, "bin", os.path.basename(os.path.realpath(sys.executable)))
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY),
        "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv",
        *_system_paths(), "--proc", "/proc", "--dev", "/dev",
        "--size", str(WORKDIR_BYTES), "--tmpfs", WORKDIR, "--chdir", WORKDIR, "--remount-ro", "/",
        interpreter, "-I", "-S", "-B", "-c", _BOOT, _seccomp_filter(),
    ]


def _limits(timeout: float, memory_mb: int):
    def apply() -> None:
        seconds = max(1, int(timeout) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(code: str, timeout: float = 5.0, memory_mb: int = 512) -> ProgramResult:
    """Run `code` isolated; its last printed line, normalised, is the answer."""
    process = subprocess.Popen(
        _command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=_limits(timeout, memory_mb),
    )
    try:
        stdout, stderr = process.communicate(code.encode(errors="replace"), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # bwrap's own group; the sandbox dies with bwrap
        stdout, _ = process.communicate()
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


def require() -> None:
    """Raise SandboxUnavailable, saying what is missing, unless a program can run isolated here."""
    result = run_program("print(6 * 7)")
    if result.answer != "42":
        raise SandboxUnavailable(f"program mode cannot start its sandbox on this machine: {result.status}\n"
                                 f"{result.stderr.strip()}")
