"""Teacher programs are hostile: every attack must be contained, whoever runs selfplay.

Each attack runs twice: as the user running the tests (root in CI), and as the unprivileged user `nobody`
through Debian's own interpreter (a second real caller, the way a user without root runs selfplay). The
canary lives in a directory that `nobody` may read and write, so only the sandbox stands between them.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

import selfplay
from selfplay.verify import sandbox
from selfplay.verify.sandbox import ProgramResult, SandboxUnavailable, run_program

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534

# The parts of the package the sandbox needs, and nothing that imports third-party code (Debian's interpreter
# has none of it); pyseccomp is one pure-Python file.
_NOBODY_CALLER = r"""
import json, sys
from dataclasses import asdict
sys.path.insert(0, sys.argv[1])
from selfplay.verify.sandbox import run_program
print(json.dumps(asdict(run_program(sys.stdin.read(), float(sys.argv[2]), int(sys.argv[3])))))
"""


def _nobody_tree(root: Path) -> Path:
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


@pytest.fixture(scope="module", params=["caller", "nobody"])
def run(request, tmp_path_factory):
    """run(code, timeout, memory_mb) -> ProgramResult, as the test's user or as `nobody`."""
    if request.param == "caller":
        return run_program
    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON) or not shutil.which("setpriv"):
        pytest.skip("running as nobody needs root, setpriv and the system's python3")
    tree = _nobody_tree(Path(tempfile.mkdtemp(prefix="selfplay-nobody-")))
    request.addfinalizer(lambda: shutil.rmtree(tree))

    def as_nobody(code: str, timeout: float = 5.0, memory_mb: int = 512) -> ProgramResult:
        done = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, "-I", "-c",
             _NOBODY_CALLER, str(tree), str(timeout), str(memory_mb)],
            input=code, capture_output=True, text=True, timeout=timeout + 30, cwd="/",
        )
        assert done.returncode == 0, done.stderr
        return ProgramResult(**json.loads(done.stdout))

    return as_nobody


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


SHELL = "echo escaped > {folder}/escaped; cat {canary} > {folder}/leak; rm -f {canary}"

ATTACKS = {
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


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_are_contained(run, canary, attack):
    folder = canary.parent
    secret = canary.read_text()
    shell = SHELL.format(folder=folder, canary=canary)
    code = ATTACKS[attack].format(shell=shell, canary=str(canary), folder=str(folder)) + "\nprint(1)"
    result = run(code, 5.0, 512)
    assert secret not in result.stdout + result.stderr and result.answer in (None, "1"), (attack, result)
    assert canary.read_text() == secret, attack
    assert sorted(p.name for p in folder.iterdir()) == ["canary.txt"], attack
    assert not Path("/usr/escaped").exists()


@pytest.mark.parametrize("attack", ["os.execv", "read canary", "read /etc/shadow", "write outside", "delete outside"])
def test_attacks_that_fail_are_reported_as_errors(run, canary, attack):
    code = ATTACKS[attack].format(shell="true", canary=str(canary), folder=str(canary.parent)) + "\nprint(1)"
    result = run(code, 5.0, 512)
    assert result.answer is None and result.status.startswith("error"), result


def test_a_socket_to_loopback_reaches_nothing(run):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(3)
    connections = []
    thread = threading.Thread(target=lambda: connections.append(_accept(listener)))
    thread.start()
    port = listener.getsockname()[1]
    result = run(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\ns.send(b'hi')\nprint(1)",
                 5.0, 512)
    thread.join()
    listener.close()
    assert connections == [None] and result.answer is None, result


def _accept(listener):
    try:
        return listener.accept()
    except socket.timeout:
        return None


def test_fork_bomb_is_contained(run):
    start = time.monotonic()
    result = run("import os\nwhile True:\n    os.fork()", 3.0, 512)
    assert result.answer is None and "Operation not permitted" in result.status, result
    assert time.monotonic() - start < 5


def test_ten_gigabytes_is_refused(run):
    result = run("x = bytearray(10 * 1024 ** 3)\nprint(len(x))", 5.0, 256)
    assert result.answer is None and "MemoryError" in result.status


@pytest.mark.parametrize("code", ["import time\ntime.sleep(10 ** 6)", "while True:\n    pass"])
def test_sleeping_or_spinning_forever_times_out(run, code):
    start = time.monotonic()
    result = run(code, 2.0, 512)
    assert result.status == "timeout" and time.monotonic() - start < 3.5


def test_the_program_sees_an_empty_private_world(run):
    seen = run("import os\nprint(os.getuid(), os.getpid(), sorted(os.listdir('.')), os.path.exists('/etc'),"
               " len(open('/proc/self/net/dev').read().splitlines()) - 2)", 5.0, 512)
    assert seen.stdout.split() == [str(NOBODY), "2", "[]", "False", "1"], seen  # uid, pid, cwd, /etc, only lo


def test_a_program_prints_its_answer_and_may_use_its_own_directory(run):
    result = run("from fractions import Fraction\nopen('x.txt', 'w').write(str(Fraction(3, 4) + Fraction(1, 4) * 2))\n"
                 "print(open('x.txt').read())", 5.0, 512)
    assert (result.status, result.answer) == ("ok", "5/4")


def test_threads_still_work(run):
    code = "import threading\nout = []\nt = threading.Thread(target=out.append, args=(7,))\nt.start(); t.join()\nprint(out[0])"
    assert run(code, 5.0, 512).answer == "7"


def test_no_output_and_crash_are_reported():
    assert run_program("x = 1").status == "no output"
    assert run_program("raise ValueError('bad')").status == "error: ValueError: bad"


def test_program_mode_refuses_to_start_without_bubblewrap(monkeypatch, tmp_path):
    sandbox.require()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        sandbox.require()
