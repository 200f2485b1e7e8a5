"""selfplay: one language model teaches itself math (OpenSIR-style teacher/student self-play)."""

__version__ = "0.1.0"

# Version of the run-directory layout. A run written by another layout version is refused on resume with a
# message naming the file, instead of failing somewhere deep inside checkpoint loading.
# 2: metric keys namespaced by role (teacher/, student/, pool/, update/, verify/), reward terms per problem.
# 3: the novelty archive (every valid problem) is saved apart from the pool (admitted problems only).
# 4: rng.pt holds one set of RNG states per rank (multi-process runs).
# 5: archive/ holds the archive's embeddings and the pool's problems, append-only; checkpoints record lengths.
RUN_FORMAT_VERSION = 5
