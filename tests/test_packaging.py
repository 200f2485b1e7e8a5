"""A wheel carries every module and the shipped prompts and seeds, and a non-editable install finds them from any
directory (no checkout beside it)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_modules_prompts_and_seeds_and_runs_without_the_checkout(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Built from a clean copy: setuptools reuses an in-tree build/ folder, whose stale files could hide a module
    # missing from pyproject.toml's package list.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "runs",
                                                                  "results", "report", "tests", "experiments"))
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)], check=True)
    wheel = next(tmp_path.glob("selfplay-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"selfplay/{p.relative_to(ROOT / 'selfplay').as_posix()}" for p in (ROOT / "selfplay").rglob("*.py")}
    for folder in ("prompts", "seeds"):
        expected |= {f"selfplay/{folder}/{p.name}" for p in (ROOT / folder).iterdir() if p.is_file()}
    assert expected <= names, sorted(expected - names)

    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)], check=True)
    script = (
        "import selfplay\n"
        "from selfplay.config import SelfPlayConfig, resolve_path\n"
        "from selfplay.curriculum.seeds import load_seeds\n"
        "from selfplay.roles import PromptTemplate\n"
        "config = SelfPlayConfig()\n"
        "PromptTemplate.load(config.teacher_template), PromptTemplate.load(config.student_template)\n"
        "for name in ('single', 'arithmetic', 'algebra'):\n"
        "    assert load_seeds(f'seeds/{name}.jsonl', 'problem', 'answer')\n"
        "print(selfplay.__file__)\n"
        "print(resolve_path(config.teacher_template))\n"
        "print(resolve_path(config.seeds))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env={"PYTHONPATH": str(target)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(line.startswith(str(target / "selfplay")) for line in result.stdout.split()), result.stdout
