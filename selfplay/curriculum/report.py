"""An HTML report of a run (finished or in progress): PNG figures and sample problems."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import numpy as np

from selfplay.curriculum.export import run_config
from selfplay.files import atomic_write, read_jsonl
from selfplay.rewards import in_band
from selfplay.rundir import CURRICULUM, METRICS, RunDirError

MAX_MAPPED_PROBLEMS = 2000  # problems embedded for the 2-D map (spread evenly over the run)
SIGNAL_WINDOWS = 10  # rows of the signals table
SOLVE_RATE_BINS = ("never solved", "below band", "in band", "above band", "always solved")


def solve_rate_bin(rate: float, low: float, high: float) -> str:
    """Where a problem's solve rate falls against the band (a rate on an edge is in it)."""
    if in_band(rate, low, high):
        return "in band"
    if rate in (0.0, 1.0):
        return "never solved" if rate == 0.0 else "always solved"
    return "below band" if rate < low else "above band"


def signal_windows(metrics: list[dict], completions: list[dict], band: tuple[float, float],
                   windows: int = SIGNAL_WINDOWS) -> list[dict]:
    """The signals that say whether self-play can learn, over equal windows of steps: the share of teacher
    completions that are valid problems and that land in the band, the student's format rate and solve rate,
    and how the valid problems' solve rates fall against the band."""
    last = max((m["step"] for m in metrics), default=0)
    size = max(1, -(-last // windows))
    table = []
    for first in range(1, last + 1, size):
        steps = range(first, min(first + size, last + 1))
        written = [r for r in completions if r.get("step") in steps]
        rated = [r["solve_rate"] for r in written if r.get("valid") and r.get("solve_rate") is not None]
        student_format = [m["student/format_mean"] for m in metrics
                          if m["step"] in steps and isinstance(m.get("student/format_mean"), (int, float))]
        bins = Counter(solve_rate_bin(rate, *band) for rate in rated)
        table.append({
            "steps": f"{steps[0]}-{steps[-1]}",
            "completions": len(written),
            "valid": sum(bool(r.get("valid")) for r in written) / len(written) if written else None,
            "in_band": sum(in_band(r.get("solve_rate"), *band) for r in written) / len(written) if written else None,
            "student_format": float(np.mean(student_format)) if student_format else None,
            "solve_rate": float(np.mean(rated)) if rated else None,
            "solve_rate_bins": {name: bins[name] for name in SOLVE_RATE_BINS},
        })
    return table


def _signals_table(rows: list[dict]) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    header = "".join(f"<th>{name}</th>" for name in
                     ("steps", "teacher completions", "valid", "in band", "student format", "mean solve rate",
                      *(f"solve rate: {name}" for name in SOLVE_RATE_BINS)))
    body = "".join(
        f"<tr><td>{r['steps']}</td><td>{r['completions']}</td><td>{cell(r['valid'])}</td><td>{cell(r['in_band'])}</td>"
        f"<td>{cell(r['student_format'])}</td><td>{cell(r['solve_rate'])}</td>"
        + "".join(f"<td>{r['solve_rate_bins'][name]}</td>" for name in SOLVE_RATE_BINS) + "</tr>" for r in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _figure(path: Path, draw) -> str:
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _lines(metrics: list[dict], keys: dict[str, str], ylabel: str, title: str):
    def draw(ax):
        for key, label in keys.items():
            steps, values = _series(metrics, key)
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()

    return draw


def _heldout_figure(metrics: list[dict], out: Path) -> dict[str, str]:
    """The in-run evaluation's curve (`--eval-every`), beside the self-play figures; none if it never ran."""
    keys = sorted({k for m in metrics for k in m if k.startswith("eval/")})
    if not keys:
        return {}
    return {"Held-out accuracy": _figure(out / "heldout.png", _lines(
        metrics, {k: k.removeprefix("eval/") for k in keys}, "accuracy", "Held-out accuracy (in-run evaluation)"))}


def _solve_rates(valid: list[dict], band: tuple[float, float]):
    def draw(ax):
        rng = np.random.default_rng(0)
        steps = np.array([r["step"] for r in valid], dtype=float)
        rates = np.array([r["solve_rate"] for r in valid], dtype=float)
        ax.axhspan(*band, color="green", alpha=0.1, label="target band")
        ax.scatter(steps + rng.uniform(-0.25, 0.25, len(steps)), rates, s=8, alpha=0.5, label="problem")
        if len(steps):
            unique = sorted(set(steps))
            ax.plot(unique, [rates[steps == s].mean() for s in unique], color="black", label="mean")
        ax.set_xlabel("step")
        ax.set_ylabel("student solve rate")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("Solve rate of each generated problem")
        ax.legend(loc="upper right")

    return draw


def _concepts(valid: list[dict]):
    def draw(ax):
        top = Counter(c for r in valid for c in r.get("concepts") or []).most_common(15)[::-1]
        ax.barh([name[:30] for name, _ in top], [count for _, count in top])
        ax.set_xlabel("problems")
        ax.set_title("Most frequent concepts")

    return draw


def _embedding_map(valid: list[dict], embedder_name: str):
    def draw(ax):
        picked = valid[:: max(1, len(valid) // MAX_MAPPED_PROBLEMS)][:MAX_MAPPED_PROBLEMS]
        if len(picked) < 3:
            ax.text(0.5, 0.5, "too few problems to map", ha="center", transform=ax.transAxes)
            return
        from selfplay.novelty import Embedder

        vectors = Embedder(embedder_name).encode([r["problem"] for r in picked])
        centred = vectors - vectors.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ components[:2].T
        points = ax.scatter(xy[:, 0], xy[:, 1], c=[r["step"] for r in picked], cmap="viridis", s=10)
        ax.figure.colorbar(points, ax=ax, label="step")
        ax.set_title("Problem embeddings (PCA), coloured by step")
        ax.set_xticks([])
        ax.set_yticks([])

    return draw


def _samples_table(valid: list[dict]) -> str:
    if not valid:
        return "<p>No valid problems yet.</p>"
    steps = sorted({r["step"] for r in valid})
    picks = {"start": steps[0], "middle": steps[len(steps) // 2], "end": steps[-1]}
    rows = []
    for phase, step in picks.items():
        for r in [r for r in valid if r["step"] == step][:3]:
            rows.append(
                f"<tr><td>{phase}</td><td>{step}</td><td>{html.escape(r['problem'])}</td>"
                f"<td>{html.escape(str(r.get('answer')))}</td><td>{r['solve_rate']:.2f}</td>"
                f"<td>{(r.get('novelty') or 0):.2f}</td></tr>"
            )
    return ("<table><tr><th>phase</th><th>step</th><th>problem</th><th>answer</th><th>solve rate</th>"
            "<th>novelty</th></tr>" + "".join(rows) + "</table>")


PROBE_CURVES = {"probe/in_band_label_accuracy": "label accuracy, in the band",
                "probe/label_accuracy": "label accuracy", "probe/reward_precision": "reward precision",
                "probe/reward_recall": "reward recall", "probe/student_accuracy": "student accuracy"}


def _probe_figure(metrics: list[dict], out: Path) -> dict[str, str]:
    """Are the rewards right (`--probe-every`)? The known-answer probe's figures; none if it never ran."""
    if not any("probe/label_accuracy" in m for m in metrics):
        return {}
    return {"Reward accuracy (known-answer probe)": _figure(out / "probe.png", _lines(
        metrics, PROBE_CURVES, "share", "Known-answer probe: is the reference right, are the rewards right?"))}


def write_report(run_dir: str | Path, out: str | Path) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / METRICS).exists():
        raise RunDirError(f"{run_dir / METRICS}: not a run directory (or no step finished yet)")
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    config = run_config(run_dir)
    metrics = [m for m in read_jsonl(run_dir / METRICS) if "skipped" not in m]
    completions = list(read_jsonl(run_dir / CURRICULUM))
    valid = [r for r in completions if r.get("valid") and r.get("solve_rate") is not None]
    band = (config.get("band_low", 0.5), config.get("band_high", 0.9))
    figures = {
        "Solve-rate distribution": _figure(out / "solve_rates.png", _solve_rates(valid, band)),
        "Fractions and novelty": _figure(out / "fractions.png", _lines(
            metrics, {"teacher/in_band_fraction": "in band", "teacher/valid_fraction": "valid",
                      "teacher/novelty_mean": "novelty (mean)"},
            "fraction / score", "In-band fraction, valid fraction, novelty")),
        "Pool growth": _figure(out / "pool.png", _lines(metrics, {"pool/size": "pool size"}, "problems", "Pool size")),
        "Student format and solve rate": _figure(out / "student.png", _lines(
            metrics, {"student/format_mean": "format", "student/solve_rate_mean": "solve rate (mean)",
                      "student/reference_fraction": "problems with a reference",
                      "student/arithmetic_holds": "written arithmetic holds",
                      "student/arithmetic_uses_givens": "... and uses every given"},
            "fraction", "Student: answers in the format, solved, judged against an answer, true arithmetic")),
        "Rewards per role": _figure(out / "rewards.png", _lines(
            metrics, {"teacher/reward_mean": "teacher", "student/reward_mean": "student"}, "mean reward", "Rewards")),
        # Term by term, the first place to look when a reward is being gamed.
        "Teacher reward terms": _figure(out / "teacher_terms.png", _lines(
            metrics, {f"teacher/{term}_mean": term for term in ("solvability", "novelty", "format", "length")},
            "mean (unweighted)", "Teacher reward terms")),
        "Concepts": _figure(out / "concepts.png", _concepts(valid)),
        **_heldout_figure(metrics, out),
        **_probe_figure(metrics, out),
        "Curriculum map": _figure(out / "embedding_map.png", _embedding_map(valid, config.get("embedder", "embedded"))),
    }
    last = metrics[-1] if metrics else {}
    body = "".join(f'<h2>{title}</h2><img src="{name}" alt="{title}">' for title, name in figures.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>selfplay report: {html.escape(str(run_dir))}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}} img{{max-width:100%}}</style></head><body>
<h1>selfplay run report</h1>
<p>Run <code>{html.escape(str(run_dir))}</code>, policy <code>{html.escape(str(config.get("model")))}</code>:
{len(metrics)} steps logged, {len(valid)} valid problems, pool size {last.get("pool/size", "?")}.</p>
<h2>Signals over the run</h2>
<p>Band {band[0]}-{band[1]}. Valid and in band: shares of all teacher completions; solve rates: of valid problems.</p>
{_signals_table(signal_windows(metrics, completions, band))}
{body}
<h2>Sample problems</h2>{_samples_table(valid)}
</body></html>"""
    atomic_write(out / "index.html", page)
    return out / "index.html"
