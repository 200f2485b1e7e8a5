"""Teacher programs are untrusted: every escape attempt must be contained, reported, and change nothing outside."""

import time

import pytest

from selfplay.verify.sandbox import run_program


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary.txt"
    path.write_text("alive")
    return path


def test_a_program_prints_its_answer():
    result = run_program("from fractions import Fraction\nprint(Fraction(3, 4) + Fraction(1, 4) * 2)")
    assert (result.status, result.answer) == ("ok", "5/4")


def test_writing_inside_its_own_directory_is_allowed():
    assert run_program("open('x.txt', 'w').write('7')\nprint(open('x.txt').read())").answer == "7"


@pytest.mark.parametrize(
    "name, code",
    [
        ("write outside", "open({canary!r}, 'w').write('pwned')"),
        ("append outside", "open({canary!r}, 'a').write('pwned')"),
        ("delete", "import os\nos.remove({canary!r})"),
        ("rename", "import os\nos.rename({canary!r}, {canary!r} + '.moved')"),
        ("rmtree", "import shutil, os\nshutil.rmtree(os.path.dirname({canary!r}))"),
        ("subprocess", "import subprocess\nsubprocess.run(['rm', {canary!r}])"),
        ("os.system", "import os\nos.system('rm ' + {canary!r})"),
        ("ctypes", "import ctypes\nctypes.CDLL(None).system(('rm ' + {canary!r}).encode())"),
    ],
)
def test_changes_outside_the_sandbox_are_blocked(canary, name, code):
    result = run_program(code.format(canary=str(canary)) + "\nprint(1)")
    assert result.answer is None and result.status.startswith("error"), (name, result)
    assert canary.read_text() == "alive" and not (canary.parent / "canary.txt.moved").exists()


def test_socket_is_blocked():
    result = run_program("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\nprint(1)")
    assert result.answer is None and "socket" in result.status


def test_no_network_interfaces_when_root_can_make_a_namespace():
    import os

    inside = run_program("print(len(open('/proc/self/net/dev').read().splitlines()) - 2)")
    if os.geteuid() == 0:
        assert inside.answer == "1"  # only the (down) loopback of a fresh network namespace
    assert inside.status == "ok"


def test_fork_bomb_is_contained():
    start = time.monotonic()
    result = run_program("import os\nwhile True:\n    os.fork()", timeout=3)
    assert result.answer is None and time.monotonic() - start < 5


def test_ten_gigabytes_is_refused():
    result = run_program("x = bytearray(10 * 1024 ** 3)\nprint(len(x))", memory_mb=256)
    assert result.answer is None and "MemoryError" in result.status


@pytest.mark.parametrize("code", ["import time\ntime.sleep(10 ** 6)", "while True:\n    pass"])
def test_sleeping_or_spinning_forever_times_out(code):
    start = time.monotonic()
    result = run_program(code, timeout=2)
    assert result.status == "timeout" and time.monotonic() - start < 3.5


def test_no_output_and_crash_are_reported():
    assert run_program("x = 1").status == "no output"
    assert run_program("raise ValueError('bad')").status == "error: ValueError: bad"
