"""Text embeddings for the text route, cached like image features.

`get_text_features` embeds texts (class prompts, captions, queries) with a backbone's
text tower (`VisionBackbone.txt_encode`), L2-normalised, through the same `FeatureCache`
as image features: the cache key is the backbone's fingerprint, the numeric precision and
the word "text" (so text and image rows never mix), and each row's key is a digest of the
exact text. A second request for the same texts (another task with the same class names,
a second run) runs the text tower zero times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float

from biobench.backbones.base import VisionBackbone, fingerprint
from biobench.cache import FeatureCache
from biobench.embed import _autocast_dtype, _digest, precision_label
from biobench.errors import BackboneError

logger = logging.getLogger(__name__)

BATCH = 256
"""Texts per forward pass of the text tower."""


@dataclasses.dataclass(frozen=True)
class TextResult:
    """Normalised embeddings of `texts` (row i = text i) and how they were obtained."""

    features: Float[np.ndarray, "n dim"]
    n_cached: int
    """Distinct texts served from the cache."""
    n_encoded: int
    """Distinct texts run through the text tower."""
    seconds: float


def text_key(text: str) -> bytes:
    """The cache key of one text: 32 hex characters of its BLAKE2b digest (exact text, case and spaces kept)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest().encode()


def text_cache_key(backbone_fingerprint: str, device: str) -> str:
    """The cache's key for a backbone's text tower on `device` (apart from its image features')."""
    return _digest(backbone_fingerprint, precision_label(torch.device(device)), "text")


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def get_text_features(
    backbone: VisionBackbone, texts: Sequence[str], cache: FeatureCache, *, device: str = "cpu", dataset: str = "text"
) -> TextResult:
    """Normalised text-tower embeddings of `texts`, from the cache where possible (duplicates embedded once)."""
    start = time.perf_counter()
    if not type(backbone).has_text_tower(backbone.ckpt):
        raise BackboneError(
            f"{backbone.name} has no text tower; text-route tasks need a CLIP-style model (open-clip, hf CLIP / SigLIP, builtin:colour-clip)."
        )
    unique = list(dict.fromkeys(texts))
    keys = np.array([text_key(t) for t in unique], dtype="S32")
    fp = text_cache_key(fingerprint(backbone), device)
    cached, found = cache.lookup(fp, keys)
    missing = np.flatnonzero(~found)
    feats = None if cached is None else np.array(cached, dtype=np.float32)
    if len(missing):
        dtype = _autocast_dtype(torch.device(device))
        parts = []
        with torch.inference_mode():
            for i in range(0, len(missing), BATCH):
                batch = [unique[j] for j in missing[i : i + BATCH]]
                if dtype is not None:
                    with torch.autocast(torch.device(device).type, dtype=dtype):
                        out = backbone.txt_encode(batch)
                else:
                    out = backbone.txt_encode(batch)
                parts.append(out.float().cpu().numpy())
        new = normalise(np.concatenate(parts))
        if feats is None:
            feats = np.zeros((len(unique), new.shape[1]), dtype=np.float32)
        feats[missing] = new
        try:
            cache.put(fp, keys[missing], new, dataset=f"{dataset} (text)",
                      backbone_info={"name": backbone.name, "org": backbone.org, "ckpt": backbone.ckpt, "tower": "text"})  # fmt: skip
        except OSError as err:
            logger.warning("Cannot write text embeddings to the cache at %s (%s); continuing without caching.", cache.root, err)
    assert feats is not None or not unique
    row = {t: i for i, t in enumerate(unique)}
    out = feats[[row[t] for t in texts]] if feats is not None else np.zeros((0, 0), dtype=np.float32)
    logger.info("%s text tower: %d texts cached, %d embedded.", backbone.name, len(unique) - len(missing), len(missing))
    return TextResult(out, len(unique) - len(missing), len(missing), time.perf_counter() - start)
