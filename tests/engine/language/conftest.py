"""Tiny random-weight language models and a small region dataset, built offline."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from engine.data.dataset import RegionDataset, SpatialPriors, View
from engine.language.templates import TASKS, render, task_template

torch.set_num_threads(1)

SPECIALS = ["[PAD]", "[UNK]", "<s>", "</s>", "<|im_start|>", "<|im_end|>",
            "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}")


def word_tokenizer(tokenizer_class=None):
    """A WordLevel tokenizer trained on the templates and a few region texts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer_class = tokenizer_class or PreTrainedTokenizerFast
    corpus = [render(t) for t in TASKS.values()] + [task_template("anything", "a b c")]
    corpus += [f"Region {k}: 40.{k}N 73.{k}W, {k} km2. POIs {k}: poi_0{k} {k} ({k}%)."
               for k in range(10)]
    corpus += ["Trips out in to Land use none residential commercial shops food park"]
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer = tokenizer_class(tokenizer_object=backend, unk_token="[UNK]",
                                        pad_token="[PAD]", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[4:]})
    return tokenizer


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory):
    """A 2-layer Llama (hidden 32, grouped-query attention) with a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = word_tokenizer()
    tokenizer.chat_template = CHAT
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer (from its package)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from engine.language.models import _packaged_file

    path, _ = _packaged_file("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                        architectures=["BertModel"])
    torch.manual_seed(0)
    model = BertModel(config)
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory):
    """A Qwen2-VL with a 1-layer vision tower and a 2-layer text model, and its processor."""
    from transformers import (
        Qwen2TokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
    )

    tokenizer = word_tokenizer(Qwen2TokenizerFast)
    ids = tokenizer.convert_tokens_to_ids
    tokenizer.chat_template = CHAT
    # Saved as an image processor and a tokenizer: the full Qwen2VLProcessor also wants a video
    # processor, which needs torchvision; the loader builds an images-only processor.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56)
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "max_position_embeddings": 4096,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2,
                       "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        architectures=["Qwen2VLForConditionalGeneration"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    folder = tmp_path_factory.mktemp("tiny-qwen2-vl")
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def region_dataset(n: int = 6, with_names: bool = True) -> RegionDataset:
    """n square regions in UTM 18N (Manhattan), with POI, land use, trips, fields and targets."""
    rng = np.random.default_rng(0)
    x0, y0 = 585_000.0, 4_511_000.0
    centroids = np.array([[x0 + 700.0 * k, y0 + 500.0 * (k % 3)] for k in range(n)])
    poi = rng.integers(0, 30, size=(n, 5)).astype(np.float64)
    landuse = rng.dirichlet(np.ones(3), size=n) * 0.9
    flow = sp.csr_matrix(rng.integers(0, 50, size=(n, n)).astype(np.float64))
    fields = np.column_stack([rng.uniform(20, 60, n), rng.uniform(0, 1, n)])
    priors = SpatialPriors(
        centroids=centroids, crs="EPSG:32618", adjacency=sp.csr_matrix((n, n)),
        neighbours=np.zeros((n, 1), dtype=np.int64), neighbour_distance=np.zeros((n, 1)),
        degree=np.zeros(n, dtype=np.int64), mobility_out=np.asarray(flow.sum(1)).ravel(),
        mobility_in=np.asarray(flow.sum(0)).ravel(), distance_quantiles=np.array([500.0]),
        area=np.full(n, 250_000.0),
    )
    views = {
        "poi": View("poi", "counts", poi, ["food", "shops", "nightlife", "offices", "parks"]),
        "landuse": View("landuse", "shares", landuse, ["residential", "commercial", "industrial"]),
        "mobility": View("mobility", "flow", flow, [str(k) for k in range(n)]),
        "fields": View("fields", "continuous", fields, ["median_age", "green_share"]),
    }
    return RegionDataset(
        region_ids=np.arange(100, 100 + n),
        views=views,
        priors=priors,
        names=np.array([f"Block {chr(65 + k)}" for k in range(n)]) if with_names else None,
    )


@pytest.fixture
def dataset() -> RegionDataset:
    return region_dataset()


CHAT_LLAVA = CHAT.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A LLaVA with a 1-layer CLIP vision tower and a 2-layer Llama, and its processor."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [*SPECIALS[4:], "<image>"]})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28},
                                         crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=CHAT_LLAVA)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, max_position_embeddings=4096),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        architectures=["LlavaForConditionalGeneration"],
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def load_tiny(path):
    """A tiny model in float32 (the default is bfloat16 on CPUs that have it)."""
    from engine.language.models import load_language_model

    return load_language_model(str(path), dtype=torch.float32)
