"""A dependency-free text encoder: signed hashing of character n-grams and words.

Deterministic across processes and platforms (BLAKE2b, not Python's salted ``hash``).
Strings sharing many n-grams ("left lung", "right lung") get close embeddings; it knows
nothing about meaning ("heart" vs "cardiac"), so it is a fallback, not a language model.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from incontext.text.base import TextEncoder, TextEncoderError

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset({"a", "an", "the", "of", "image", "in"})


def _bucket(token: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEncoder(TextEncoder):
    """Character n-grams (``ngram_range``) of each word plus whole words, hashed into ``dim``."""

    name = "hashing"

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (2, 4),
                 word_weight: float = 1.0) -> None:
        lo, hi = int(ngram_range[0]), int(ngram_range[1])
        if dim < 8:
            raise TextEncoderError(f"hashing encoder: dim must be >= 8, got {dim}")
        if not 1 <= lo <= hi:
            raise TextEncoderError(f"hashing encoder: bad ngram_range {ngram_range}")
        self.dim = int(dim)
        self.ngram_range = (lo, hi)
        self.word_weight = float(word_weight)

    def options(self) -> dict:
        return {"dim": self.dim, "ngram_range": list(self.ngram_range),
                "word_weight": self.word_weight}

    def _features(self, text: str) -> dict[str, float]:
        feats: dict[str, float] = {}
        words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]
        lo, hi = self.ngram_range
        for word in words:
            feats["w:" + word] = feats.get("w:" + word, 0.0) + self.word_weight
            padded = f"<{word}>"
            for n in range(lo, hi + 1):
                for i in range(len(padded) - n + 1):
                    g = "g:" + padded[i:i + n]
                    feats[g] = feats.get(g, 0.0) + 1.0
        return feats

    def _encode(self, prompts: list[str]) -> np.ndarray:
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        for row, text in enumerate(prompts):
            for token, weight in self._features(text).items():
                idx, sign = _bucket(token, self.dim)
                out[row, idx] += sign * weight
        return out
