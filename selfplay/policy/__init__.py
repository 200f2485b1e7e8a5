"""Policy models: loading (embedded default, hub id, folder, checkpoint) and generation backends."""

from selfplay.policy.generation import (
    GenerationBackend, Sample, Sampling, TransformersBackend, WeightSyncError, make_backend, render_chat, resolve_backend,
    tokens_in_span,
)
from selfplay.policy.loading import (
    EMBEDDED, ModelNotFoundError, engine_dtype, engine_path, load_policy, load_tokenizer, resolve_model,
)

__all__ = [
    "EMBEDDED", "GenerationBackend", "engine_dtype", "engine_path", "ModelNotFoundError", "Sample", "Sampling", "TransformersBackend", "WeightSyncError",
    "load_policy", "load_tokenizer", "make_backend", "render_chat", "resolve_backend", "resolve_model",
    "tokens_in_span",
]
