"""Policy models: loading (embedded default, hub id, folder, checkpoint) and generation backends."""

from selfplay.policy.generation import GenerationBackend, Sample, TransformersBackend, render_chat
from selfplay.policy.loading import EMBEDDED, ModelNotFoundError, load_policy, load_tokenizer, resolve_model

__all__ = [
    "EMBEDDED", "GenerationBackend", "ModelNotFoundError", "Sample", "TransformersBackend",
    "load_policy", "load_tokenizer", "render_chat", "resolve_model",
]
