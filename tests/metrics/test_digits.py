"""The digits classifier: trained by a fixed recipe once, cached as safetensors keyed by the recipe,
reloaded without training, retrained when its file is unusable; its accuracy and Fréchet distance."""

import importlib
import json

import pytest
import torch

import scoresde as ss

digits_module = importlib.import_module("scoresde.metrics.digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder holding one trained classifier (trained here, about 10 s)."""
    folder = tmp_path_factory.mktemp("cache") / "scoresde"
    clf = ss.metrics.digits_classifier(cache_dir=folder)
    return folder, clf


@pytest.mark.slow
def test_the_classifier_is_cached_as_safetensors_keyed_by_its_recipe(cache):
    from safetensors import safe_open

    folder, clf = cache
    files = list(folder.iterdir())
    assert [f.name for f in files] == [f"digits_classifier-{digits_module.recipe_key()}.safetensors"]
    raw = files[0].read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and json.loads(raw[8:8 + header])  # a safetensors header, not a pickle
    with safe_open(str(files[0]), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["recipe"]) == digits_module.RECIPE
    assert float(meta["test_accuracy"]) == clf.test_accuracy > 0.95  # measured 0.981
    assert not any(p.requires_grad for p in clf.parameters()) and not clf.training


@pytest.mark.slow
def test_a_cached_classifier_loads_without_training(cache, monkeypatch):
    folder, clf = cache
    monkeypatch.setattr(digits_module, "_LOADED", {})
    monkeypatch.setattr(digits_module, "_train", lambda: pytest.fail("retrained although the cache holds it"))
    again = ss.metrics.digits_classifier(cache_dir=folder)
    assert again is not clf
    for (k, a), (_, b) in zip(clf.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert again.test_accuracy == clf.test_accuracy
    # the default folder is $XDG_CACHE_HOME/scoresde
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder.parent))
    assert digits_module.default_cache_dir() == folder
    assert ss.metrics.digits_classifier() is again


@pytest.mark.slow
def test_an_unusable_cache_file_is_retrained_with_a_warning(cache, tmp_path, monkeypatch):
    _, clf = cache
    folder = tmp_path / "scoresde"
    folder.mkdir()
    path = folder / f"digits_classifier-{digits_module.recipe_key()}.safetensors"
    path.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(digits_module, "_LOADED", {})
    monkeypatch.setattr(digits_module, "_train", lambda: clf)  # training itself is checked above
    with pytest.warns(UserWarning, match="cannot be used .* retraining it"):
        got = ss.metrics.digits_classifier(cache_dir=folder)
    assert got is clf and path.read_bytes()[8:9] == b"{"  # rewritten as safetensors
    # a file of another recipe is not used either
    monkeypatch.setattr(digits_module, "RECIPE", {**digits_module.RECIPE, "version": 0})
    monkeypatch.setattr(digits_module, "_LOADED", {})
    with pytest.warns(UserWarning, match="another recipe"):
        ss.metrics.digits_classifier(cache_dir=folder)


@pytest.mark.slow
def test_accuracy_and_frechet_distance_on_real_digits(cache):
    _, clf = cache
    test, train = ss.digits_dataset("test"), ss.digits_dataset("train")
    x = test.dequantized(torch.Generator().manual_seed(0))
    assert ss.metrics.label_accuracy(x, test.labels, classifier=clf) > 0.95
    assert ss.metrics.label_accuracy(x, 3, classifier=clf) < 0.2  # one label for all: about its share
    real = train.dequantized(torch.Generator().manual_seed(0))[:500]
    floor = ss.metrics.digits_frechet_distance(real, x, classifier=clf)  # measured 11-14
    noise = ss.metrics.digits_frechet_distance(torch.rand(500, 1, 8, 8) * 2 - 1, x, classifier=clf)
    one_class = ss.metrics.digits_frechet_distance(real[train.labels[:500] == 0], x, classifier=clf)
    assert floor < 25 and noise > 10 * floor and one_class > 10 * floor
    assert digits_module.digits_features(x[:7], classifier=clf).shape == (7, 64)
    flat = ss.metrics.label_accuracy(x.reshape(-1, 64), test.labels, classifier=clf)  # (n, 64) works too
    assert flat == ss.metrics.label_accuracy(x, test.labels, classifier=clf)


@pytest.mark.slow
def test_bad_inputs_are_named(cache):
    _, clf = cache
    with pytest.raises(ss.ArgumentError, match=r"samples must be 8x8 digits of shape \(n, 1, 8, 8\)"):
        ss.metrics.label_accuracy(torch.zeros(4, 1, 16, 16), 1, classifier=clf)
    with pytest.raises(ss.ArgumentError, match=r"labels must hold class labels in \[0, 9\], got 10"):
        ss.metrics.label_accuracy(torch.zeros(2, 1, 8, 8), torch.tensor([1, 10]), classifier=clf)
    with pytest.raises(ss.ArgumentError, match="samples must be finite"):
        ss.metrics.label_accuracy(torch.full((2, 1, 8, 8), float("nan")), 1, classifier=clf)
    with pytest.raises(ss.ArgumentError, match="retrain must be True or False"):
        ss.metrics.digits_classifier(retrain="yes")
