"""Teacher programs are hostile: every attack must be contained, whoever runs selfplay, and the host must not feel it.

Each attack runs twice, each time from a fresh caller process: as the user running the tests (root in CI, the
case that matters most), and as the unprivileged user `nobody` through Debian's own interpreter (the way a user
without root runs selfplay). The caller reports host-side facts, not only what the program printed: how long
`run_program` took, how much its peak memory grew, which host users the sandbox's processes ran as, and whether
any of them is left. Routes that would change the host if open (the kernel's core pattern) are probed by
opening them for writing, never by writing.
"""

import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import selfplay
from selfplay.verify import sandbox
from selfplay.verify.sandbox import MAX_OUTPUT_BYTES, MAX_STATUS_CHARS, ProgramResult, SandboxUnavailable, run_program

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
CANARY_VARIABLE = "SELFPLAY_TEST_CANARY"
CANARY = "canary-" + secrets.token_hex(8)

# Runs `run_program` once and reports what the host saw. The sandbox's processes are recognised by a phrase of
# the boot code on their command line (bwrap's and the interpreter's).
_CALLER = r"""
import json, os, resource, sys, threading, time
from dataclasses import asdict
sys.path.insert(0, sys.argv[1])
from selfplay.verify.sandbox import run_program

def sandboxed():
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"the seccomp " + b"filter was refused" not in f.read():  # split: not this script's own
                    continue
            with open(f"/proc/{pid}/status") as f:
                found[int(pid)] = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration):
            pass
    return found

def running(pid):  # neither gone nor a zombie (an exited process whose parent has not reaped it)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

seen, done = {}, threading.Event()
def watch():
    while not done.is_set():
        seen.update(sandboxed())
        time.sleep(0.01)
code = sys.stdin.read()
threading.Thread(target=watch, daemon=True).start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
result = run_program(code, float(sys.argv[2]), int(sys.argv[3]))
seconds = time.monotonic() - start
done.set()
left = len(set(sandboxed()) | {pid for pid in seen if running(pid)})
print(json.dumps({"result": asdict(result), "seconds": seconds, "uids": sorted(set(seen.values())), "left": left,
                  "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def _nobody_tree(root: Path) -> Path:
    """The parts of the package the sandbox needs, and nothing that imports third-party code (Debian's interpreter
    has none of it); pyseccomp is one pure-Python file."""
    package = Path(selfplay.__file__).parent
    for relative in ("__init__.py", "errors.py", "verify/answers.py", "verify/sandbox.py"):
        (root / "selfplay" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(package / relative, root / "selfplay" / relative)
    (root / "selfplay" / "verify" / "__init__.py").write_text("")
    import pyseccomp

    shutil.copy(pyseccomp.__file__, root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755)
    return root


class Outcome:
    """What one call of `run_program` did, seen from the host."""

    def __init__(self, report: dict):
        self.result = ProgramResult(**report["result"])
        self.seconds, self.uids, self.left = report["seconds"], report["uids"], report["left"]
        self.rss_growth_mib = report["rss_growth_mib"]

    @property
    def printed(self) -> str:
        return self.result.stdout + self.result.stderr


@pytest.fixture(scope="module", params=["caller", "nobody"])
def run(request, tmp_path_factory):
    """run(code, timeout, memory_mb) -> Outcome, from a fresh caller: the test's user, or `nobody`."""
    if request.param == "caller":
        command, tree = [sys.executable], Path(selfplay.__file__).parent.parent
    else:
        if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON) or not shutil.which("setpriv"):
            pytest.skip("running as nobody needs root, setpriv and the system's python3")
        tree = _nobody_tree(Path(tempfile.mkdtemp(prefix="selfplay-nobody-")))
        request.addfinalizer(lambda: shutil.rmtree(tree))
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON]

    def call(code: str, timeout: float = 5.0, memory_mb: int = 512) -> Outcome:
        done = subprocess.run([*command, "-I", "-c", _CALLER, str(tree), str(timeout), str(memory_mb)],
                              input=code, capture_output=True, text=True, timeout=timeout + 60, cwd="/",
                              env=os.environ | {CANARY_VARIABLE: CANARY})
        assert done.returncode == 0, done.stderr
        return Outcome(json.loads(done.stdout.splitlines()[-1]))

    call.as_root = request.param == "caller" and os.geteuid() == 0
    return call


@pytest.fixture
def canary():
    """A secret file in a directory anyone may read and write (under /tmp, reachable by `nobody`)."""
    folder = Path(tempfile.mkdtemp(prefix="selfplay-canary-"))
    folder.chmod(0o777)
    path = folder / "canary.txt"
    path.write_text("secret-" + secrets.token_hex(8))
    path.chmod(0o666)
    yield path
    shutil.rmtree(folder)


def _contained(outcome: Outcome, timeout: float = 5.0) -> None:
    """What every call must keep, whatever the program: the wall clock, no process left, no canary."""
    assert outcome.seconds < timeout + 1.0, outcome.seconds
    assert outcome.left == 0
    assert CANARY not in outcome.printed
    assert set(outcome.uids) <= {NOBODY, os.geteuid()} - {0}, f"sandbox processes ran as host users {outcome.uids}"


# ---------------------------------------------------------------- escapes to the host's files and commands
SHELL = "echo escaped > {folder}/escaped; cat {canary} > {folder}/leak; rm -f {canary}"

ESCAPES = {
    "_posixsubprocess": (
        "import _posixsubprocess, os\n"
        "args = ([b'/bin/sh', b'-c', {shell!r}.encode()], [b'/bin/sh'], True, (), None, None,\n"
        "        -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, -1, -1, None)\n"
        "try:\n    _posixsubprocess.fork_exec(*args)\n"
        "except TypeError:  # Python 3.12 added allow_vfork\n    _posixsubprocess.fork_exec(*args, False)\n"
        "import time; time.sleep(0.5)"
    ),
    "os.execv": "import os\nos.execv('/bin/sh', ['sh', '-c', {shell!r}])",
    "os.posix_spawn": "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', {shell!r}], {{}})\nimport time; time.sleep(0.5)",
    "ctypes execve": (
        "import ctypes\nargv = (ctypes.c_char_p * 4)(b'sh', b'-c', {shell!r}.encode(), None)\n"
        "ctypes.CDLL(None).execv(b'/bin/sh', argv)"
    ),
    "ctypes system": "import ctypes\nctypes.CDLL(None).system({shell!r}.encode())",
    "subprocess": "import subprocess\nsubprocess.run(['/bin/sh', '-c', {shell!r}])",
    "os.system": "import os\nos.system({shell!r})",
    "multiprocessing": (
        "import multiprocessing, os\n"
        "p = multiprocessing.get_context('fork').Process(target=os.system, args=({shell!r},))\np.start(); p.join()"
    ),
    "read canary": "print(open({canary!r}).read())",
    "read /etc/shadow": "print(open('/etc/shadow').read().splitlines()[0])",
    "write outside": "open({canary!r}, 'w').write('pwned')",
    "delete outside": "import os\nos.remove({canary!r})",
    "rename outside": "import os\nos.rename({canary!r}, {canary!r} + '.moved')",
    "rmtree outside": "import shutil\nshutil.rmtree({folder!r})",
    "write into /usr": "open('/usr/escaped', 'w').write('pwned')",
}


@pytest.mark.parametrize("attack", ESCAPES)
def test_escapes_are_contained(run, canary, attack):
    folder = canary.parent
    secret = canary.read_text()
    shell = SHELL.format(folder=folder, canary=canary)
    outcome = run(ESCAPES[attack].format(shell=shell, canary=str(canary), folder=str(folder)) + "\nprint(1)")
    _contained(outcome)
    assert secret not in outcome.printed and outcome.result.answer in (None, "1"), (attack, outcome.result)
    assert canary.read_text() == secret, attack
    assert sorted(p.name for p in folder.iterdir()) == ["canary.txt"], attack
    assert not Path("/usr/escaped").exists()


@pytest.mark.parametrize("attack", ["os.execv", "read canary", "read /etc/shadow", "write outside", "delete outside"])
def test_escapes_that_fail_are_reported_as_errors(run, canary, attack):
    code = ESCAPES[attack].format(shell="true", canary=str(canary), folder=str(canary.parent)) + "\nprint(1)"
    result = run(code).result
    assert result.answer is None and result.status.startswith("error"), result


# ---------------------------------------------------------------- the kernel's own interfaces
# Each prints one word per route: "open" if the route could be taken, else why not. Nothing here writes.
def _probe(routes: dict[str, str]) -> str:
    lines = ["import ctypes, os, errno", "libc = ctypes.CDLL(None, use_errno=True)", "seen = []"]
    for name, attempt in routes.items():
        lines += ["try:", f"    ok = {attempt}", f"    seen.append({name!r} + ('=open' if ok else '=refused'))",
                  "except Exception as error:", f"    seen.append({name!r} + '=' + type(error).__name__)"]
    return "\n".join(lines + ["print(' '.join(seen))"])


def _opened(path: str, flags: str = "os.O_WRONLY") -> str:
    return f"os.close(os.open({path!r}, {flags})) is None"


# Raw system calls without a C library wrapper, by number.
SYSCALLS = {"x86_64": {"clone": 56, "clone3": 435, "futex": 202},
            "aarch64": {"clone": 220, "clone3": 435, "futex": 98}}[platform.machine()]


KERNEL_ROUTES = {
    "core_pattern": _opened("/proc/sys/kernel/core_pattern"),  # a pipe here runs a command as real root on a crash
    "any_sysctl": _opened("/proc/sys/vm/drop_caches"),
    "sysrq": _opened("/proc/sysrq-trigger"),
    "init_environ": _opened("/proc/1/environ", "os.O_RDONLY"),
    "init_mem": _opened("/proc/1/mem", "os.O_RDWR"),
    "own_environ": _opened("/proc/self/environ", "os.O_RDONLY"),
    "sysfs": "os.path.exists('/sys/kernel')",
    "uevent_helper": _opened("/sys/kernel/uevent_helper"),
    "proc_mounted": "os.path.exists('/proc/self')",
}


def test_no_kernel_interface_is_reachable(run):
    """/proc/sys/kernel/core_pattern was writable as host root (a crash then ran a command outside every
    namespace); /proc/1 was bwrap's own init, with the caller's environment and writable memory."""
    host_core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    outcome = run(_probe(KERNEL_ROUTES))
    _contained(outcome)
    routes = dict(word.split("=") for word in outcome.result.stdout.split())
    assert routes.keys() == KERNEL_ROUTES.keys() and "open" not in routes.values(), routes
    assert Path("/proc/sys/kernel/core_pattern").read_text() == host_core_pattern


def test_the_callers_environment_is_not_readable(run):
    code = ("import os\nprint(sorted(os.environ))\nfor path in ('/proc/1/environ', '/proc/self/environ', '/proc/2/environ'):\n"
            "    try:\n        print(open(path, 'rb').read())\n    except OSError as e:\n        print(path, e)")
    outcome = run(code)
    _contained(outcome)
    assert CANARY_VARIABLE not in outcome.printed, outcome.result
    assert set(eval(outcome.result.stdout.splitlines()[0])) <= {"PWD", "LC_CTYPE"}  # bwrap's and Python's own


def test_the_program_is_alone_in_its_namespace_and_filtered(run):
    """No unfiltered helper shares its PID namespace (bwrap's init used to: same user, no seccomp filter)."""
    routes = {
        "signal_pid_2": "libc.kill(2, 0) == 0",
        "ptrace_attach": "libc.ptrace(16, 1, 0, 0) == 0",
        "process_vm_writev": "libc.process_vm_writev(1, 0, 0, 0, 0, 0) >= 0",
        "clear_pdeathsig": "libc.prctl(1, 0, 0, 0, 0) == 0",  # would undo die-with-parent
        "setsid": "libc.setsid() >= 0",
        "new_user_namespace": "libc.unshare(0x10000000) == 0",
        "seccomp_again": "libc.prctl(22, 0, 0, 0, 0) == 0",
    }
    outcome = run(_probe(routes))
    _contained(outcome)
    seen = dict(word.split("=") for word in outcome.result.stdout.split())
    assert seen.keys() == routes.keys() and "open" not in seen.values(), seen


# ---------------------------------------------------------------- time, processes and threads
@pytest.mark.parametrize("code", [
    "import time\ntime.sleep(10 ** 6)",
    "while True:\n    pass",
    "import select\nselect.select([], [], [], 10 ** 6)",
    "import signal\nsignal.pause()",
    f"import ctypes\nctypes.CDLL(None).syscall({SYSCALLS['futex']}, ctypes.byref(ctypes.c_int(0)), 0, 0, 0)\n"
    "while True: pass",  # a futex wait no one will wake
    "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.setsid(); libc.prctl(1, 0)\nwhile True: pass",  # detach
    "import os, signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True:\n    pass",
    "x = bytearray(450 << 20)\nwhile True:\n    pass",  # takes a while to tear down: the caller waits for it
])
def test_a_program_that_will_not_end_is_killed_at_its_deadline_and_leaves_nothing(run, code):
    outcome = run(code, 2.0)
    _contained(outcome, 2.0)
    assert outcome.result.answer is None and outcome.result.status != "ok", outcome.result  # pause() just returns
    if outcome.result.status == "timeout":  # it ran for 2 s: the caller's watch must have seen its processes
        assert outcome.uids, "the host-user check in _contained saw nothing"


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import threading\nwhile True:\n    threading.Thread(target=lambda: None).start()",
    # raw clone(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD): a host PID per call
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nstack = ctypes.create_string_buffer(1 << 16)\n"
    f"made = sum(libc.syscall({SYSCALLS['clone']}, 0x10f00, ctypes.addressof(stack) + (1 << 16), 0, 0, 0) > 0\n"
    "           for _ in range(10000))\nprint(made)",
    f"import ctypes\nprint(ctypes.CDLL(None, use_errno=True).syscall({SYSCALLS['clone3']}, 0, 0))",
])
def test_no_process_or_thread_can_be_made(run, code):
    outcome = run(code, 3.0)
    _contained(outcome, 3.0)
    assert outcome.result.answer in (None, "0", "-1"), outcome.result
    assert "Operation not permitted" in outcome.result.status or outcome.result.answer in ("0", "-1") \
        or "can't start new thread" in outcome.result.status, outcome.result


# ---------------------------------------------------------------- memory, the caller's and the host's
@pytest.mark.parametrize("code", [
    "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    "import sys\nwhile True:\n    sys.stdout.buffer.write(b'\\xff\\xfe' * 32768)",  # invalid UTF-8 decodes slowly
    "import sys\nwhile True:\n    sys.stderr.write('y' * 65536)",
])
def test_an_output_flood_costs_the_caller_nothing(run, code):
    outcome = run(code, 5.0)
    _contained(outcome)
    assert outcome.rss_growth_mib < 64, outcome.rss_growth_mib
    assert len(outcome.result.stdout) <= MAX_OUTPUT_BYTES and len(outcome.result.stderr) <= MAX_OUTPUT_BYTES
    assert outcome.result.answer is None and len(outcome.result.status) <= MAX_STATUS_CHARS


def test_the_kernel_caps_what_a_program_can_write(run):
    """Output goes to files under the file-size limit: past it, a write fails (once SIGXFSZ is ignored)."""
    code = ("import os, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nwritten = 0\nwhile True:\n"
            "    try:\n        written += os.write(1, b'z' * 65536)\n    except OSError as error:\n"
            "        raise SystemExit(f'{error.strerror} after {written} bytes')")
    outcome = run(code, 5.0)
    _contained(outcome)
    assert outcome.result.status == f"error: File too large after {MAX_OUTPUT_BYTES} bytes", outcome.result


def test_memory_outside_the_limit_is_refused(run):
    """Each route once held memory past the address-space limit: /dev was a tmpfs of half the host's RAM, SysV
    shared memory and message queues live in the kernel. None of them may take a byte."""
    routes = {
        "dev_file": _opened("/dev/fill", "os.O_WRONLY | os.O_CREAT"),
        "dev_shm": _opened("/dev/shm/fill", "os.O_WRONLY | os.O_CREAT"),
        "root_file": _opened("/fill", "os.O_WRONLY | os.O_CREAT"),
        "tmp_file": _opened("/tmp/fill", "os.O_WRONLY | os.O_CREAT"),
        "cwd_file": _opened("fill", "os.O_WRONLY | os.O_CREAT"),
        "shmget": "libc.shmget(0, 1 << 30, 0o1600) >= 0",
        "msgget": "libc.msgget(0, 0o1600) >= 0",
        "memfd": "libc.memfd_create(b'x', 0) >= 0",
        "pipe": "libc.pipe((ctypes.c_int * 2)()) == 0",
        "eventfd": "libc.eventfd(0, 0) >= 0",
        "socketpair": "libc.socketpair(1, 1, 0, (ctypes.c_int * 2)()) == 0",
        "bytearray_2x": "bytearray(512 << 20) is not None",
        "mmap_shared_2x": "__import__('mmap').mmap(-1, 512 << 20) is not None",
    }
    outcome = run(_probe(routes), 5.0, 256)
    _contained(outcome)
    seen = dict(word.split("=") for word in outcome.result.stdout.split())
    assert seen.keys() == routes.keys() and "open" not in seen.values(), seen


def test_ten_gigabytes_is_refused(run):
    result = run("x = bytearray(10 * 1024 ** 3)\nprint(len(x))", 5.0, 256).result
    assert result.answer is None and "MemoryError" in result.status


def test_a_socket_to_loopback_reaches_nothing(run):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(3)
    connections = []
    thread = threading.Thread(target=lambda: connections.append(_accept(listener)))
    thread.start()
    port = listener.getsockname()[1]
    result = run(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\ns.send(b'hi')\nprint(1)").result
    thread.join()
    listener.close()
    assert connections == [None] and result.answer is None, result


def _accept(listener):
    try:
        return listener.accept()
    except socket.timeout:
        return None


# ---------------------------------------------------------------- what a program may still do
def test_the_program_sees_an_empty_private_world(run):
    system = {"bin", "sbin", "lib", "lib32", "lib64", "usr", "dev", Path(os.path.realpath(sandbox._interpreter())).parts[1]}
    outcome = run(f"import os\nprint(os.getuid(), os.getpid(), os.getcwd(), sorted(set(os.listdir('/')) - {system!r}), "
                  "os.listdir('/dev'))")
    words = outcome.result.stdout.split(maxsplit=4)
    assert words[:4] == [str(NOBODY), "1", "/", "[]"], outcome.result  # uid, pid, cwd, nothing but the system
    assert sorted(eval(words[4])) == ["null", "urandom", "zero"]


def test_a_program_computes_and_prints_its_answer(run):
    code = ("from fractions import Fraction\nimport math, statistics, itertools, random, decimal\nrandom.seed(3)\n"
            "print(Fraction(3, 4) + Fraction(1, 4) * 2 + math.comb(4, 2) * 0 + statistics.mean([1, 3]) * 0)")
    outcome = run(code)
    assert (outcome.result.status, outcome.result.answer) == ("ok", "5/4")
    assert outcome.left == 0


def test_no_output_crash_long_program_and_long_answer_are_reported():
    assert run_program("x = 1").status == "no output"
    assert run_program("raise ValueError('bad')").status == "error: ValueError: bad"
    assert run_program(f"raise ValueError('{'x' * 5000}')").status.startswith("error: ValueError: xxx")
    assert len(run_program(f"raise ValueError('{'x' * 5000}')").status) == MAX_STATUS_CHARS
    assert run_program("print('1' * 300)").status == "no output"
    assert run_program("x = 1\n" * 20_000).status.startswith("error: a program of over")


def test_program_mode_refuses_to_start_without_bubblewrap(monkeypatch, tmp_path):
    sandbox.require()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        sandbox.require()


def test_as_root_program_mode_needs_an_interpreter_others_can_read(monkeypatch):
    """As root, bwrap runs as `nobody`, who cannot read an interpreter under /root (pyenv's default): the sandbox
    takes the system's python3, and without one refuses to start, saying why."""
    if os.geteuid() != 0:
        pytest.skip("the interpreter is chosen for another user only when the caller is root")
    monkeypatch.setattr(sandbox, "SYSTEM_PYTHON", "/nonexistent/python3")
    monkeypatch.setattr(sandbox.sys, "base_prefix", "/root/.closed-prefix")
    sandbox._interpreter.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="cannot read this interpreter"):
            sandbox.require()
    finally:
        sandbox._interpreter.cache_clear()
