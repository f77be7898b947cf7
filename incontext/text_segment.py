"""Text-prompted segmentation with a :class:`~incontext.models.text_driven.TextDriven` model.

``segment_text(model, images, ["heart", "left lung"])`` embeds one prompt per class name
("A {modality} image of a {label}") with the text encoder the model was trained with,
preprocesses images exactly like :func:`incontext.segment` (normalise, pad to square,
resize to the model's resolution) and returns, per image, a label map (class ``i`` of
``class_names`` -> value ``i + 1``) and per-class sigmoid probabilities at the image size.
A hybrid model may also take a few support examples per class (text + examples, or
examples alone for a class named ``None``).

``add_text_arguments(parser)`` / ``run_text_segmentation(args)`` back
``incontext segment --text "left lung" ...``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from incontext.atomic import atomic_write, check_output_folder
from incontext.cli.text_options import add_text_arguments  # noqa: F401  (re-exported)
from incontext.inference import (
    SupportSetError,
    _as_image_list,
    _is_single_image,
    _prepare_images,
    _to_numpy,
    checked_label_maps,
)
from incontext.models.text_driven import TextDriven
from incontext.preprocessing import pad_to_square, resize_mask_soft, resize_probabilities
from incontext.text import (
    EmbeddingCache,
    TextEncoder,
    TextEncoderError,
    embed_prompts,
    format_prompt,
    get_text_encoder,
)


@dataclass
class TextSegmentation:
    """Result for one image (at its own size).

    mask:          (H, W) uint8 label map; value ``i + 1`` = ``class_names[i]``, 0 = none
    probabilities: (K, H, W) sigmoid probability per class (classes may overlap)
    class_names:   the K classes, in the order of the first axis
    prompts:       the prompt strings that were embedded (None for classes without text)
    """

    mask: np.ndarray
    probabilities: np.ndarray
    class_names: list[str | None]
    prompts: list[str | None]


def model_text_encoder(model: nn.Module, encoder: TextEncoder | str | None = None,
                       **options) -> TextEncoder:
    """The text encoder recorded in the model's config (or ``encoder``), checked for size."""
    config = model.config
    if encoder is None or isinstance(encoder, str):
        name = encoder or config.text_encoder
        opts = dict(config.text_encoder_options) if name == config.text_encoder else {}
        opts.update(options)
        encoder = get_text_encoder(name, **opts)
    if encoder.dim != config.text_dim:
        raise TextEncoderError(f"text encoder {encoder.name!r} gives {encoder.dim}-d embeddings "
                               f"but the model expects {config.text_dim}-d "
                               f"(trained with {config.text_encoder!r})")
    return encoder


def class_prompts(class_names: Sequence[str | None], modality_name: str,
                  template: str) -> list[str | None]:
    """One prompt per class name (None stays None: that class has no text)."""
    return [None if n is None else format_prompt(n, modality_name, template) for n in class_names]


def text_embeddings_for(model: nn.Module, class_names: Sequence[str | None], *,
                        modality_name: str = "other", encoder: TextEncoder | str | None = None,
                        cache: EmbeddingCache | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    """(K, D) embeddings, (K,) bool 'has text', and the prompts of ``class_names``."""
    prompts = class_prompts(class_names, modality_name, model.config.prompt_template)
    dim = model.config.text_dim
    present = torch.tensor([p is not None for p in prompts], dtype=torch.bool)
    emb = np.zeros((len(prompts), dim), dtype=np.float32)
    named = [p for p in prompts if p is not None]
    if named:
        enc = model_text_encoder(model, encoder)
        emb[present.numpy()] = embed_prompts(enc, named, cache)
    return torch.from_numpy(emb), present, prompts


def _support_tensors(support_images, support_labels, n_classes: int, size: int,
                     modality: str, window, support_values: Sequence[int] | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    images = _as_image_list(support_images, "support_images")
    labels = _as_image_list(support_labels, "support_labels")
    if not images:
        raise SupportSetError("support_images is empty")
    if len(images) != len(labels):
        raise SupportSetError(f"{len(images)} support images but {len(labels)} support labels")
    values = list(support_values) if support_values is not None else list(range(1, n_classes + 1))
    if len(values) != n_classes:
        raise SupportSetError(f"support_values has {len(values)} entries for {n_classes} classes")
    maps = checked_label_maps(images, labels)
    s_img = torch.from_numpy(_prepare_images(images, size, "support image", modality, window))
    soft = torch.stack([
        torch.stack([resize_mask_soft(pad_to_square((lab == v).astype(np.float32)), size)
                     for v in values]) for lab in maps])  # (S, K, s, s)
    return s_img[:, None], soft


@torch.inference_mode()
def segment_text(
    model: TextDriven,
    images,
    class_names: Sequence[str | None] | np.ndarray | torch.Tensor,
    *,
    modality: str = "other",
    modality_name: str | None = None,
    threshold: float = 0.5,
    encoder: TextEncoder | str | None = None,
    cache: EmbeddingCache | None = None,
    window: Sequence[float] | None = None,
    support_images=None,
    support_labels=None,
    support_values: Sequence[int] | None = None,
    batch_size: int = 8,
) -> TextSegmentation | list[TextSegmentation]:
    """Segment the named classes in ``images`` (one 2D image, a stack or a list).

    class_names: names ("left lung"), None for a class given by examples only, or a
    (K, D) array of precomputed text embeddings. modality: intensity normalisation
    ("ct", "mr", "other"); modality_name: the words put in the prompt (default: a
    phrase for ``modality``). support_images / support_labels: optional examples for a
    hybrid model; label value ``support_values[i]`` (default ``i + 1``) marks class ``i``.
    Returns one :class:`TextSegmentation` per image (a single one for a single image).
    """
    if not isinstance(model, TextDriven):
        raise TypeError(f"segment_text needs a TextDriven model, got {type(model).__name__}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    single = isinstance(images, (np.ndarray, torch.Tensor)) and _is_single_image(_to_numpy(images))
    queries = _as_image_list(images, "images")
    if not queries:
        raise SupportSetError("no images given")
    if isinstance(class_names, (np.ndarray, torch.Tensor)):
        text = torch.as_tensor(class_names, dtype=torch.float32)
        if text.ndim != 2 or text.shape[1] != model.config.text_dim:
            raise ValueError(f"precomputed embeddings must be (K, {model.config.text_dim}), "
                             f"got {tuple(text.shape)}")
        names: list[str | None] = [f"class {i + 1}" for i in range(text.shape[0])]
        present = torch.ones(text.shape[0], dtype=torch.bool)
        prompts: list[str | None] = [None] * text.shape[0]
    else:
        if isinstance(class_names, str):
            class_names = [class_names]
        names = list(class_names)
        if not names:
            raise ValueError("give at least one class name")
        text, present, prompts = text_embeddings_for(
            model, names, modality_name=modality_name or modality, encoder=encoder, cache=cache)
    k = len(names)
    size = model.config.resolution
    s_img = s_lab = None
    if support_images is not None or support_labels is not None:
        if support_images is None or support_labels is None:
            raise SupportSetError("give both support_images and support_labels")
        s_img, s_lab = _support_tensors(support_images, support_labels, k, size, modality,
                                        window, support_values)
    if s_img is None and not bool(present.all()):
        raise ValueError("classes without a name need support examples")
    q = torch.from_numpy(_prepare_images(queries, size, "image", modality, window))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs = []
    try:
        for start in range(0, len(queries), batch_size):
            x = q[start:start + batch_size, None].to(device)
            kwargs = {}
            if s_img is not None:  # one support set for the batch: encoded once
                kwargs = {"support_images": s_img[None].to(device),
                          "support_labels": s_lab[None].to(device)}
            logits = model(x, text.to(device), text_present=present.to(device), **kwargs)
            probs.append(torch.sigmoid(logits.float()).cpu())
    finally:
        model.train(was_training)
    prob = torch.cat(probs)  # (Q, K, s, s)
    results = []
    for qi, image in enumerate(queries):
        p = resize_probabilities(prob[qi], image.shape[:2]).numpy().astype(np.float32)
        mask = np.zeros(image.shape[:2], dtype=np.uint8 if k < 255 else np.int32)
        best = p.argmax(axis=0)
        fg = p.max(axis=0) >= threshold
        mask[fg] = best[fg] + 1
        results.append(TextSegmentation(mask=mask, probabilities=p, class_names=names,
                                        prompts=prompts))
    return results[0] if single else results


# ---------------------------------------------------------------------------- command line

def _atomic_write(path: Path, write) -> None:
    atomic_write(path, lambda tmp: write(str(tmp)), keep_suffix=False)


def _first(args: argparse.Namespace, *names: str, default=None):
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            return value
    return default


def run_text_segmentation(args: argparse.Namespace) -> int:
    """Segment ``args.images`` (or ``args.query``) by ``args.text`` names; write masks to
    ``args.out``.

    Writes ``<stem>.png`` (label map, value i = i-th class), optionally ``<stem>.npy``
    probabilities, and ``classes.json`` (values, names, prompts).
    """
    from PIL import Image

    from data_recipes.base import RecipeError
    from incontext.data.readers import read_image_2d, strip_suffix
    from incontext.io.files import check_writable, list_image_files
    from incontext.models import load_model, registry

    names = [n for item in (args.text or []) for n in [item.strip()] if n]
    if not names:
        raise ValueError("--text: give at least one class name")
    model_name = _first(args, "model", "weights", default=registry.DEFAULT_TEXT_MODEL)
    if model_name is None:
        raise ValueError("--model: give a TextDriven weights file (.safetensors)")
    model = load_model(str(model_name), device=_first(args, "device", default="cpu"))
    if not isinstance(model, TextDriven):
        raise ValueError(f"{model_name}: --text needs a TextDriven model, this one is a "
                         f"{type(model).__name__}")
    paths = _first(args, "images", "query", default=[])
    if isinstance(paths, (str, Path)):
        paths = list_image_files(paths)  # a file, a folder or a glob, as for examples
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no images given")
    out = check_output_folder(_first(args, "out", "output", default="."))
    overwrite = bool(getattr(args, "overwrite", False))
    for p in paths:
        check_writable(out / f"{strip_suffix(p.name)}.png", overwrite)
    encoder = None
    if args.text_encoder or args.text_encoder_path:
        opts = {"path": args.text_encoder_path} if args.text_encoder_path else {}
        try:
            encoder = model_text_encoder(model, args.text_encoder or "clip", **opts)
        except TextEncoderError as exc:
            raise ValueError(str(exc)) from None
    cache = EmbeddingCache(args.embedding_cache) if args.embedding_cache else None
    images = []
    for p in paths:
        try:
            images.append(read_image_2d(p))
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
    try:
        results = segment_text(model, images, names,
                               modality=_first(args, "modality", default="other"),
                               modality_name=args.modality_name,
                               threshold=float(_first(args, "threshold", default=0.5)),
                               encoder=encoder, cache=cache,
                               support_images=getattr(args, "support_images", None),
                               support_labels=getattr(args, "support_labels", None),
                               support_values=getattr(args, "support_values", None))
    except TextEncoderError as exc:  # e.g. the minilm extra is not installed
        raise ValueError(str(exc)) from None
    if cache is not None and cache.dirty:
        cache.save()
    for p, res in zip(paths, results, strict=True):
        stem = strip_suffix(p.name)
        _atomic_write(out / f"{stem}.png",
                      lambda t, m=res.mask: Image.fromarray(m.astype(np.uint8)).save(t, "PNG"))
        if args.save_probabilities:
            def write_npy(t, a=res.probabilities):
                with open(t, "wb") as fh:
                    np.save(fh, a.astype(np.float16))
            _atomic_write(out / f"{stem}.npy", write_npy)
    meta = {"classes": [{"value": i + 1, "name": n, "prompt": pr}
                        for i, (n, pr) in enumerate(zip(names, results[0].prompts, strict=True))]}
    _atomic_write(out / "classes.json", lambda t: Path(t).write_text(json.dumps(meta, indent=2)))
    print(f"segmented {len(paths)} image(s) for {len(names)} class(es) -> {out}")
    return 0
