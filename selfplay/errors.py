"""The one error base. Every error a user can cause (a config typo, a bad seed file, a corrupt run directory, a
missing model, a stalled run) derives from `SelfPlayError`; the CLI prints its message on one line and exits 2.
Anything else is a bug and keeps its traceback."""


class SelfPlayError(Exception):
    """An error caused by input or state the user controls; its message says which file or key, and why."""
