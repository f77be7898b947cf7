"""safetensors + JSON round trip, registry, and safe loading of foreign checkpoints."""

import json
import pickle

import pytest
import torch

from incontext.models import (
    UniverSeg,
    WeightsError,
    available_models,
    create_model,
    load,
    load_model,
    save,
)


def _small():
    torch.manual_seed(0)
    return UniverSeg(encoder_widths=(8, 8, 8), resolution=32)


def test_save_load_round_trip(tmp_path):
    model = _small()
    path = save(model, tmp_path / "m.safetensors", provenance={"steps": 3})
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["architecture"] == "universeg"
    assert meta["config"]["encoder_widths"] == [8, 8, 8]
    assert meta["provenance"] == {"steps": 3}
    loaded = load(path)
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert isinstance(load_model(str(path)), UniverSeg)


def test_a_checkpoint_folder_loads_its_weights(tmp_path):
    model = _small()
    best = tmp_path / "run" / "best"
    save(model, best / "model.safetensors")
    for loaded in (load(best), load_model(str(best))):
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="empty: a folder without model.safetensors"):
        load(tmp_path / "empty")


def test_missing_or_broken_files_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load(tmp_path / "nope.safetensors")
    path = save(_small(), tmp_path / "m.safetensors")
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="m.safetensors"):
        load(path)
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(WeightsError, match="m.json"):
        load(path)
    with pytest.raises(WeightsError, match=r"\.safetensors"):
        save(_small(), tmp_path / "m.pt")


def test_public_style_checkpoint_loads_strict(tmp_path):
    reference = create_model("universeg-v1")
    ckpt = tmp_path / "universeg_v1_nf64_ss64_STA.pt"
    torch.save(reference.state_dict(), ckpt)
    model = load_model("universeg-v1", path=ckpt)
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    nested = tmp_path / "nested.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
               nested)
    load_model("universeg-v1", path=nested)


def test_foreign_checkpoint_mismatch_and_pickles_are_refused(tmp_path):
    bad = tmp_path / "small.pt"
    torch.save(_small().state_dict(), bad)
    with pytest.raises(WeightsError, match="shape mismatch|missing"):
        load_model("universeg-v1", path=bad)

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(WeightsError, match="safely"):
        load_model("universeg-v1", path=evil)


def test_registry():
    assert "universeg-v1" in available_models()
    with pytest.raises(WeightsError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(WeightsError, match="path="):
        load_model("universeg-v1")


def test_model_info_counts_parameters_and_marks_the_defaults():
    from incontext.models import model_info
    from incontext.models.registry import DEFAULT_MODEL, DEFAULT_TEXT_MODEL

    infos = {name: model_info(name) for name in available_models()}
    for name, info in infos.items():
        if info["weights"] is not None:  # counted from the file header: equals the loaded model
            model = load_model(name)
            assert info["parameters"] == sum(p.numel() for p in model.parameters()), name
    assert infos["universeg-v1"]["weights"] is None
    assert infos["universeg-v1"]["parameters"] == infos["incontext-universeg-w64-vessels"][
        "parameters"]  # the same architecture, counted from a fresh instance
    assert [n for n, i in infos.items() if i["role"] == "default"] == [DEFAULT_MODEL]
    assert [n for n, i in infos.items() if i["role"] == "default text"] == [DEFAULT_TEXT_MODEL]
    with pytest.raises(WeightsError, match="unknown model"):
        model_info("no-such-model")


def test_models_command_lists_every_model(capsys):
    import json

    from incontext.cli import main
    from incontext.models.registry import DEFAULT_MODEL

    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == available_models()
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert f"{DEFAULT_MODEL} *" in text and "path=" in text
    squashed = " ".join(text.split())  # descriptions are printed whole, brackets included
    assert "needs incontext[text]" in squashed


def test_every_shipped_model_loads_with_its_registered_config():
    from incontext.models.registry import REGISTRY, WEIGHTS_DIR

    shipped = [name for name in available_models() if REGISTRY[name].weights]
    assert "incontext-universeg-w64-vessels" in shipped
    for name in shipped:
        path = WEIGHTS_DIR / REGISTRY[name].weights
        assert path.stat().st_size <= 20 * 1024 * 1024, name
        model = load_model(name)
        assert model.config == REGISTRY[name].config, name
