"""Tests of the compact in-house spatial VLM (spatialvlm_ros.vlm.compact) and its training (.train).

Every model here is TINY (width 16, one decoder layer) and built in the test; the backend test trains
one for a few seconds on a synthetic task ("how far ...?" -> "20 centimeters." / "1.5 meters."
depending on the image's colour) so the answers mean something and parse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from PIL import Image  # noqa: E402

from spatialvlm_ros.errors import ConfigError, InputError  # noqa: E402
from spatialvlm_ros.vlm import compact  # noqa: E402
from spatialvlm_ros.vlm.base import VLMConfig, build_vlm  # noqa: E402
from spatialvlm_ros.vlm.compact import (EOS, SPECIALS, CompactModelConfig, CompactSpatialModel,  # noqa: E402
                                        CompactVLM, CompactVLMOptions, WordTokenizer, load_weights, prompt_ids,
                                        save_weights)
from spatialvlm_ros.vlm.parsing import parse_answer  # noqa: E402
from spatialvlm_ros.vlm.train import TrainConfig, learning_rate, sample_batch, load_training_set, train  # noqa: E402

QUESTION = "How far is the red can from the yellow gripper?"
ANSWERS = {"dark": "20 centimeters.", "bright": "1.5 meters."}


def tiny_config(vocab_size: int, **kw: int) -> CompactModelConfig:
    return CompactModelConfig(vocab_size=vocab_size, d_model=16, n_heads=2, text_layers=1, image_layers=1, **kw)


def images(value: int, n: int = 1) -> torch.Tensor:
    return torch.full((n, 96, 128, 3), value, dtype=torch.uint8)


@pytest.fixture(scope="module")
def tokenizer() -> WordTokenizer:
    return WordTokenizer.build([QUESTION, *ANSWERS.values(), "Is it true? Yes. No."])


def sequence(tok: WordTokenizer, answer: str) -> tuple[list[int], int]:
    prompt = prompt_ids(tok, QUESTION)
    return prompt + tok.encode(answer) + [SPECIALS.index(EOS)], len(prompt)


def train_steps(model: CompactSpatialModel, tok: WordTokenizer, steps: int) -> list[float]:
    """Teacher-forced steps on a fixed two-image batch: dark image -> 20 cm, bright image -> 1.5 m."""
    seqs = [sequence(tok, ANSWERS["dark"]), sequence(tok, ANSWERS["bright"])]
    n = max(len(s) for s, _ in seqs) - 1
    ids = torch.zeros(2, n, dtype=torch.long)
    targets = torch.full((2, n), -100, dtype=torch.long)
    for row, (seq, first) in enumerate(seqs):
        ids[row, :len(seq) - 1] = torch.tensor(seq[:-1])
        targets[row, first - 1:len(seq) - 1] = torch.tensor(seq[first:])
    batch = torch.cat([images(20), images(230)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(steps):
        logits = model(batch, ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def trained(tokenizer: WordTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = CompactSpatialModel(tiny_config(len(tokenizer)))
    train_steps(model, tokenizer, 150)
    folder = tmp_path_factory.mktemp("weights")
    save_weights(model.eval(), tokenizer, folder)
    return folder


# --------------------------------------------------------------------------------- tokenizer

@pytest.mark.parametrize("text", [QUESTION, "20 centimeters.", "1.5 meters.", "Is it true? Yes."])
def test_tokenizer_round_trip(tokenizer: WordTokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert 1 not in ids  # no <unk>
    assert tokenizer.decode(ids) == text


def test_tokenizer_is_deterministic_and_marks_unknown_words(tokenizer: WordTokenizer, tmp_path: Path) -> None:
    again = WordTokenizer.build(reversed([QUESTION, *ANSWERS.values(), "Is it true? Yes. No."]))
    assert again == tokenizer and tokenizer.tokens[:5] == SPECIALS
    assert tokenizer.decode(tokenizer.encode("How far is the blue can")) == "How far is the<unk> can"
    tokenizer.save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json") == tokenizer


def test_tokenizer_rejects_a_vocabulary_without_specials() -> None:
    with pytest.raises(ConfigError, match="must start with"):
        WordTokenizer(("a", "b"))


# --------------------------------------------------------------------------------- model

def test_forward_shapes_and_shared_images(tokenizer: WordTokenizer) -> None:
    model = CompactSpatialModel(tiny_config(len(tokenizer)))
    ids = torch.randint(5, len(tokenizer), (6, 11))
    logits = model(images(50, 2), ids, image_index=torch.tensor([0, 0, 0, 1, 1, 1]))
    assert logits.shape == (6, 11, len(tokenizer))
    assert model.encode_images(images(50, 3)).shape == (3, model.config.image_tokens, 16)


def test_cached_decoding_matches_the_full_forward(tokenizer: WordTokenizer) -> None:
    torch.manual_seed(1)
    model = CompactSpatialModel(tiny_config(len(tokenizer))).eval()
    ids = torch.randint(5, len(tokenizer), (1, 9))
    with torch.inference_mode():
        full = model(images(90), ids)
        kv = model.image_keys_values(model.encode_images(images(90)))
        caches: list[list[torch.Tensor]] = [[] for _ in model.layers]
        head = model.decode(ids[:, :6], kv, caches=caches)
        steps = [model.decode(ids[:, i:i + 1], kv, torch.tensor([[i]]), caches) for i in range(6, 9)]
    torch.testing.assert_close(torch.cat([head, *steps], dim=1), full, atol=1e-5, rtol=1e-4)


def test_batched_generation_matches_one_at_a_time(tokenizer: WordTokenizer) -> None:
    # Prompts of different lengths are left-padded; each must still decode as if alone.
    torch.manual_seed(2)
    model = CompactSpatialModel(tiny_config(len(tokenizer))).eval()
    prompts = [prompt_ids(tokenizer, QUESTION), prompt_ids(tokenizer, "Is it true?")]
    batch = torch.cat([images(20), images(200)])
    together = model.generate(batch, prompts, 12)
    alone = [model.generate(batch[i:i + 1], [p], 12)[0] for i, p in enumerate(prompts)]
    assert together == alone


def test_bad_model_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="image_width"):
        CompactModelConfig(vocab_size=50, image_width=100)


def test_training_steps_reduce_the_loss(tokenizer: WordTokenizer) -> None:
    torch.manual_seed(0)
    losses = train_steps(CompactSpatialModel(tiny_config(len(tokenizer))), tokenizer, 25)
    assert losses[-1] < 0.5 * losses[0]


def test_save_load_round_trip_gives_identical_outputs(trained: Path) -> None:
    model, tok = load_weights(trained)
    again, _ = load_weights(trained)
    ids = torch.tensor([prompt_ids(tok, QUESTION)])
    with torch.inference_mode():
        torch.testing.assert_close(model(images(20), ids), again(images(20), ids), atol=0, rtol=0)
    assert json.loads((trained / "model_config.json").read_text())["d_model"] == 16


# --------------------------------------------------------------------------------- backend

def test_backend_answers_through_the_protocol(trained: Path) -> None:
    vlm = CompactVLM.from_options(CompactVLMOptions(weights=str(trained), batch_size=2))
    dark, bright = np.full((240, 320, 3), 20, np.uint8), np.full((240, 320, 3), 230, np.uint8)
    answers = vlm.ask_batch([dark, bright, dark], [QUESTION] * 3)
    assert [a.text for a in answers] == [ANSWERS["dark"], ANSWERS["bright"], ANSWERS["dark"]]
    assert [round(a.parsed.value_m, 3) for a in answers] == [0.2, 1.5, 0.2]
    assert all(a.parsed == parse_answer(a.text) and a.latency_ms > 0 for a in answers)
    assert vlm.ask(bright, QUESTION, depth=np.ones((240, 320), np.float32)).text == ANSWERS["bright"]


def test_backend_is_registered_and_names_a_missing_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no_weights"
    monkeypatch.setattr(compact, "PACKAGED_WEIGHTS", missing)
    with pytest.raises(ConfigError, match="no_weights.*does not exist"):
        build_vlm(VLMConfig(backend="compact"))
    (missing).mkdir()
    with pytest.raises(ConfigError, match="lacks model.safetensors"):
        CompactVLM.from_options(CompactVLMOptions(weights=str(missing)))


def test_backend_refuses_bad_inputs(trained: Path) -> None:
    vlm = CompactVLM.from_options(CompactVLMOptions(weights=str(trained)))
    with pytest.raises(InputError, match="uint8"):
        vlm.ask(np.zeros((8, 8), np.float32), QUESTION)
    with pytest.raises(InputError, match="2 images but 1 questions"):
        vlm.ask_batch([np.zeros((8, 8, 3), np.uint8)] * 2, [QUESTION])


# --------------------------------------------------------------------------------- training

@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A two-image dataset in the data engine's layout (data.jsonl + images/ + synthesis_config.json)."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, (value, answer) in enumerate([(20, ANSWERS["dark"]), (230, ANSWERS["bright"])]):
        Image.fromarray(np.full((240, 320, 3), value, np.uint8)).save(root / "images" / f"sim{i:06d}.png")
        for j, question in enumerate([QUESTION, "Is the red can left of the bowl?"]):
            rows.append({"id": f"sim{i:06d}-{j:03d}", "images": [f"images/sim{i:06d}.png"], "question": question,
                         "answer": answer if j == 0 else "Yes."})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "synthesis_config.json").write_text(json.dumps({"seed": 7}))
    return root


def test_batches_carry_loss_only_on_answers(dataset: Path, tokenizer: WordTokenizer) -> None:
    tok = WordTokenizer.build([QUESTION, *ANSWERS.values(), "Is the red can left of the bowl?", "Yes."])
    data = load_training_set(dataset, tok, 128, 96, 160)
    assert data.images.shape == (2, 96, 128, 3) and data.n_rows == 4 and data.data_seed == 7
    imgs, ids, targets, index = sample_batch(data, np.random.default_rng(0), 2, 2)
    assert imgs.shape[0] == 2 and ids.shape == targets.shape and sorted(index.tolist()) == [0, 0, 1, 1]
    for row in range(len(ids)):
        answer = [t for t in targets[row] if t != -100]
        assert tok.decode(answer) in {*ANSWERS.values(), "Yes."} and answer[-1] == SPECIALS.index(EOS)


def test_train_writes_weights_and_resumes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    small = dict(data=str(dataset), out=str(out), d_model=16, n_heads=2, text_layers=1, batch_images=2,
                 questions_per_image=2, warmup_steps=1, log_every=1, checkpoint_every=2, held_out_seed=1_000_000)
    first = train(TrainConfig(steps=2, **small))
    second = train(TrainConfig(steps=4, **small))
    assert (first.steps, second.steps) == (2, 4)
    record = json.loads((out / "training_config.json").read_text())
    assert record["data_seed"] == 7 and record["held_out_seed"] == 1_000_000 and record["steps_done"] == 4
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    vlm = CompactVLM.from_options(CompactVLMOptions(weights=str(out)))
    assert isinstance(vlm.ask(np.zeros((240, 320, 3), np.uint8), QUESTION).text, str)


def test_learning_rate_warms_up_and_decays() -> None:
    cfg = TrainConfig(data="d", out="o", steps=100, warmup_steps=10, lr=1.0)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(55, cfg) < learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(10, cfg, time_fraction=1.0) == pytest.approx(0.05)


def test_train_refuses_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the dataset"):
        train(TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "out")))
