"""segment(reuse=): supports prepared once per support set, and never served stale."""

import numpy as np
import pytest
import torch

import incontext.inference as inference
from incontext.inference import segment
from incontext.models import UniverSeg
from incontext.support_cache import CACHE_KEY, support_key


def _task(seed: int, n: int = 5, colour: bool = True):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    images, labels = [], []
    for _ in range(n + 2):
        cy, cx, r = rng.uniform(14, 34), rng.uniform(14, 34), rng.uniform(6, 12)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        grey = 60 + 120 * disc + rng.normal(0, 8, disc.shape)
        image = np.stack([grey, grey * 0.5, 255 - grey], -1) if colour else grey
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        labels.append(disc * 2)
    return images[:n], labels[:n], images[n:]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UniverSeg(encoder_widths=(8, 8), resolution=32).eval()


def _counting(monkeypatch, module=inference, name: str = "_prepare_supports"):
    """A list that grows by one at each call of ``module.name`` (supports prepared)."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_supports_prepared_once_for_many_calls(model, monkeypatch):
    images, labels, queries = _task(0)
    fresh = [segment(model, q, images, labels) for q in queries]
    calls = _counting(monkeypatch)
    reuse: dict = {}
    kept = [segment(model, q, images, labels, reuse=reuse) for q in queries]
    assert len(calls) == 1 and CACHE_KEY in reuse
    for a, b in zip(fresh, kept, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_another_support_set_is_prepared_again_not_served_stale(model, monkeypatch):
    images, labels, queries = _task(0)
    other_images, other_labels, _ = _task(1)
    other_labels[0] = other_labels[0] // 2  # value 1 in one label map: another task
    calls = _counting(monkeypatch)
    reuse: dict = {}
    segment(model, queries[0], images, labels, reuse=reuse, threshold=0.5, colour="luma")
    got = segment(model, queries[0], other_images, other_labels, reuse=reuse,
                  threshold=0.5, colour="luma")
    want = segment(model, queries[0], other_images, other_labels, threshold=0.5,
                   colour="luma")
    assert len(calls) == 3  # first set, the second set, the call without reuse
    assert got.labels == want.labels == [1, 2]
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)


def test_key_changes_with_a_pixel_a_label_or_a_setting():
    images, labels, _ = _task(2, n=3)
    base = support_key(images, labels, ("other", None))
    assert support_key(list(images), list(labels), ("other", None)) == base
    changed = [im.copy() for im in images]
    changed[1][5, 5, 0] ^= 1
    assert support_key(changed, labels, ("other", None)) != base
    relabelled = [lab.copy() for lab in labels]
    relabelled[2][0, 0] = 7
    assert support_key(images, relabelled, ("other", None)) != base
    assert support_key(images, labels, ("mr", None)) != base
    assert support_key(images, [lab.astype(np.int64) for lab in labels], ("other", None)) != base


def test_bad_supports_still_fail_clearly_with_reuse(model):
    images, labels, queries = _task(3, colour=False)
    labels[1] = labels[1][:-1]
    with pytest.raises(inference.SupportSetError, match="support pair 1"):
        segment(model, queries[0], images, labels, reuse={})


def test_fisher_rendering_of_the_supports_computed_once(model, monkeypatch):
    import incontext.colour as colour

    images, labels, queries = _task(2)
    calls = _counting(monkeypatch, colour, "fisher_weights")
    fresh = [segment(model, q, images, labels, colour="fisher", threshold=0.5)
             for q in queries]
    assert len(calls) == len(queries)  # without reuse: once per call
    calls.clear()
    reuse: dict = {}
    kept = [segment(model, q, images, labels, reuse=reuse, colour="fisher", threshold=0.5)
            for q in queries]
    assert len(calls) == 1  # with reuse: once for the support set
    assert "fisher" in reuse[CACHE_KEY].rendered[(2, 1)]
    for a, b in zip(fresh, kept, strict=True):
        assert a.colours == b.colours == ["fisher"]
        np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_fixed_supports_fingerprinted_once_and_only_for_the_same_arrays(model, monkeypatch):
    import incontext.support_cache as support_cache
    from incontext.support_cache import SUPPORTS_FIXED

    images, labels, queries = _task(3)
    keys = _counting(monkeypatch, support_cache, "support_key")
    plain: dict = {}
    for q in queries:
        segment(model, q, images, labels, reuse=plain, threshold=0.5)
    assert len(keys) == len(queries)  # without the promise: every call
    keys.clear()
    fixed: dict = {SUPPORTS_FIXED: True}
    got = [segment(model, q, images, labels, reuse=fixed, threshold=0.5) for q in queries]
    assert len(keys) == 1  # the same arrays: once
    copies = [im.copy() for im in images]  # equal content, other arrays: computed again
    again = segment(model, queries[0], copies, labels, reuse=fixed, threshold=0.5)
    assert len(keys) == 2
    np.testing.assert_array_equal(again.probabilities, got[0].probabilities)
    changed = [im.copy() for im in images]
    changed[0][:8] = 0  # other content: another key, the supports prepared again
    calls = _counting(monkeypatch)
    segment(model, queries[0], changed, labels, reuse=fixed, threshold=0.5)
    assert len(keys) == 3 and len(calls) == 1


def test_cli_support_arrays_are_read_only():
    from incontext.cli.segment_supports import SupportSet

    images, labels, _ = _task(4, colour=False)
    supports = SupportSet(images=[im.astype(np.float32) for im in images],
                          labels=[lab.astype(np.int64) for lab in labels], ndim=2,
                          names=[str(i) for i in range(len(images))])
    with pytest.raises(ValueError, match="read-only"):
        supports.images[0][0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        supports.labels[0][0, 0] = 1
