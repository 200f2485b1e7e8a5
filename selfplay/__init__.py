"""selfplay: one language model teaches itself math (OpenSIR-style teacher/student self-play)."""

__version__ = "0.1.0"

# Version of the run-directory layout. A run written by another layout version is refused on resume with a
# message naming the file, instead of failing somewhere deep inside checkpoint loading.
RUN_FORMAT_VERSION = 1
