"""An on-disk cache of embeddings keyed by id, in safetensors files (never pickle).

Layout: `{folder}/{kind}/chunk-{n:06d}.safetensors`, each holding one float32 matrix `embeddings` and, in
the safetensors metadata, the JSON list of its row keys. New embeddings are appended as a new chunk
(written atomically), so a rerun, a new threshold or an interrupted run reuses everything already computed.
Keys carry the file's size and mtime (see `file_key`), so a regenerated image is embedded again.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from curriculum.tables import atomic_path

log = logging.getLogger(__name__)

CHUNK_RE = re.compile(r"^chunk-(\d+)\.safetensors$")


def file_key(item_id: str, path: str | os.PathLike) -> str:
    """Return the cache key of a file-backed item: `id|size-mtime_ns` (`id|missing` if absent)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{item_id}|missing"
    return f"{item_id}|{st.st_size}-{st.st_mtime_ns}"


class EmbeddingCache:
    """Embeddings of one kind (e.g. 'synthetic', 'real', 'text') for one model; `folder=None` keeps them in
    memory only; `write=False` reads the folder but never writes it (the non-main processes of a launch, whose
    embeddings the main process writes)."""

    def __init__(self, folder: str | os.PathLike | None, kind: str, flush_rows: int = 4096, write: bool = True):
        self.folder = Path(folder) / kind if folder is not None else None
        self.kind = kind
        self.flush_rows = flush_rows
        self.write = write
        self._store: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        if self.folder is not None and self.folder.is_dir():
            self._load()

    def _chunks(self) -> list[Path]:
        return (
            sorted(p for p in self.folder.iterdir() if CHUNK_RE.match(p.name))
            if self.folder and self.folder.is_dir()
            else []
        )

    def _load(self) -> None:
        from safetensors import safe_open

        for chunk in self._chunks():
            try:
                with safe_open(str(chunk), framework="np") as f:
                    keys = json.loads(f.metadata()["keys"])
                    mat = f.get_tensor("embeddings")
            except Exception as err:  # a damaged chunk costs a recomputation, never the run
                log.warning("embedding cache %s: ignoring unreadable chunk (%s)", chunk, err)
                continue
            if len(keys) != len(mat):
                log.warning("embedding cache %s: %d keys for %d rows; ignoring it", chunk, len(keys), len(mat))
                continue
            for k, row in zip(keys, mat):
                self._store[k] = row

    def __len__(self) -> int:
        return len(self._store) + len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._store or key in self._pending

    def get(self, key: str) -> np.ndarray | None:
        """Return the embedding stored under `key`, or None."""
        hit = self._pending.get(key)
        return hit if hit is not None else self._store.get(key)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Return the keys (in order, without duplicates) that have no embedding yet."""
        return [k for k in dict.fromkeys(keys) if k not in self]

    def put(self, keys: Sequence[str], embeddings: np.ndarray) -> None:
        """Store `embeddings[i]` under `keys[i]`; written to disk every `flush_rows` rows and on `flush()`."""
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings")
        for k, row in zip(keys, np.asarray(embeddings, dtype=np.float32)):
            self._pending[k] = row
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def stack(self, keys: Sequence[str]) -> np.ndarray:
        """Return the embeddings of `keys` as one (N, D) float32 matrix (KeyError for a missing key)."""
        rows = [self.get(k) for k in keys]
        bad = [k for k, r in zip(keys, rows) if r is None]
        if bad:
            raise KeyError(f"{len(bad)} key(s) not embedded, e.g. {bad[0]!r}")
        return np.stack(rows).astype(np.float32, copy=False)

    def flush(self) -> Path | None:
        """Write the pending embeddings as a new chunk; return its path (None if nothing was pending)."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, {}
        self._store.update(pending)
        if self.folder is None or not self.write:
            return None
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        chunks = self._chunks()
        n = int(CHUNK_RE.match(chunks[-1].name).group(1)) + 1 if chunks else 0
        path = self.folder / f"chunk-{n:06d}.safetensors"
        keys = list(pending)
        with atomic_path(path) as tmp:
            save_file(
                {"embeddings": np.stack([pending[k] for k in keys])}, str(tmp), metadata={"keys": json.dumps(keys)}
            )
        return path
