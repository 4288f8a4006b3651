"""Language models on tiny random weights: prefix reuse, pooling masks, images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_tiny
from PIL import Image

from engine.errors import InputError
from engine.language.models import (
    CausalLanguageModel,
    EncoderLanguageModel,
    MultimodalLanguageModel,
)
from engine.language.templates import task_template

TEXTS = [
    "Region 1: 40.1N 73.1W, 1 km2. POIs 3: food 2 (67%), shops 1 (33%).",
    "Region 2: none.",
    "Region 3: 40.3N 73.3W, 3 km2. Trips out 5, in 7; to 1 (40%), 2 (20%). Land use: residential 50%.",
    "Region 4: park.",
    "Region 5: 40.5N 73.5W, 5 km2. POIs 9: nightlife 5 (56%), food 4 (44%), shops 0 (0%).",
]


def test_kinds_are_detected(tiny_causal_dir, tiny_encoder_dir, tiny_qwen2_vl_dir):
    assert isinstance(load_tiny(tiny_causal_dir), CausalLanguageModel)
    assert isinstance(load_tiny(tiny_encoder_dir), EncoderLanguageModel)
    assert isinstance(load_tiny(tiny_qwen2_vl_dir), MultimodalLanguageModel)


def test_unknown_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot load the language model"):
        load_tiny(tmp_path / "no-such-model")


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_prefix_reuse_equals_full_sequence(tiny_causal_dir, batch_size):
    lm = load_tiny(tiny_causal_dir)
    prefix = task_template("crime")
    assert len(lm.prefix_ids(prefix)) > 100  # a real template, not a token or two
    reused = lm.encode(TEXTS, prefix, batch_size=batch_size, reuse_prefix=True)
    full = lm.encode(TEXTS, prefix, batch_size=batch_size, reuse_prefix=False)
    assert reused.shape == (len(TEXTS), 32) and reused.dtype == np.float32
    np.testing.assert_allclose(reused, full, atol=1e-5, rtol=1e-4)


def test_prefix_changes_the_vectors(tiny_causal_dir):
    """The region tokens attend to the task prompt: another task gives other vectors."""
    lm = load_tiny(tiny_causal_dir)
    crime = lm.encode(TEXTS, task_template("crime"))
    income = lm.encode(TEXTS, task_template("income"))
    assert np.abs(crime - income).max() > 1e-3


def test_causal_pooling_is_the_mean_over_region_tokens(tiny_causal_dir):
    """Checked against a plain forward pass of one unpadded sequence."""
    lm = load_tiny(tiny_causal_dir)
    prefix = task_template("check_in")
    prefix_ids = lm.prefix_ids(prefix)
    text_ids = lm.tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        hidden = lm.model(input_ids=torch.tensor([prefix_ids + text_ids]),
                          output_hidden_states=True).hidden_states[-1][0]  # (P + T, H)
    expected = hidden[len(prefix_ids):].mean(0).numpy()
    np.testing.assert_allclose(lm.encode([TEXTS[2]], prefix)[0], expected, atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_causal_dir", "tiny_encoder_dir", "tiny_qwen2_vl_dir"])
def test_padding_never_enters_the_mean(fixture, request):
    """A short text gives the same vector alone and in a batch padded for a long one."""
    lm = load_tiny(request.getfixturevalue(fixture))
    prefix = task_template("service_call")
    short, long = TEXTS[1], TEXTS[2] + " " + TEXTS[4]
    alone = lm.encode([short], prefix, batch_size=1)
    batched = lm.encode([short, long], prefix, batch_size=2)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    assert np.abs(batched[1] - alone[0]).max() > 1e-4


def test_encoder_pools_over_the_region_text(tiny_encoder_dir):
    lm = load_tiny(tiny_encoder_dir)
    vectors = lm.encode(TEXTS, task_template("crime"), batch_size=2)
    assert vectors.shape == (5, 32)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3
    # A template far longer than the model's 512 positions is cut, not an error.
    assert np.isfinite(lm.encode(TEXTS[:1], task_template("crime") * 6)).all()


def _image(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(56, 56, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fixture", ["tiny_qwen2_vl_dir", "tiny_llava_dir"])
def test_multimodal_pooling_excludes_image_tokens_and_padding(fixture, request):
    lm = load_tiny(request.getfixturevalue(fixture))
    texts = [TEXTS[1], TEXTS[2]]
    inputs, pool = lm.inputs(texts, task_template("crime", has_image=True),
                             [_image(0), _image(1)])
    image_positions = inputs["input_ids"] == lm.image_token_id
    assert image_positions.sum() > 0  # the image really expanded into placeholder tokens
    assert inputs["pixel_values"].shape[0] >= 2
    if fixture == "tiny_qwen2_vl_dir":
        assert inputs["image_grid_thw"].shape == (2, 3)
    assert pool[image_positions].sum() == 0
    assert pool[inputs["attention_mask"] == 0].sum() == 0
    counts = [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert pool.sum(1).tolist() == counts
    # The pooled positions are the region text, at the end of each row's real tokens.
    lengths = inputs["attention_mask"].sum(1).tolist()
    for row, (count, length) in enumerate(zip(counts, lengths)):
        assert pool[row, length - count: length].sum() == count


@pytest.mark.parametrize("fixture", ["tiny_qwen2_vl_dir", "tiny_llava_dir"])
def test_multimodal_image_changes_the_vector(fixture, request):
    lm = load_tiny(request.getfixturevalue(fixture))
    assert isinstance(lm, MultimodalLanguageModel)
    prefix = task_template("crime", has_image=True)
    text = [TEXTS[0]]
    first = lm.encode(text, prefix, images=[_image(0)])
    again = lm.encode(text, prefix, images=[_image(0)])
    other = lm.encode(text, prefix, images=[_image(1)])
    np.testing.assert_allclose(first, again, atol=1e-6)
    assert np.abs(first - other).max() > 1e-4
    assert lm.encode(text, prefix).shape == (1, 32)  # text alone works too


def test_text_only_models_refuse_images(tiny_causal_dir):
    lm = load_tiny(tiny_causal_dir)
    with pytest.raises(InputError, match="cannot read images"):
        lm.encode(TEXTS[:1], "x", images=[_image(0)])


def test_is_available(tiny_causal_dir, tmp_path, monkeypatch):
    from engine.language.models import is_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_available("none") and is_available("minilm") and is_available("smollm2")
    assert is_available(str(tiny_causal_dir))
    assert not is_available(str(tmp_path))
    assert not is_available("nobody/no-such-model-xyz")


def test_grouped_query_attention_gives_transformers_own_vectors(tiny_causal_dir):
    """The tiny Llama has 4 query heads over 2 key/value heads: the engine runs it through its
    grouped SDPA (no per-head copies of the keys and values); the vectors, batched and padded,
    are those of transformers' reference ("eager") attention on the same weights."""
    lm = load_tiny(tiny_causal_dir)
    assert lm.model.config._attn_implementation == "topt_grouped_sdpa"
    prefix = task_template("crime")
    ours = lm.encode(TEXTS, prefix, batch_size=3)
    lm.model.set_attn_implementation("eager")
    reference = lm.encode(TEXTS, prefix, batch_size=3)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_qwen2_vl_dir", "tiny_llava_dir"])
def test_multimodal_grouped_attention_gives_transformers_own_vectors(fixture, request):
    """The language model of Qwen2-VL / LLaVA (grouped-query) goes through the grouped SDPA and
    the vision tower through transformers' own; with images and padding the vectors are those of
    transformers' eager attention."""
    lm = load_tiny(request.getfixturevalue(fixture))
    assert lm.model.config._attn_implementation == "topt_grouped_sdpa"
    prefix = task_template("crime", has_image=True)
    texts, images = [TEXTS[0], TEXTS[1], TEXTS[2]], [_image(0), _image(1), _image(2)]
    ours = lm.encode(texts, prefix, images=images, batch_size=3)
    lm.model.set_attn_implementation("eager")
    reference = lm.encode(texts, prefix, images=images, batch_size=3)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mask_batch", [1, 3])
def test_grouped_sdpa_equals_repeated_keys(mask_batch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from engine.language.models import _grouped_sdpa, _prefix_causal_mask

    class Attention:
        num_key_value_groups = 3
        is_causal = True

    torch.manual_seed(0)
    b, t, p = 3, 5, 7
    query = torch.randn(b, 6, t, 8)
    key, value = torch.randn(b, 2, p + t, 8), torch.randn(b, 2, p + t, 8)
    if mask_batch == 1:
        mask = _prefix_causal_mask(p, t, torch.float32, "cpu")  # (1, 1, T, P + T)
    else:
        mask = torch.rand(b, 1, t, p + t) > 0.3  # per-row boolean masks
        mask[..., 0] = True
    ours, _ = _grouped_sdpa(Attention, query, key, value, mask, scaling=0.3)
    expected, _ = sdpa_attention_forward(Attention, query, key, value, mask, scaling=0.3)
    assert ours.shape == (b, t, 6, 8)
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_prefix_buffers_give_the_cache_path_vectors(tiny_causal_dir, batch_size, monkeypatch):
    """The task prompt laid once into per-layer buffers (each batch writes its own keys and
    values after it) gives the vectors of the per-batch DynamicCache path, with texts of
    different lengths and a last batch smaller than the others; every layer reads the buffers."""
    from engine.language import models

    lm = load_tiny(tiny_causal_dir)
    prefix = task_template("crime")
    reads = []
    extend = models._PrefixBuffers.extend

    def counting(self, module, key, value):
        reads.append(module.layer_idx)
        return extend(self, module, key, value)

    monkeypatch.setattr(models._PrefixBuffers, "extend", counting)
    ours = lm.encode(TEXTS, prefix, batch_size=batch_size)
    batches = -(-len(TEXTS) // batch_size)
    assert sorted(reads) == sorted(list(range(lm.model.config.num_hidden_layers)) * batches)
    monkeypatch.setattr(models, "_PrefixBuffers", lambda *args: None)  # the cache path only
    cached = lm.encode(TEXTS, prefix, batch_size=batch_size)
    np.testing.assert_allclose(ours, cached, atol=1e-6, rtol=1e-5)


def test_prefix_buffers_not_read_by_every_layer_fall_back_to_the_cache(tiny_causal_dir,
                                                                      monkeypatch):
    """A model whose attention does not pass the buffers on (here: layer 1 never extends them)
    must not get vectors without the prompt: the batch is run again through the cache."""
    from engine.language import models

    lm = load_tiny(tiny_causal_dir)
    prefix = task_template("crime")
    expected = lm.encode(TEXTS, prefix, batch_size=2)
    extend = models._PrefixBuffers.extend

    def skipping(self, module, key, value):
        if module.layer_idx == 1:
            return key, value  # attends to its own tokens only, and is not counted
        return extend(self, module, key, value)

    monkeypatch.setattr(models._PrefixBuffers, "extend", skipping)
    np.testing.assert_allclose(lm.encode(TEXTS, prefix, batch_size=2), expected,
                               atol=1e-6, rtol=1e-5)
