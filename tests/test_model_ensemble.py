"""incontext.models.ensemble.ModelEnsemble: the mean probability of several models."""

import numpy as np
import pytest
import torch
from fake_models import EchoQuery, MeanSupportLabel

from incontext.inference import segment
from incontext.models.ensemble import ModelEnsemble


def test_probability_is_the_members_mean():
    ens = ModelEnsemble([EchoQuery(16), MeanSupportLabel(16)])
    q = torch.rand(2, 1, 16, 16) * 0.9 + 0.05
    si = torch.rand(2, 3, 1, 16, 16)
    sl = (torch.rand(2, 3, 1, 16, 16) > 0.5).float()
    expected = (q.clamp(1e-4, 1 - 1e-4) + sl.mean(dim=1).clamp(1e-4, 1 - 1e-4)) / 2
    torch.testing.assert_close(torch.sigmoid(ens(q, si, sl)), expected, atol=1e-5, rtol=0)
    assert ens.config.resolution == 16 and len(list(ens.parameters())) == 2


def test_segment_runs_an_ensemble_like_one_model():
    rng = np.random.default_rng(0)
    images = rng.random((5, 20, 20)).astype(np.float32)
    labels = (images > 0.5).astype(np.uint8)
    ens = ModelEnsemble([EchoQuery(16), EchoQuery(16)])
    a = segment(ens, images[0], images, labels, threshold=0.5, tiles=1)
    b = segment(EchoQuery(16), images[0], images, labels, threshold=0.5, tiles=1)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_bad_ensembles_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        ModelEnsemble([EchoQuery(16)])
    with pytest.raises(ValueError, match="one input resolution"):
        ModelEnsemble([EchoQuery(16), EchoQuery(32)])


def test_load_model_joins_names_with_plus(tmp_path):
    from incontext.models import UniverSeg, WeightsError, load_model, save

    torch.manual_seed(0)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save(UniverSeg(encoder_widths=(8, 8), resolution=16), a)
    save(UniverSeg(encoder_widths=(8, 8), resolution=16), b)
    ens = load_model(f"{a}+{b}")
    assert isinstance(ens, ModelEnsemble) and ens.names == [str(a), str(b)]
    with pytest.raises(WeightsError, match="joined by"):
        load_model(f"{a}+")
    c = tmp_path / "c.safetensors"
    save(UniverSeg(encoder_widths=(8, 8), resolution=32), c)
    with pytest.raises(WeightsError, match="one input resolution"):
        load_model(f"{a}+{c}")
    with pytest.raises(WeightsError, match="unknown model"):
        load_model(f"{a}+no-such-model")
