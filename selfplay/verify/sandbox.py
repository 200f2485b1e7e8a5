"""Run a teacher's answer program in an operating-system sandbox and read its printed result.

Teacher programs are hostile input, written by a policy rewarded for whatever passes. CPython's audit hooks are
documented as not a security boundary, so the isolation is the kernel's. Each class of attack has its own
layer, and no layer trusts another:

| what a program could try                          | what stops it                                              |
|---------------------------------------------------|------------------------------------------------------------|
| act as host root (a root caller's userns maps the | bwrap is started as an unprivileged user (`nobody`) when   |
| sandbox's user to uid 0)                          | the caller is root: no sandbox uid maps to host root       |
| kernel interfaces: /proc/sys (core_pattern),      | no procfs, no sysfs; / is a read-only tmpfs showing only   |
| /proc/1/environ, /proc/1/mem, /sys                | the interpreter and system libraries                       |
| an unfiltered helper in its namespaces            | `--as-pid-1`: the program is PID 1, bwrap keeps no init    |
|                                                   | inside; bwrap itself runs with an empty environment        |
| exec, fork, threads, sockets, ptrace, IPC, memfd, | a seccomp allow-list of what a pure computation needs      |
| namespaces, sleeping or blocking forever          | (its own descriptors, memory, clocks, exit); all else      |
|                                                   | answers EPERM, so it cannot wait without burning CPU time  |
| memory outside its limit (/dev, SysV IPC, tmpfs,  | RLIMIT_AS; nothing writable but its two output files;      |
| pipes)                                            | /dev holds read-only null, zero and urandom only           |
| flooding the caller with output                   | output goes to files the kernel caps (RLIMIT_FSIZE); only  |
|                                                   | those bytes are read back, and the strings kept are capped |
| outliving its wall clock                          | killed at the deadline and waited for, every wait bounded; |
|                                                   | if the caller dies first: die-with-parent, and RLIMIT_CPU  |

Where bwrap or libseccomp is missing, the kernel refuses the namespaces, or no interpreter is readable by the
unprivileged user, `require()` says what is missing, and program mode refuses to start rather than running
programs unguarded.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import termios
from dataclasses import dataclass

from selfplay.errors import SelfPlayError
from selfplay.verify.answers import normalize

MAX_PROGRAM_BYTES = 64 << 10  # a teacher's program is a few hundred bytes; a longer one is not run
MAX_OUTPUT_BYTES = 16 << 10  # per stream: the kernel's file-size limit, so the caller never reads more
MAX_STATUS_CHARS = 200  # the status line that reaches curriculum.jsonl
MAX_ANSWER_CHARS = 200
OPEN_FILES = 16
SANDBOX_UID = 65534  # `nobody`: bwrap runs as this user when the caller is root
SYSTEM_PYTHON = "/usr/bin/python3"  # an interpreter any user can read, when the caller's is in a closed home
KILL_WAIT_SECONDS = 1.0  # how long a killed sandbox may take to be gone

# What a pure computation needs once CPython is running: I/O on descriptors it already holds or opens read-only
# from the read-only view, memory, clocks, its own signal mask, exit. Everything else answers EPERM. There is
# nothing to block on or sleep with, so a program that will not end burns CPU time and meets RLIMIT_CPU.
ALLOWED_SYSCALLS = (
    "read", "readv", "pread64", "write", "writev", "lseek", "close", "dup", "dup2", "dup3", "fcntl",
    "fstat", "stat", "lstat", "newfstatat", "statx", "open", "openat", "getdents64", "readlink", "readlinkat",
    "access", "faccessat", "faccessat2", "getcwd",
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "getrandom",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "uname",
    "exit", "exit_group",
)

# Runs inside the sandbox, before any of the program: read the program, lower the limits, load the seccomp
# filter (argv: hex of the compiled BPF, then the limits), then run the program.
_BOOT = r'''
import ctypes, resource, sys
source = sys.stdin.read()
cpu, memory, output, files = (int(value) for value in sys.argv[2:6])
for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, output),
                     (resource.RLIMIT_NOFILE, files), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_MEMLOCK, 0)):
    resource.setrlimit(limit, (value, value))
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
bpf = bytes.fromhex(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(Program(len(bpf) // 8, bpf)), 0, 0):
    raise SystemExit("sandbox: the seccomp filter was refused (errno %d)" % ctypes.get_errno())
del ctypes, resource, sys, Program, bpf, libc, cpu, memory, output, files, limit, value
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
'''


class SandboxUnavailable(SelfPlayError):
    """This machine cannot isolate teacher programs; program mode must not start."""


@dataclass
class ProgramResult:
    answer: str | None  # the last printed line, normalised; None if the program failed
    status: str  # "ok", "timeout", "error: ...", "no output"; at most MAX_STATUS_CHARS
    stdout: str  # at most MAX_OUTPUT_BYTES of it
    stderr: str


@functools.cache
def _seccomp_filter() -> str:
    """The compiled BPF program, as hex for the sandboxed interpreter's command line."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as error:  # RuntimeError: pyseccomp found no libseccomp
        raise SandboxUnavailable(f"program mode needs libseccomp through pyseccomp: {error}") from error
    rules = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
    for name in ALLOWED_SYSCALLS:
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0:  # e.g. no `open` or `stat` on arm64
            rules.add_rule(seccomp.ALLOW, name)
    rules.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.EQ, termios.TCGETS))  # isatty(), nothing else
    with tempfile.TemporaryFile() as compiled:  # libseccomp writes to a file descriptor
        rules.export_bpf(compiled)
        compiled.seek(0)
        return compiled.read().hex()


def sandbox_uid() -> int:
    """The host user bwrap runs as: the caller's own, or `nobody` when the caller is root (a user namespace
    made by root maps its users onto root's)."""
    return SANDBOX_UID if os.geteuid() == 0 else os.geteuid()


def _others_can_run(path: str) -> bool:
    """Can a user who is neither owner nor group run `path` (every directory above it searchable)?"""
    path = os.path.realpath(path)
    folders = [path] + [os.path.dirname(path)]
    while folders[-1] != "/":
        folders.append(os.path.dirname(folders[-1]))
    try:
        return all(os.stat(p).st_mode & stat.S_IXOTH for p in folders) and bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


@functools.cache
def _interpreter() -> str:
    """A Python interpreter the sandbox's user can read: the caller's own, else the system's."""
    own = os.path.join(sys.base_prefix, "bin", os.path.basename(os.path.realpath(sys.executable)))
    if sandbox_uid() == os.geteuid() or _others_can_run(own):
        return own
    if _others_can_run(SYSTEM_PYTHON):
        return SYSTEM_PYTHON
    raise SandboxUnavailable(
        f"program mode runs programs as the unprivileged user {SANDBOX_UID} when selfplay runs as root, and that "
        f"user cannot read this interpreter ({own}: a directory above it is closed to other users), nor is there a "
        f"{SYSTEM_PYTHON}. Install the system's python3, or run selfplay as a user other than root.")


def _system_paths(interpreter: str) -> list[str]:
    """bwrap arguments that show the system libraries and the interpreter, read-only, at their own paths."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):  # merged-/usr systems make these symlinks
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(interpreter)))
    if os.path.commonpath([prefix, "/usr"]) != "/usr":  # e.g. pyenv or conda under a home directory
        args += ["--ro-bind", prefix, prefix]
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):
        args += ["--dev-bind", device, device]  # writable nodes that hold nothing, in a read-only /dev
    return args


def _command(timeout: float, memory_mb: int, info_fd: int) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("program mode needs bubblewrap: `bwrap` is not on PATH "
                                 "(Debian/Ubuntu: apt-get install bubblewrap)")
    interpreter = _interpreter()
    limits = [math.ceil(timeout) + 1, memory_mb << 20, MAX_OUTPUT_BYTES, OPEN_FILES]
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID), "--cap-drop", "ALL", "--as-pid-1", "--die-with-parent", "--new-session",
        "--clearenv", "--info-fd", str(info_fd), *_system_paths(interpreter), "--chdir", "/", "--remount-ro", "/",
        interpreter, "-I", "-S", "-B", "-c", _BOOT, _seccomp_filter(), *map(str, limits),
    ]


def run_program(code: str, timeout: float = 5.0, memory_mb: int = 512) -> ProgramResult:
    """Run `code` isolated; its last printed line, normalised, is the answer. Returns within `timeout` plus
    about a second, whatever the program does, with no process of it left."""
    source = code.encode(errors="replace")
    if len(source) > MAX_PROGRAM_BYTES:
        return ProgramResult(None, f"error: a program of over {MAX_PROGRAM_BYTES} bytes is not run", "", "")
    with (tempfile.TemporaryFile() as program, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err,
          tempfile.TemporaryFile() as info):
        program.write(source)
        program.seek(0)
        uid = sandbox_uid()
        process = subprocess.Popen(
            _command(timeout, memory_mb, info.fileno()), stdin=program, stdout=out, stderr=err,
            pass_fds=(info.fileno(),), env={}, start_new_session=True,
            user=uid, group=uid if uid != os.geteuid() else None, extra_groups=[] if uid != os.geteuid() else None,
        )
        if not _wait(process, timeout):
            _kill(process, info)
            return ProgramResult(None, "timeout", _read(out), "")
        stdout, stderr = _read(out), _read(err)
    return _result(process.returncode, stdout, stderr)


def _read(file) -> str:
    file.seek(0)
    return file.read(MAX_OUTPUT_BYTES).decode(errors="replace")


def _wait(process: subprocess.Popen, seconds: float) -> bool:
    """Wait up to `seconds` for `process` to exit, woken the moment it does (Popen.wait(timeout) polls with
    sleeps that grow to 50 ms, longer than most programs run). Returns whether it exited."""
    pidfd = os.pidfd_open(process.pid)
    try:
        select.select([pidfd], [], [], seconds)
    finally:
        os.close(pidfd)
    return process.poll() is not None


def _kill(process: subprocess.Popen, info) -> None:
    """Kill bwrap and the program, and wait (boundedly) until both are gone. The program is in its own session
    and PID namespace; bwrap's info file names its host PID."""
    info.seek(0)
    try:
        pidfd = os.pidfd_open(json.loads(info.read(4096))["child-pid"])
    except (ValueError, KeyError, OSError):  # not started yet, or already gone
        pidfd = None
    os.killpg(process.pid, signal.SIGKILL)
    _wait(process, KILL_WAIT_SECONDS)
    if pidfd is not None:  # bwrap's death kills it too (die-with-parent); this makes sure, and waits
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        select.select([pidfd], [], [], KILL_WAIT_SECONDS)  # readable once the program has exited
        os.close(pidfd)


def _result(returncode: int, stdout: str, stderr: str) -> ProgramResult:
    if returncode != 0:
        if returncode < 0 or returncode > 128:  # a signal: SIGXFSZ is output over the limit, SIGXCPU CPU time
            number = -returncode if returncode < 0 else returncode - 128
            why = {signal.SIGXFSZ: f"output over {MAX_OUTPUT_BYTES} bytes",
                   signal.SIGXCPU: "CPU time limit"}.get(number, f"killed by signal {number}")
        else:
            lines = stderr.strip().splitlines()
            why = lines[-1] if lines else f"exit code {returncode}"
        return ProgramResult(None, f"error: {why}"[:MAX_STATUS_CHARS], stdout, stderr)
    lines = [line for line in stdout.splitlines() if line.strip()]
    answer = normalize(lines[-1][: 4 * MAX_ANSWER_CHARS]) if lines else ""
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return ProgramResult(None, "no output", stdout, stderr)
    return ProgramResult(answer, "ok", stdout, stderr)


def require() -> None:
    """Raise SandboxUnavailable, saying what is missing, unless a program can run isolated here."""
    result = run_program("print(6 * 7)")
    if result.answer != "42":
        raise SandboxUnavailable(f"program mode cannot start its sandbox on this machine (bwrap as uid "
                                 f"{sandbox_uid()}, interpreter {_interpreter()}): {result.status}\n"
                                 f"{result.stderr.strip()}")
