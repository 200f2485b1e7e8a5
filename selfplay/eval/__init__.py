"""Evaluation: benchmarks, metrics (mean@n, pass@k, maj@n, bootstrap, expansion rate), the evaluator."""
