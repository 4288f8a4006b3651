"""Prompt4RE model: shapes, the Ridge start, serialization."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from engine.errors import InputError
from engine.models.modeling_prompt4re import Prompt4RE, Prompt4REConfig
from engine.models.serialization import load_model, save_model

torch.set_num_threads(1)


def data(n=12, d=8, h=20, seed=0):
    rng = np.random.default_rng(seed)
    region = rng.normal(size=(n, d)).astype(np.float32)
    semantic = rng.normal(size=(n, h)).astype(np.float32)
    y = region @ rng.normal(size=d) + rng.normal(scale=0.1, size=n)
    return region, semantic, y


def test_shapes_with_and_without_query_index():
    region, semantic, _ = data()
    model = Prompt4RE(Prompt4REConfig(hidden=16, heads=4), 8, 20).eval()
    r, s = torch.as_tensor(region), torch.as_tensor(semantic)
    assert model(r, s).shape == (12,)
    out = model(r, s, torch.tensor([3, 5]))
    assert out.shape == (2,)
    torch.testing.assert_close(out, model(r, s)[[3, 5]])


def test_starts_exactly_at_the_ridge_prediction():
    region, semantic, y = data()
    ridge = Ridge(alpha=1.0).fit(region, y)
    torch.manual_seed(0)
    model = Prompt4RE(Prompt4REConfig(hidden=16, heads=4), 8, 20)
    model.init_head_from_ridge(ridge.coef_, float(ridge.intercept_))
    out = model.predict(torch.as_tensor(region), torch.as_tensor(semantic)).numpy()
    np.testing.assert_allclose(out, ridge.predict(region), rtol=1e-5, atol=1e-5)
    # ...and the semantic half is trainable: one step moves away from the Ridge prediction.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    loss = ((model(torch.as_tensor(region), torch.as_tensor(semantic)) - torch.as_tensor(y, dtype=torch.float32)) ** 2).mean()
    loss.backward()
    assert model.head.weight.grad[0, 8:].abs().sum() > 0
    optimizer.step()
    assert model.head.weight[0, 8:].abs().sum() > 0


def test_log1p_target_and_scaling_are_undone_by_predict():
    model = Prompt4RE(Prompt4REConfig(hidden=8, heads=2, target_transform="log1p"), 4, 6)
    model.set_normalisation(torch.zeros(4), torch.ones(4), torch.zeros(6), torch.ones(6),
                            target_mean=2.0, target_scale=0.5)
    model.init_head_from_ridge(np.zeros(4), 1.0)  # model output 1 -> log1p(y) = 2.5
    out = model.predict(torch.zeros(3, 4), torch.zeros(3, 6))
    np.testing.assert_allclose(out.numpy(), np.expm1(2.5), rtol=1e-6)


def test_save_load_round_trip(tmp_path):
    region, semantic, y = data()
    model = Prompt4RE(Prompt4REConfig(hidden=16, heads=4, target_transform="log1p"), 8, 20)
    model.set_normalisation(torch.ones(8), 2 * torch.ones(8), torch.zeros(20), torch.ones(20), 3.0, 2.0)
    save_model(model, model.config, tmp_path)
    loaded = load_model(tmp_path)
    r, s = torch.as_tensor(region), torch.as_tensor(semantic)
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.predict(r, s), model.predict(r, s), rtol=0, atol=0)


def test_bad_config_is_input_error():
    with pytest.raises(InputError):
        Prompt4REConfig(target_transform="sqrt")
    with pytest.raises(InputError):
        Prompt4REConfig(hidden=10, heads=4)
