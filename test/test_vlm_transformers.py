"""Tests of the transformers VLM backend and LoRA fine-tuning (spatialvlm_ros.vlm.transformers_backend, .finetune).

The model hub is unreachable, so every model here is a TINY one with RANDOM weights (Qwen2-VL, Qwen2.5-VL
and LLaVA with a CLIP vision tower), built from a config in the test with a byte-level BPE tokenizer
trained on a few strings, saved with ``save_pretrained`` to a temporary folder and reloaded through the
package's own loaders with ``HF_HUB_OFFLINE=1``. Random weights write gibberish: the tests check the
contract (types, order, parse results well-formed, errors naming paths), that fine-tuning lowers the
loss on a tiny dataset from the real data engine, and that adapters save, reload and resume; never
what an answer means.

Qwen2-VL's processor wants a video processor, which needs torchvision (not installable here): the
image-only subclasses below drop it, and are registered with ``AutoProcessor`` so that
``AutoProcessor.from_pretrained`` finds them by the class name saved in ``processor_config.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (AutoProcessor, CLIPImageProcessorPil, LlavaConfig,  # noqa: E402
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast, Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor)

from spatialvlm_ros.cli.vlm import add_finetune_arguments, finetune_cli  # noqa: E402
from spatialvlm_ros.errors import ConfigError, InputError  # noqa: E402
from spatialvlm_ros.types import DistanceKind, Pair  # noqa: E402
from spatialvlm_ros.frame import Frame  # noqa: E402
from spatialvlm_ros.geometry.camera import CameraIntrinsics  # noqa: E402
from spatialvlm_ros.training.lora import (ChatCollator, ChatRowsDataset, FinetuneResult, finetune,  # noqa: E402
                                          latest_checkpoint, sample_indices)
from spatialvlm_ros.vlm.base import VLMAnswer  # noqa: E402
from spatialvlm_ros.config import TransformersVLMConfig, VLMConfig, from_mapping  # noqa: E402
from spatialvlm_ros.estimation.vlm import VLMDistanceEstimator  # noqa: E402
from spatialvlm_ros.vlm.registry import build_vlm  # noqa: E402
from spatialvlm_ros.vlm.parsing import ParsedDistance  # noqa: E402
from spatialvlm_ros.vlm.transformers_backend import TransformersVLM  # noqa: E402

CORPUS = ["How far is the red can from the yellow gripper? About 12 centimeters.",
          "What is the gap between the black bowl and the purple tin can? 30 cm. No. Yes, it is 1.5 meters.",
          "system user assistant You are a helpful assistant. USER: ASSISTANT:"]

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's template, as the checkpoints ship it, less the video and vision-id branches.
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

LLAVA_SPECIAL = ["<pad>", "<s>", "</s>", "<image>"]
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor (which needs torchvision)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video processor (which needs torchvision)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def _tokenizer(special: list[str], **tokens: Any) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) trained on a few strings, with ``special`` tokens first."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)


def _text_config(vocab_size: int, **extra: Any) -> dict[str, Any]:
    # A wide init (0.5, not 0.02): near-zero random logits would leave a 32-wide model little for LoRA to move.
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.5,
                **extra)


def _save_qwen(root: Path, family: str) -> None:
    tok = _tokenizer(QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                     extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    # head_dim 16: the three M-RoPE sections (time, height, width) split its 8 frequencies.
    text = _text_config(len(tok), rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                   "rope_theta": 10000.0},
                        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                        pad_token_id=ids["<|endoftext|>"])
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if family == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2)
        model: Any = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **tokens))
        processor_class: Any = ImageOnlyQwen2VLProcessor
    else:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                      window_size=56, fullatt_block_indexes=[1])
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens))
        processor_class = ImageOnlyQwen2_5_VLProcessor
    # What Qwen checkpoints ship: near-greedy "sampling", which the backend must override to sample.
    model.generation_config.update(do_sample=True, temperature=0.1, top_k=1, top_p=0.001)
    model.save_pretrained(root)
    # 56 x 56 to 64 x 64 pixels: every image becomes 4 x 4 patches of 14 px, 4 tokens after the 2 x 2 merge.
    processor_class(image_processor=Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=64 * 64), tokenizer=tok,
                    chat_template=QWEN_TEMPLATE).save_pretrained(root)


def _save_llava(root: Path) -> None:
    tok = _tokenizer(LLAVA_SPECIAL, bos_token="<s>", eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL}
    vision = dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=16, projection_dim=16)
    text = dict(_text_config(len(tok)), model_type="llama", bos_token_id=ids["<s>"], eos_token_id=ids["</s>"])
    LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_id=ids["<image>"],
                                              vision_feature_layer=-1)).save_pretrained(root)
    # No pad token (as Llama ships): the backend must supply one to batch.
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=16, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE).save_pretrained(root)


FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, offline: None) -> dict[str, str]:
    """One tiny random checkpoint folder per family."""
    AutoProcessor.register(Qwen2VLConfig, ImageOnlyQwen2VLProcessor, exist_ok=True)
    AutoProcessor.register(Qwen2_5_VLConfig, ImageOnlyQwen2_5_VLProcessor, exist_ok=True)
    root = tmp_path_factory.mktemp("vlms")
    torch.manual_seed(0)
    for family in FAMILIES:
        if family == "llava":
            _save_llava(root / family)
        else:
            _save_qwen(root / family, family)
    return {family: str(root / family) for family in FAMILIES}


def _image(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _check_answer(answer: VLMAnswer) -> None:
    assert isinstance(answer, VLMAnswer) and isinstance(answer.text, str)
    assert answer.text == answer.text.strip()
    assert answer.latency_ms > 0
    p = answer.parsed
    assert isinstance(p, ParsedDistance)
    if p.valid:
        assert p.reason is None and math.isfinite(p.value_m) and p.value_m >= 0 and p.spread_m >= 0
    else:
        assert isinstance(p.reason, str) and p.reason and math.isnan(p.value_m)


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------

def _config(samples: int = 1, **section: Any) -> VLMConfig:
    """``estimator.vlm`` choosing the transformers backend; ``section`` is its ``transformers`` section."""
    return VLMConfig(backend="transformers", samples=samples, transformers=TransformersVLMConfig(**section))


@pytest.mark.parametrize("family", FAMILIES)
def test_backend_loads_offline_and_answers_in_order(checkpoints: dict[str, str], family: str) -> None:
    vlm = build_vlm(_config(model=checkpoints[family], temperature=0.0, max_new_tokens=6, batch_size=2))
    assert isinstance(vlm, TransformersVLM) and vlm.name == "transformers"
    assert not vlm.model.training and vlm.processor.tokenizer.pad_token is not None
    one = vlm.ask(_image(0), "How far is the red can from the yellow gripper?")
    _check_answer(one)
    # Three questions of different lengths, two per batch: left padding and chunking keep each answer
    # the one its question gets alone (greedy decoding).
    questions = ["How far?", "How far is the red can from the yellow gripper?", "What is the gap?"]
    images = [_image(1), _image(0), _image(2)]
    batch = vlm.ask_batch(images, questions)
    assert [a.text for a in batch] == [vlm.ask(i, q).text for i, q in zip(images, questions)]
    assert batch[1].text == one.text
    for answer in batch:
        _check_answer(answer)
    assert vlm.ask_batch([], []) == []


def test_sampling_overrides_the_checkpoints_top_k(checkpoints: dict[str, str]) -> None:
    vlm = build_vlm(_config(model=checkpoints["qwen2_vl"], temperature=1.5, max_new_tokens=8))
    torch.manual_seed(0)
    texts = {a.text for a in vlm.ask_batch([_image(0)] * 4, ["How far is the red can?"] * 4)}
    assert len(texts) > 1   # top_k=1 from generation_config would make all four the same


def test_vlm_estimator_runs_on_the_transformers_backend(checkpoints: dict[str, str]) -> None:
    config = _config(samples=2, model=checkpoints["qwen2_5_vl"], temperature=0.0, max_new_tokens=4, default_unit="m")
    frame = Frame(rgb=_image(3, 48), intrinsics=CameraIntrinsics(fx=40.0, fy=40.0, cx=23.5, cy=23.5, width=48,
                                                                 height=48), stamp_ns=7)
    estimates = VLMDistanceEstimator(config).estimate(frame, [Pair("yellow gripper", "red can")], DistanceKind.GAP)
    assert len(estimates) == 1 and estimates[0].stamp_ns == 7 and estimates[0].answer_text is not None


def test_the_backend_takes_its_own_section() -> None:
    config = from_mapping(VLMConfig, {"backend": "transformers", "openai": {"model": "served", "max_tokens": 7},
                                      "transformers": {"model": "m", "max_new_tokens": 9, "max_time_s": 3.0,
                                                       "batch_size": 5, "default_unit": "cm",
                                                       "system_prompt": "Be brief."}})
    opts = config.transformers
    assert (opts.model, opts.temperature, opts.max_new_tokens, opts.max_time_s, opts.batch_size,
            opts.default_unit, opts.system_prompt) == ("m", 0.0, 9, 3.0, 5, "cm", "Be brief.")
    assert (opts.device, opts.dtype, opts.local_files_only, opts.trust_remote_code, opts.adapter) == \
        ("cpu", "float32", False, False, "")


@pytest.mark.parametrize("bad, match", [({"dtype": "int8"}, "dtype"), ({"batch_size": 0}, "batch_size"),
                                        ({"default_unit": "furlong"}, "default_unit"),
                                        ({"model": ""}, "model")])
def test_bad_options_are_config_errors(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=f"estimator.vlm.transformers.{match}"):
        from_mapping(VLMConfig, {"transformers": {"model": "m", **bad}}, prefix="estimator.vlm.")


def test_missing_model_folder_names_the_path(offline: None, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError,
                       match=f"estimator.vlm.transformers.model: model folder '{missing}' does not exist"):
        build_vlm(_config(model=str(missing)))


def test_uncached_hub_id_offline_says_so(offline: None) -> None:
    with pytest.raises(ConfigError, match="cannot load 'nobody/no-such-vlm' .*offline"):
        build_vlm(_config(model="nobody/no-such-vlm"))


def test_bad_inputs(checkpoints: dict[str, str], tmp_path: Path) -> None:
    vlm = build_vlm(_config(model=checkpoints["qwen2_vl"], max_new_tokens=2))
    with pytest.raises(InputError, match="2 images but 1 questions"):
        vlm.ask_batch([_image(0), _image(1)], ["How far?"])
    with pytest.raises(InputError, match="uint8 RGB"):
        vlm.ask(np.zeros((8, 8), np.float32), "How far?")
    with pytest.raises(ConfigError, match="not an adapter folder"):
        vlm.load_adapter(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated scenes through the real data engine (about 50 rows)."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from spatialvlm_ros.synthesis.config import SynthesisConfig
    from spatialvlm_ros.synthesis.engine import run_local
    from spatialvlm_ros.synthesis.sources import open_source
    out = tmp_path_factory.mktemp("spatial")
    cfg = SynthesisConfig()
    assert run_local(open_source("sim:2", cfg), out, cfg).rows >= 8
    return out


# High learning rate, four rows, adapters on attention and MLP: a tiny random model reliably overfits
# them within 15 steps (the loss falls to about a third). Dropout on, so resuming must reseed it.
TRAIN = dict(lr=3e-2, lora_r=8, batch_size=2, grad_accum=2, max_rows=4, save_every=5, log_every=5, seed=3,
             lora_dropout=0.1, target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"))


@pytest.fixture(scope="module")
def trained(checkpoints: dict[str, str], dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> FinetuneResult:
    """15 steps on the tiny Qwen2-VL, uninterrupted."""
    return finetune(dataset, checkpoints["qwen2_vl"], tmp_path_factory.mktemp("run"), steps=15, **TRAIN)


def test_rows_render_with_the_answer_as_the_only_label(checkpoints: dict[str, str], dataset: Path) -> None:
    processor = AutoProcessor.from_pretrained(checkpoints["qwen2_vl"], local_files_only=True)
    data = ChatRowsDataset(dataset, processor, max_rows=3)
    assert len(data) == 3
    rows = [json.loads(line) for line in (dataset / "data.jsonl").read_text().splitlines()[:3]]
    items = [data[i] for i in range(3)]
    for row, item in zip(rows, items):
        labels = item["labels"]
        assert labels.shape == item["input_ids"].shape == item["attention_mask"].shape
        answer = row["messages"][-1]["content"][0]["text"]
        assert processor.tokenizer.decode(labels[labels != -100]) == answer + "<|im_end|>\n"
        assert labels[0] == -100   # the prompt (system, image, question) is masked
    batch = ChatCollator(processor.tokenizer.pad_token_id)(items)
    longest = max(len(i["input_ids"]) for i in items)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, longest)
    short = min(range(3), key=lambda k: len(items[k]["input_ids"]))
    n = len(items[short]["input_ids"])
    if n < longest:   # right padding: pad id, mask 0, label -100
        assert batch["attention_mask"][short, n:].eq(0).all() and batch["labels"][short, n:].eq(-100).all()
        assert batch["input_ids"][short, n:].eq(processor.tokenizer.pad_token_id).all()
    assert batch["image_grid_thw"].shape == (3, 3)
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())


def test_finetune_lowers_the_loss_and_saves_a_safetensors_adapter(trained: FinetuneResult) -> None:
    assert (trained.start_step, trained.steps, len(trained.losses), trained.rows) == (0, 15, 15, 4)
    assert all(math.isfinite(v) for v in trained.losses)
    first, last = np.mean(trained.losses[:3]), np.mean(trained.losses[-3:])
    assert last < 0.7 * first, trained.losses
    adapter = trained.adapter_dir
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    assert not list(adapter.glob("*.bin"))
    # keep_checkpoints=2: the newest two of 5, 10, 15 remain
    assert sorted(p.name for p in trained.out_dir.glob("checkpoint-*")) == ["checkpoint-000010", "checkpoint-000015"]
    assert latest_checkpoint(trained.out_dir) == trained.out_dir / "checkpoint-000015"


def test_adapter_reloads_through_the_backend(checkpoints: dict[str, str], trained: FinetuneResult) -> None:
    opts = TransformersVLMConfig(model=checkpoints["qwen2_vl"], adapter=str(trained.adapter_dir),
                                 temperature=0.0, max_new_tokens=4)
    tuned = TransformersVLM.from_config(opts)
    plain = TransformersVLM.from_config(TransformersVLMConfig(model=checkpoints["qwen2_vl"]))
    lora = {k for k in tuned.model.state_dict() if "lora_" in k}
    assert lora and not {k for k in plain.model.state_dict() if "lora_" in k}
    _check_answer(tuned.ask(_image(0), "How far is the red can?"))
    from safetensors.torch import load_file
    saved = load_file(trained.adapter_dir / "adapter_model.safetensors")
    assert len(saved) == len(lora)


def test_resume_continues_the_step_count_and_the_losses(checkpoints: dict[str, str], dataset: Path,
                                                        trained: FinetuneResult, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    first = finetune(dataset, checkpoints["qwen2_vl"], tmp_path, steps=10, **TRAIN)
    assert (first.start_step, first.steps) == (0, 10)
    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    flags = [f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}" for k, v in TRAIN.items()]
    args = parser.parse_args(["--dataset", str(dataset), "--model", checkpoints["qwen2_vl"], "--out", str(tmp_path),
                              "--steps", "15", "--local-files-only", *flags])
    assert finetune_cli(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["start_step"], summary["steps"], summary["rows"]) == (10, 15, 4)
    state = json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())
    # Same rows per step and dropout reseeded per step: the resumed run repeats the uninterrupted one.
    np.testing.assert_allclose(state["losses"], trained.losses, rtol=1e-4)


def test_gradient_checkpointing_computes_the_same_losses(checkpoints: dict[str, str], dataset: Path,
                                                         trained: FinetuneResult, tmp_path: Path) -> None:
    run = finetune(dataset, checkpoints["qwen2_vl"], tmp_path, steps=3, **TRAIN, gradient_checkpointing=True)
    np.testing.assert_allclose(run.losses, trained.losses[:3], rtol=1e-4)


def test_resume_with_other_settings_is_refused(checkpoints: dict[str, str], dataset: Path,
                                               trained: FinetuneResult) -> None:
    with pytest.raises(ConfigError, match="other settings \\(lr differ\\)"):
        finetune(dataset, checkpoints["qwen2_vl"], trained.out_dir, steps=20, **{**TRAIN, "lr": 1e-3})


@pytest.mark.parametrize("call, match", [
    (lambda ckpt, tmp: finetune(tmp, ckpt, tmp / "out", steps=1), "data.jsonl does not exist"),
    (lambda ckpt, tmp: finetune(tmp, ckpt, tmp / "out", steps=1, batch=2), "unknown option\\(s\\) batch"),
    (lambda ckpt, tmp: finetune(tmp, ckpt, tmp / "out", steps=0), "bad steps"),
    (lambda ckpt, tmp: finetune(tmp, str(tmp / "nope"), tmp / "out"), "finetune --model: model folder .*nope"),
])
def test_finetune_errors(checkpoints: dict[str, str], tmp_path: Path, call: Callable[[str, Path], Any],
                         match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call(checkpoints["qwen2_vl"], tmp_path)


def test_sample_order_is_a_function_of_seed_and_position() -> None:
    assert sample_indices(1, 5, 3, 9) == sample_indices(1, 5, 0, 12)[3:]
    assert sorted(sample_indices(1, 5, 5, 5)) == list(range(5))
    assert sample_indices(1, 5, 0, 5) != sample_indices(2, 5, 0, 5)
