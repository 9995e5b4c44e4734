"""Tests of the compact in-house spatial VLM (vlm.compact) and its training (training.compact).

Every model here is TINY (width 16, one decoder layer) and built in the test. The backend tests train one
for a few seconds, through the real training losses, on a synthetic dataset in the data engine's layout
(``data.jsonl`` + ``images/`` + ``scenes/``): a dark image answers "20 centimeters.", a bright one "1.5
meters.", so the answers mean something and parse.
"""

from __future__ import annotations

import json
import shutil
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from PIL import Image  # noqa: E402

from spatialvlm_ros.errors import ConfigError, InputError  # noqa: E402
from spatialvlm_ros.training.compact import (TrainConfig, answer_text, batch_losses, learning_rate,  # noqa: E402
                                             load_training_set, read_rows, sample_batch, train, vocabulary_texts)
from spatialvlm_ros.config import VLMConfig  # noqa: E402
from spatialvlm_ros.vlm.registry import build_vlm  # noqa: E402
from spatialvlm_ros.vlm.compact import backend  # noqa: E402
from spatialvlm_ros.config import CompactVLMConfig  # noqa: E402
from spatialvlm_ros.vlm.compact.backend import CompactVLM  # noqa: E402
from spatialvlm_ros.vlm.compact.network import (CompactModelConfig, CompactSpatialModel,  # noqa: E402
                                                count_parameters, extended_embedding, fit_image, load_weights,
                                                save_weights)
from spatialvlm_ros.vlm.compact.tokenizer import (EOS_ID, NUM_ID, REF_A_ID, REF_B_ID, REL_ID, SPECIALS,  # noqa: E402
                                                  WordTokenizer, fill_numbers, fill_references, mask_numbers,
                                                  mask_references, prompt_ids, reference_spans, spell_number)
from spatialvlm_ros.vlm.parsing import parse_answer  # noqa: E402
from spatialvlm_ros.vlm.templates import ANSWER_FRAMES, QUESTION_FRAMES  # noqa: E402

QUESTION = "How far is the red can from the yellow gripper?"
YES_NO = "Is the red can left of the bowl?"
YES_NO_ANSWER = "Yes, the red can is left of the bowl."   # the decoder writes "Yes, <a> is left of <b>."
ANSWERS = {20: ("20 centimeters.", 0.2), 230: ("1.5 meters.", 1.5)}   # image brightness -> answer, truth (m)


def tiny_config(vocab_size: int, **kw: object) -> CompactModelConfig:
    return CompactModelConfig(vocab_size=vocab_size, d_model=16, n_heads=2, text_layers=1, image_layers=1, **kw)


def images(value: int, n: int = 1) -> torch.Tensor:
    return torch.full((n, 96, 128, 3), value, dtype=torch.uint8)


def write_dataset(root: Path, with_scenes: bool = True) -> Path:
    """Two images in the data engine's layout; each names the red can (object 1) at a different pixel."""
    (root / "images").mkdir(parents=True)
    (root / "scenes").mkdir()
    rows = []
    for i, (value, (answer, truth)) in enumerate(ANSWERS.items()):
        image_id = f"sim{i:06d}"
        Image.fromarray(np.full((240, 320, 3), value, np.uint8)).save(root / "images" / f"{image_id}.png")
        common = {"image_id": image_id, "images": [f"images/{image_id}.png"], "object_ids": [1, 0]}
        rows.append({**common, "id": f"{image_id}-000", "question": QUESTION, "answer": answer, "truth_m": truth,
                     "answer_value": float(answer.split()[0]), "qualitative": False, "family": "quantity",
                     "object_references": ["the red can", "the yellow gripper"]})
        rows.append({**common, "id": f"{image_id}-001", "question": YES_NO, "answer": YES_NO_ANSWER, "truth_m": 0.1,
                     "answer_value": None, "qualitative": True, "family": "predicate",
                     "object_references": ["the red can", "the bowl"]})
        objects = [{"object_id": k, "pixel_centre": [40 + 200 * k + 20 * i, 60], "box": {
            "centre_m": [0.8, 0.1 * k, 0.05], "width_m": 0.06, "height_m": 0.12, "depth_m": 0.06}} for k in (0, 1)]
        if with_scenes:
            (root / "scenes" / f"{image_id}.json").write_text(json.dumps(
                {"image_id": image_id, "width": 320, "height": 240, "objects": objects}))
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "synthesis_config.json").write_text(json.dumps({"seed": 7}))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(dataset: Path) -> WordTokenizer:
    return WordTokenizer.build(vocabulary_texts(read_rows(dataset)))


def fit(model: CompactSpatialModel, dataset: Path, tok: WordTokenizer, steps: int) -> list[float]:
    """``steps`` optimizer steps of the real training losses on the whole two-image dataset."""
    data = load_training_set(dataset, tok, 128, 96, model.config.max_len)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    totals = []
    model.train()
    for _ in range(steps):
        loss = batch_losses(model, sample_batch(data, rng, 2, 2))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    return totals


@pytest.fixture(scope="module")
def trained(dataset: Path, tokenizer: WordTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = CompactSpatialModel(tiny_config(len(tokenizer)))
    fit(model, dataset, tokenizer, 250)
    folder = tmp_path_factory.mktemp("weights")
    save_weights(model.eval(), tokenizer, folder)
    return folder


# --------------------------------------------------------------------------------- tokenizer and numbers

@pytest.mark.parametrize("text", [QUESTION, "<num> centimeters.", "<num> meters.", "Yes."])
def test_tokenizer_round_trip(tokenizer: WordTokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert 1 not in ids  # no <unk>
    assert tokenizer.decode(ids) == text


def test_tokenizer_is_deterministic_and_marks_unknown_words(tokenizer: WordTokenizer, dataset: Path,
                                                            tmp_path: Path) -> None:
    again = WordTokenizer.build(reversed(vocabulary_texts(read_rows(dataset))))
    assert again == tokenizer and tokenizer.tokens[:len(SPECIALS)] == SPECIALS
    assert tokenizer.decode(tokenizer.encode("How far is the blue can")) == "How far is the<unk> can"
    assert tokenizer.encode("<num>") == [NUM_ID]
    tokenizer.save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json") == tokenizer


def test_tokenizer_reads_capitals_and_synonyms_as_the_words_it_knows() -> None:
    tok = WordTokenizer.build(["Is the grey mug to the left of the purple can?"])
    assert tok.encode("Is the Gray mug to the left of the Violet can?") == tok.encode(
        "Is the grey mug to the left of the purple can?")
    assert tok.encode("Gray mug") == [tok.id(" grey"), tok.id(" mug")]     # a first word has no space before it
    both = WordTokenizer.build(["Can you see the red can?"])                    # "Can" and " can" are two words
    assert both.spelling(" Can") == " can" and both.spelling("Red") == " red"
    boxes = WordTokenizer.build(["Is the red box left of the blue can?", "How far is the gripper?"])
    assert boxes.encode("Is the red cube left of the blue cylinder?") == boxes.encode(
        "Is the red box left of the blue can?")
    assert boxes.encode("How far is the hand?") == boxes.encode("How far is the gripper?")
    assert tok.unknown_words("Is the GRAY mug left of the zebra?") == [" zebra"]


def test_tokenizer_rejects_a_vocabulary_without_specials() -> None:
    with pytest.raises(ConfigError, match="must start with"):
        WordTokenizer(("a", "b"))


@pytest.mark.parametrize("answer, masked", [
    ("About 20 centimeters.", "About <num> centimeters."),
    ("The red can is 1.5 meters tall.", "The red can is <num> meters tall."),
    ("The box is 0 inches above the ground plane.", "The box is <num> inches above the ground plane."),
    ("Yes.", "Yes."),
])
def test_answers_numbers_become_placeholders(answer: str, masked: str) -> None:
    assert mask_numbers(answer) == masked


CHOICE_REFS = ("the can that's more to the right of the image", "the red can")


@pytest.mark.parametrize("question_frame", QUESTION_FRAMES["choice"])
@pytest.mark.parametrize("answer_frame", ANSWER_FRAMES["choice"])
@pytest.mark.parametrize("chosen", [0, 1])
def test_choice_references_round_trip_through_placeholders(question_frame: str, answer_frame: str, chosen: int,
                                                           tokenizer: WordTokenizer) -> None:
    # Every choice phrasing of the data engine: the answer's references become <a>/<b> (one token each), and
    # copying the question's words back at the references' spans restores the answer exactly.
    a, b = CHOICE_REFS
    fill = dict(A=a, B=b, cmp="further back", X=CHOICE_REFS[chosen], Y=CHOICE_REFS[1 - chosen])
    question = question_frame.format(**fill)
    answer = answer_frame.format(**fill)
    answer = answer[:1].upper() + answer[1:]
    masked = mask_references(answer, CHOICE_REFS)
    assert ("<a>" in masked) == (chosen == 0 or "{Y}" in answer_frame) and "can" not in masked
    pieces = WordTokenizer.pieces(question)
    spans = reference_spans(pieces, CHOICE_REFS)
    assert ["".join(pieces[s:e + 1]).strip() for s, e in spans] == list(CHOICE_REFS)
    assert fill_references(masked, pieces, spans) == answer


@pytest.mark.parametrize("question, answer, references, expected", [
    # A reference the question does not hold cannot be copied: it is spelled out, whole.
    ("How far is it from the bowl?", "The red can is 3 inches from the bowl.", ["the red can", "the bowl"],
     "The red can is <num> inches from <b>."),
    ("How far is the can from it?", "The can on the left is 3 inches from the can.", ["the can", "the can on the left"],
     "The can on the left is <num> inches from <a>."),
    # A digit inside a reference is not the answer's number.
    ("How tall is the 2 liter bottle?", "The 2 liter bottle is 30 centimeters tall.", ["the 2 liter bottle"],
     "<a> is <num> centimeters tall."),
])
def test_answer_text_masks_references_then_numbers(question: str, answer: str, references: list[str],
                                                   expected: str) -> None:
    assert answer_text({"question": question, "answer": answer, "object_references": references,
                        "answer_value": 1.0}) == expected


@pytest.mark.parametrize("text, values, expected", [
    ("About <num> centimeters.", [0.234], "About 23 centimeters."),
    ("It is <num> meters tall.", [0.234], "It is 0.23 meters tall."),
    ("<num> feet apart.", [0.9144], "3.0 feet apart."),
    ("<num> inches", [0.0254 * 14.6], "15 inches"),
    ("It is <num> more.", [0.5], "It is 0.50 meters more."),   # no unit word: metres, said so
    ("About <num> centimeters.", [], "About <num> centimeters."),  # no value: stays, parses as no estimate
])
def test_numbers_are_written_in_the_unit_the_decoder_chose(text: str, values: list[float], expected: str) -> None:
    filled = fill_numbers(text, values)
    assert filled == expected
    parsed = parse_answer(filled)
    assert parsed.valid == bool(values)
    if values:
        assert parsed.value_m == pytest.approx(values[0], rel=0.05)


def test_spelled_numbers_keep_two_significant_figures() -> None:
    assert [spell_number(v, "centimeters") for v in (0.004, 0.05, 0.123, 1.234)] == ["0.40", "5.0", "12", "123"]


# --------------------------------------------------------------------------------- model

def test_forward_shapes_and_shared_images(tokenizer: WordTokenizer) -> None:
    model = CompactSpatialModel(tiny_config(len(tokenizer)))
    ids = torch.randint(len(SPECIALS), len(tokenizer), (6, 11))
    out = model(images(50, 2), ids, image_index=torch.tensor([0, 0, 0, 1, 1, 1]))
    assert out.logits.shape == (6, 11, len(tokenizer)) and out.log_value.shape == (6, 11)
    assert out.attributes.shape == (6, 11, 8) and out.pointer.shape == (6, 11, model.config.image_tokens)
    assert model.encode_images(images(50, 3)).shape == (3, model.config.image_tokens, 16)


def test_cached_decoding_matches_the_full_forward(tokenizer: WordTokenizer) -> None:
    torch.manual_seed(1)
    model = CompactSpatialModel(tiny_config(len(tokenizer))).eval()
    ids = torch.randint(len(SPECIALS), len(tokenizer), (1, 9))
    with torch.inference_mode():
        full = model(images(90), ids)
        context = model.image_context(model.encode_images(images(90)))
        caches: list[list[torch.Tensor]] = [[] for _ in model.layers]
        head = model.decode(ids[:, :6], context, caches=caches)
        steps = [model.decode(ids[:, i:i + 1], context, torch.tensor([[i]]), caches) for i in range(6, 9)]
    for field in ("logits", "log_value", "pointer"):
        pieces = [getattr(o, field) for o in (head, *steps)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), getattr(full, field), atol=1e-5, rtol=1e-4)


def test_batched_generation_matches_one_at_a_time(tokenizer: WordTokenizer) -> None:
    # Prompts of different lengths are left-padded; each must still decode as if alone.
    torch.manual_seed(2)
    model = CompactSpatialModel(tiny_config(len(tokenizer))).eval()
    prompts = [prompt_ids(tokenizer, QUESTION), prompt_ids(tokenizer, "Is it?")]
    batch = torch.cat([images(20), images(200)])
    together = model.generate(batch, prompts, 12)
    alone = [model.generate(batch[i:i + 1], [p], 12)[0] for i, p in enumerate(prompts)]
    assert [g.ids for g in together] == [g.ids for g in alone]
    assert [g.spans for g in together] == [g.spans for g in alone]
    for a, b in zip(together, alone):
        assert a.values == pytest.approx(b.values, rel=1e-4)
    # Each slot's span lies inside its own question.
    for g, prompt in zip(together, prompts):
        assert len(g.spans) == 2 and all(0 <= s <= e < len(prompt) - 5 for s, e in g.spans)


def test_decoding_stops_after_a_final_token(tokenizer: WordTokenizer) -> None:
    torch.manual_seed(2)
    free = CompactSpatialModel(tiny_config(len(tokenizer))).eval()
    every_word = tuple(range(len(SPECIALS), len(tokenizer)))
    stopping = CompactSpatialModel(tiny_config(len(tokenizer), final_tokens=every_word)).eval()
    stopping.load_state_dict(free.state_dict())
    prompt = [prompt_ids(tokenizer, QUESTION)]
    long, short = free.generate(images(20), prompt, 12)[0], stopping.generate(images(20), prompt, 12)[0]
    assert len(long.ids) > 1 and short.ids == long.ids[:1]


def test_the_relation_slot_reads_both_referent_slots(tokenizer: WordTokenizer) -> None:
    # What <r> passes on is computed from <a>'s and <b>'s attributes: change what <b> reads, <r> changes.
    torch.manual_seed(3)
    model = CompactSpatialModel(tiny_config(len(tokenizer))).eval()
    ids = torch.tensor([prompt_ids(tokenizer, QUESTION)])
    r = ids.shape[1] - 1
    assert ids[0, r] == REL_ID and ids[0, r - 1] == REF_B_ID and ids[0, r - 2] == REF_A_ID
    with torch.inference_mode():
        base = model(images(90), ids)
        model.attribute_head.bias[6] += 5.0      # every slot now reads its object far to the right
        moved = model(images(90), ids)
        for layer in (model.relation[-1], model.comparison_out):
            layer.weight.zero_()
            layer.bias.zero_()
        cut = model(images(90), ids)
        model.attribute_head.bias[6] -= 5.0
        cut_base = model(images(90), ids)
    assert not torch.allclose(base.logits[0, r], moved.logits[0, r])
    # Without the relation MLP and the comparison scores, <r> no longer depends on the attributes at all.
    torch.testing.assert_close(cut.logits[0, r], cut_base.logits[0, r])


def test_bad_model_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="image_width"):
        CompactModelConfig(vocab_size=50, image_width=100)
    assert [CompactModelConfig(vocab_size=50, text_layers=n).pointer_after for n in (1, 2, 3, 4)] == [0, 0, 1, 1]


def test_training_steps_reduce_every_loss(dataset: Path, tokenizer: WordTokenizer) -> None:
    torch.manual_seed(0)
    model = CompactSpatialModel(tiny_config(len(tokenizer)))
    data = load_training_set(dataset, tokenizer, 128, 96, model.config.max_len)
    batch = sample_batch(data, np.random.default_rng(0), 2, 2)
    before = {k: v.item() for k, v in batch_losses(model, batch).items()}
    fit(model, dataset, tokenizer, 120)
    after = {k: v.item() for k, v in batch_losses(model, batch).items()}
    for key in ("answer", "value", "attributes", "pointer", "span", "holds", "total"):
        assert after[key] < 0.5 * before[key], key


def test_save_load_round_trip_gives_identical_outputs(trained: Path) -> None:
    model, tok = load_weights(trained)
    again, _ = load_weights(trained)
    ids = torch.tensor([prompt_ids(tok, QUESTION)])
    with torch.inference_mode():
        a, b = model(images(20), ids), again(images(20), ids)
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.log_value, b.log_value, atol=0, rtol=0)
    assert json.loads((trained / "model_config.json").read_text())["d_model"] == 16


# --------------------------------------------------------------------------------- backend

def test_backend_answers_through_the_protocol(trained: Path) -> None:
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(trained), batch_size=2))
    dark, bright = np.full((240, 320, 3), 20, np.uint8), np.full((240, 320, 3), 230, np.uint8)
    answers = vlm.ask_batch([dark, bright, dark], [QUESTION] * 3)
    assert [a.text.split()[1:] for a in answers] == [["centimeters."], ["meters."], ["centimeters."]]
    assert [a.parsed.value_m for a in answers] == pytest.approx([0.2, 1.5, 0.2], rel=0.15)
    assert all(a.parsed == parse_answer(a.text) and a.latency_ms > 0 for a in answers)
    # The references are copied from the question by the span heads, not spelled by the decoder.
    assert vlm.ask(bright, YES_NO, depth=np.ones((240, 320), np.float32)).text == YES_NO_ANSWER


def test_backend_is_registered_and_names_a_missing_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no_weights"
    monkeypatch.setattr(backend, "PACKAGED_WEIGHTS", missing)
    with pytest.raises(ConfigError, match="no_weights.*does not exist"):
        build_vlm(VLMConfig(backend="compact"))
    (missing).mkdir()
    with pytest.raises(ConfigError, match="lacks model.safetensors"):
        CompactVLM.from_config(CompactVLMConfig(weights=str(missing)))


def test_backend_reads_rgba_and_greyscale_frames_as_rgb(trained: Path) -> None:
    """A renderer's RGBA frame is its RGB; a greyscale frame is grey RGB: the same answers, not an error."""
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(trained)))
    for value in (20, 230):
        rgb = np.full((240, 320, 3), value, np.uint8)
        rgba = np.concatenate([rgb, np.full((240, 320, 1), 7, np.uint8)], axis=2)
        expected = vlm.ask(rgb, QUESTION).text
        assert [vlm.ask(im, QUESTION).text for im in (rgba, rgb[..., 0], rgb[..., :1])] == [expected] * 3


def test_backend_warns_once_of_words_it_never_learned(trained: Path, caplog: pytest.LogCaptureFixture) -> None:
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(trained)))
    image = np.zeros((240, 320, 3), np.uint8)
    vlm.ask(image, QUESTION)
    assert "never learned" not in caplog.text
    for _ in range(3):
        vlm.ask(image, "How far is the gray cube from the yellow gripper?")
    warnings = [r.getMessage() for r in caplog.records if "never learned" in r.getMessage()]
    assert len(warnings) == 1 and "'cube', 'gray'" in warnings[0]


def test_backend_refuses_bad_inputs(trained: Path) -> None:
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(trained)))
    with pytest.raises(InputError, match="uint8"):
        vlm.ask(np.zeros((8, 8), np.float32), QUESTION)
    with pytest.raises(InputError, match=r"RGBA \(H, W, 4\).*\(8, 8, 2\)"):
        vlm.ask(np.zeros((8, 8, 2), np.uint8), QUESTION)
    with pytest.raises(InputError, match="2 images but 1 questions"):
        vlm.ask_batch([np.zeros((8, 8, 3), np.uint8)] * 2, [QUESTION])
    with pytest.raises(InputError, match="a question of .* tokens"):
        vlm.ask(np.zeros((8, 8, 3), np.uint8), "far " * 200)


def test_fit_image_keeps_the_vertical_field_of_view() -> None:
    """4:3 frames are only resized; wider ones lose their sides, narrower ones get their edges repeated."""
    rng = np.random.default_rng(0)
    four_three = rng.integers(0, 256, (240, 320, 3), np.uint8)
    assert np.array_equal(fit_image(four_three, 128, 96),
                          np.asarray(Image.fromarray(four_three).resize((128, 96), Image.BOX)))
    # 16:9 (240x427): a red strip on each side outside the middle 320 columns is never seen.
    wide = np.zeros((240, 427, 3), np.uint8)
    wide[:, :53] = wide[:, 53 + 320:] = (255, 0, 0)
    wide[:, 53:53 + 320] = four_three
    assert np.array_equal(fit_image(wide, 128, 96), fit_image(four_three, 128, 96))
    # Portrait (320x240): the frame keeps its height (a row stays at the same fraction of it) and its pixels
    # stay square (a 40x40 square stays 16x16 in the 96-pixel model image); the sides repeat the edge columns.
    tall = np.full((320, 240, 3), 90, np.uint8)
    tall[:, 0] = (0, 200, 0)
    tall[:, -1] = (0, 0, 200)
    tall[140:180, 100:140] = 255
    fitted = fit_image(tall, 128, 96)
    white = np.argwhere(fitted[..., 1] > 200)
    assert white[:, 0].min() == 42 and white[:, 0].max() == 53 and np.ptp(white[:, 1]) + 1 == 12
    assert (fitted[:, :10] == (0, 200, 0)).all() and (fitted[:, -10:] == (0, 0, 200)).all()


def test_backend_warns_once_per_frame_size_it_crops(trained: Path, caplog: pytest.LogCaptureFixture) -> None:
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(trained)))
    for shape in ((240, 320), (480, 640), (320, 240), (240, 427), (240, 427), (720, 1280)):
        assert vlm.ask(np.zeros((*shape, 3), np.uint8), QUESTION).parsed.valid
    cropped = [r.getMessage() for r in caplog.records if "wider than" in r.getMessage()]
    assert len(cropped) == 2 and "427x240" in cropped[0] and "1280x720" in cropped[1]
    assert "middle 320 columns (13% of each side unseen)" in cropped[0] and "4:3 camera" in cropped[0]


# --------------------------------------------------------------------------------- training

def test_batches_carry_the_answer_number_and_object_targets(dataset: Path, tokenizer: WordTokenizer) -> None:
    data = load_training_set(dataset, tokenizer, 128, 96, 160)
    assert data.images.shape == (2, 96, 128, 3) and data.n_rows == 4 and data.data_seed == 7
    batch = sample_batch(data, np.random.default_rng(0), 2, 2)
    assert batch.images.shape[0] == 2 and batch.ids.shape == batch.targets.shape
    assert sorted(batch.image_index.tolist()) == [0, 0, 1, 1]
    for row in range(len(batch.ids)):
        answer = [t for t in batch.targets[row] if t != -100]
        text = tokenizer.decode(answer)
        assert text in {"<num> centimeters.", "<num> meters.", "Yes, <a> is left of <b>."} and answer[-1] == EOS_ID
        # The references' spans: "the red can" is pieces 3-5 of QUESTION and 1-3 of YES_NO (+1 for <bos>).
        first = 4 if text.startswith("<num>") else 2
        assert batch.spans[row, 0].tolist() == [first, first + 2]
        assert tokenizer.decode(batch.ids[row, first:first + 3]) == "the red can"
        a, b = batch.slot_positions[row]
        assert batch.ids[row, a] == REF_A_ID and b == a + 1
        # Slot <a> is object 1, at (240 + 20 i, 60) px in image i; slot <b> object 0, at (40 + 20 i, 60) px.
        i = list(ANSWERS).index(int(batch.images[batch.image_index[row]].mean()))
        grid_row = int(60 / 240 * 12) * 16
        assert batch.patches[row].tolist() == [grid_row + int((240 + 20 * i) / 20), grid_row + int((40 + 20 * i) / 20)]
        assert batch.attributes[row, 0, 1] == pytest.approx(0.1)
        # "Is the red can left of the bowl?" holds (truth +0.1 m); a distance asks no relation.
        assert batch.holds[row] == 1 if text.startswith("Yes") else np.isnan(batch.holds[row])
        if text.startswith("<num>"):
            assert batch.targets[row, batch.value_positions[row]] == NUM_ID
            assert math.exp(batch.log_values[row]) in (pytest.approx(0.2), pytest.approx(1.5))
        else:
            assert batch.value_positions[row] == -1 and math.isnan(batch.log_values[row])


def test_training_refuses_images_of_another_aspect(tmp_path: Path, tokenizer: WordTokenizer) -> None:
    """Object centres and pointer targets are fractions of the whole image, which inference would crop."""
    data = write_dataset(tmp_path / "d")
    for image in (data / "images").iterdir():
        Image.fromarray(np.zeros((240, 427, 3), np.uint8)).save(image)
    with pytest.raises(InputError, match=r"is 427x240, not the model's aspect 128x96"):
        load_training_set(data, tokenizer, 128, 96, 160)
    assert len(load_training_set(data, tokenizer, 128, 72, 160).images) == 2   # 16:9 weights read 16:9 data


def test_a_dataset_without_scene_records_trains_the_text_only(tmp_path: Path, tokenizer: WordTokenizer) -> None:
    data = load_training_set(write_dataset(tmp_path / "d", with_scenes=False), tokenizer, 128, 96, 160)
    batch = sample_batch(data, np.random.default_rng(0), 2, 2)
    assert (batch.patches == -1).all() and np.isnan(batch.attributes).all()
    losses = batch_losses(CompactSpatialModel(tiny_config(len(tokenizer))), batch)
    assert losses["pointer"].item() == 0 and losses["attributes"].item() == 0 and losses["answer"].item() > 0


def test_train_writes_weights_and_resumes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    small = dict(data=str(dataset), out=str(out), d_model=16, n_heads=2, text_layers=1, batch_images=2,
                 questions_per_image=2, warmup_steps=1, log_every=1, checkpoint_every=2, held_out_seed=1_000_000)
    first = train(TrainConfig(steps=2, **small))
    second = train(TrainConfig(steps=4, **small))
    assert (first.steps, second.steps) == (2, 4)
    record = json.loads((out / "training_config.json").read_text())
    assert record["data_seed"] == 7 and record["held_out_seed"] == 1_000_000 and record["steps_done"] == 4
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    assert set(log[0]["loss"]) == {"answer", "value", "attributes", "pointer", "span", "holds", "total"}
    # Every training answer ends with "." and has no other: decoding may stop there without an <eos> step.
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(out)))
    assert vlm.model.config.final_tokens == (vlm.tokenizer.id("."),)
    assert isinstance(vlm.ask(np.zeros((240, 320, 3), np.uint8), QUESTION).text, str)


def test_resuming_with_another_architecture_is_refused(dataset: Path, tmp_path: Path) -> None:
    small = dict(data=str(dataset), out=str(tmp_path / "run"), d_model=16, n_heads=2, batch_images=2,
                 questions_per_image=2, warmup_steps=1, checkpoint_every=1)
    train(TrainConfig(steps=1, text_layers=1, **small))
    with pytest.raises(ConfigError, match="does not fit the model.*--text-layers"):
        train(TrainConfig(steps=2, text_layers=2, **small))


def test_init_starts_from_earlier_weights_and_learns_new_words(
        dataset: Path, trained: Path, tmp_path: Path) -> None:
    """``--init``: the first step's loss is the trained model's, far below a random start's; new words are added."""
    small = dict(data=str(dataset), batch_images=2, questions_per_image=2, warmup_steps=1, log_every=1, lr=1e-4)
    scratch = train(TrainConfig(out=str(tmp_path / "scratch"), steps=1, d_model=16, n_heads=2, text_layers=1,
                                **small))
    tuned = train(TrainConfig(out=str(tmp_path / "tuned"), steps=1, init=str(trained), **small))
    assert tuned.final_loss < 0.5 * scratch.final_loss
    assert (tmp_path / "tuned" / "tokenizer.json").read_text() == (trained / "tokenizer.json").read_text()
    other = with_new_word(dataset, tmp_path / "other", "zebra")
    wider = dict(small, data=str(other), init=str(trained), out=str(tmp_path / "zebra"))
    extended = train(TrainConfig(steps=1, **wider))
    assert extended.final_loss < 0.5 * scratch.final_loss        # the old words kept what they had learned
    old_model, old_tok = load_weights(trained)
    new_model, new_tok = load_weights(tmp_path / "zebra")
    first_question = json.loads((other / "data.jsonl").read_text().splitlines()[0])["question"]
    assert new_tok.tokens == (*old_tok.tokens, " zebra") and new_tok.unknown_words(first_question) == []
    assert new_model.config.vocab_size == old_model.config.vocab_size + 1
    # A model trained from a trained one records how its start was made.
    train(TrainConfig(out=str(tmp_path / "again"), steps=1, init=str(tmp_path / "tuned"), **small))
    record = json.loads((tmp_path / "again" / "training_config.json").read_text())
    assert record["init_training"] == json.loads((tmp_path / "tuned" / "training_config.json").read_text())
    assert train(TrainConfig(steps=2, **wider)).steps == 2   # resumes with the grown vocabulary


def with_new_word(dataset: Path, folder: Path, word: str) -> Path:
    """A copy of ``dataset`` whose first question ends in ``word`` (a word the trained model never read)."""
    rows = [json.loads(line) for line in (dataset / "data.jsonl").read_text().splitlines()]
    shutil.copytree(dataset, folder)
    rows[0]["question"] = rows[0]["question"].replace("?", f" {word}?")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_learning_only_new_words_keeps_every_old_answer(dataset: Path, trained: Path, tmp_path: Path) -> None:
    """``learn="new_words"``: the new word's embedding is trained, every other weight is bit for bit the initial one."""
    from spatialvlm_ros.cli import main

    other = with_new_word(dataset, tmp_path / "other", "zebra")
    out = tmp_path / "words"
    assert main(["train", str(other), "--out", str(out), "--init", str(trained), "--learn", "new-words", "--steps",
                 "3", "--lr", "0.05", "--batch-images", "2", "--questions-per-image", "2"]) == 0
    old_model, _ = load_weights(trained)
    new_model, new_tok = load_weights(out)
    old_state, new_state = old_model.state_dict(), new_model.state_dict()
    assert set(old_state) == set(new_state)
    for name, tensor in old_state.items():
        if name != "embed.weight":
            assert torch.equal(new_state[name], tensor), name
    embedding, known = new_state["embed.weight"], len(old_state["embed.weight"])
    assert torch.equal(embedding[:known], old_state["embed.weight"])
    assert not torch.allclose(embedding[known:], extended_embedding(old_state["embed.weight"], known + 1)[known:])
    assert new_tok.tokens[-1] == " zebra" and new_model.config.final_tokens == old_model.config.final_tokens
    record = json.loads((out / "training_config.json").read_text())
    assert record["learn"] == "new_words" and record["parameters"] == count_parameters(new_model)
    assert record["init_training"] is None          # the trained fixture was saved without a record
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    before, after = (CompactVLM.from_config(CompactVLMConfig(weights=str(w))) for w in (trained, out))
    for question in (QUESTION, YES_NO):
        assert after.ask(image, question).text == before.ask(image, question).text


def test_learning_new_words_resumes_and_refuses_what_would_move_old_weights(
        dataset: Path, trained: Path, tmp_path: Path) -> None:
    other = with_new_word(dataset, tmp_path / "other", "zebra")
    words = dict(data=str(other), init=str(trained), learn="new_words", batch_images=2, questions_per_image=2,
                 lr=0.05, checkpoint_every=1, log_every=1)
    out = tmp_path / "words"
    train(TrainConfig(out=str(out), steps=1, **words))
    first = load_weights(out)[0].state_dict()["embed.weight"]
    assert train(TrainConfig(out=str(out), steps=3, **words)).steps == 3     # resumed, still frozen
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    old, resumed = load_weights(trained)[0].state_dict(), load_weights(out)[0].state_dict()
    assert all(torch.equal(resumed[k], v) for k, v in old.items() if k != "embed.weight")
    known = len(old["embed.weight"])
    assert torch.equal(resumed["embed.weight"][:known], old["embed.weight"])
    assert not torch.equal(resumed["embed.weight"][known:], first[known:])
    with pytest.raises(ConfigError, match="trained other parameters"):
        train(TrainConfig(out=str(out), steps=4, **dict(words, learn="all")))
    with pytest.raises(ConfigError, match="cannot resize"):
        train(TrainConfig(out=str(tmp_path / "big"), steps=1, image_width=160, image_height=120, **words))


@pytest.mark.parametrize("settings, why", [
    (dict(learn="everything", init="w"), "is not one of"),
    (dict(learn="new_words"), "needs init")])
def test_learn_settings_are_checked(settings: dict, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        TrainConfig(data="d", out="o", **settings)


def test_learning_new_words_of_data_without_any_is_refused(dataset: Path, trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="uses no word that .* lacks; nothing to learn"):
        train(TrainConfig(data=str(dataset), out=str(tmp_path / "none"), init=str(trained), learn="new_words", steps=1))


@pytest.mark.parametrize("record", ["{not json", "[1, 2]"])
def test_a_broken_training_record_of_the_initial_weights_is_refused_before_training(
        dataset: Path, trained: Path, tmp_path: Path, record: str) -> None:
    start = tmp_path / "start"
    shutil.copytree(trained, start)
    (start / "training_config.json").write_text(record)
    with pytest.raises(ConfigError, match="training record"):
        train(TrainConfig(data=str(dataset), out=str(tmp_path / "out"), init=str(start), steps=1))
    assert not (tmp_path / "out").exists()


def test_learning_rate_warms_up_and_decays() -> None:
    cfg = TrainConfig(data="d", out="o", steps=100, warmup_steps=10, lr=1.0)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(55, cfg) < learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(10, cfg, time_fraction=1.0) == pytest.approx(0.05)


def test_train_refuses_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the dataset"):
        train(TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "out")))


# --------------------------------------------------------------------------------- merge

def test_merge_averages_a_lineage_and_records_its_parents(trained: Path, tmp_path: Path) -> None:
    """``spatialvlm merge`` writes the share-weighted sum of its parents' tensors.

    The merged model loads and answers, its record names both parents, and a half-half merge of a model
    with itself is that model.
    """
    from safetensors.torch import load_file, save_file
    from spatialvlm_ros.cli import main

    # The second parent: the first, a little moved (as fine-tuning would), with a training record of its own.
    shutil.copytree(trained, tmp_path / "tuned")
    gen = torch.Generator().manual_seed(0)
    save_file({k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in
               load_file(str(trained / "model.safetensors")).items()}, str(tmp_path / "tuned" / "model.safetensors"))
    (tmp_path / "tuned" / "training_config.json").write_text(json.dumps({"init": str(trained)}))
    assert main(["merge", str(trained), str(tmp_path / "tuned"), "--shares", "0.3", "0.7",
                 "--out", str(tmp_path / "merged")]) == 0
    a, b, m = (load_file(str(f / "model.safetensors")) for f in (trained, tmp_path / "tuned", tmp_path / "merged"))
    for k in a:
        torch.testing.assert_close(m[k], 0.3 * a[k] + 0.7 * b[k], atol=1e-6, rtol=1e-6)
    record = json.loads((tmp_path / "merged" / "training_config.json").read_text())
    assert [(p["weights"], p["share"]) for p in record["merged_from"]] == [(str(trained), 0.3),
                                                                           (str(tmp_path / "tuned"), 0.7)]
    assert record["merged_from"][1]["training"]["init"] == str(trained)
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(tmp_path / "merged")))
    assert vlm.ask(np.full((240, 320, 3), 20, np.uint8), QUESTION).parsed.value_m == pytest.approx(0.2, rel=0.15)
    main(["merge", str(trained), str(trained), "--shares", "0.5", "0.5", "--out", str(tmp_path / "self")])
    for k, v in load_file(str(tmp_path / "self" / "model.safetensors")).items():
        torch.testing.assert_close(v, a[k], atol=0, rtol=0)


@pytest.mark.parametrize("shares, why", [((0.5, 0.6), "sum to 1"), ((1.2, -0.2), "positive"),
                                         ((1.0,), "one share each")])
def test_merge_refuses_bad_shares(trained: Path, tmp_path: Path, shares: tuple[float, ...], why: str) -> None:
    from spatialvlm_ros.training.merge import merge_weights
    with pytest.raises(ConfigError, match=why):
        merge_weights([trained, trained], shares, tmp_path / "out")


def test_merge_reads_a_parent_with_the_new_words_its_child_learned(trained: Path, tmp_path: Path) -> None:
    """A child fine-tuned on new words (``train --init``) merges with its parent: the parent gets the same rows."""
    from safetensors.torch import load_file
    from spatialvlm_ros.training.merge import merge_weights
    from spatialvlm_ros.vlm.compact.network import extend_vocabulary

    model, tokenizer = load_weights(trained)
    child = extend_vocabulary(model, len(tokenizer) + 2)
    with torch.no_grad():
        child.embed.weight[-2:] += 1.0                      # what fine-tuning taught the new words
    save_weights(child, tokenizer.extended([" zebra", " okapi"]), tmp_path / "child")
    merge_weights([trained, tmp_path / "child"], (0.25, 0.75), tmp_path / "merged")
    parent, young, merged = (load_file(str(f / "model.safetensors")) for f in (trained, tmp_path / "child",
                                                                               tmp_path / "merged"))
    grown = extended_embedding(parent["embed.weight"], len(tokenizer) + 2)
    torch.testing.assert_close(merged["embed.weight"], 0.25 * grown + 0.75 * young["embed.weight"])
    assert load_weights(tmp_path / "merged")[1].tokens[-2:] == (" okapi", " zebra")


def test_merge_refuses_folders_of_another_lineage(trained: Path, tmp_path: Path) -> None:
    from spatialvlm_ros.training.merge import merge_weights
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    config = json.loads((other / "model_config.json").read_text())
    (other / "model_config.json").write_text(json.dumps({**config, "d_model": 32}))
    with pytest.raises(ConfigError, match="another model config"):
        merge_weights([trained, other], (0.5, 0.5), tmp_path / "out")
    shutil.copy(trained / "model_config.json", other / "model_config.json")
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace("centimeters", "zebras"))
    with pytest.raises(ConfigError, match="another tokenizer"):
        merge_weights([trained, other], (0.5, 0.5), tmp_path / "out")
    with pytest.raises(ConfigError, match="lacks model_config.json"):
        merge_weights([trained, tmp_path], (0.5, 0.5), tmp_path / "out")


def test_init_at_another_input_size_resamples_the_position_grid(dataset: Path, trained: Path, tmp_path: Path) -> None:
    """``--init`` with ``--image-width/--image-height``: the weights carry over, the patch grid is resampled."""
    from spatialvlm_ros.vlm.compact.network import resize_input

    model, _ = load_weights(trained)
    same = resize_input(model, 128, 96)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value, atol=1e-6, rtol=0)
    bigger = resize_input(model, 160, 120)
    grid = bigger.image_pos.detach().reshape(15, 20, -1)
    old = model.image_pos.detach().reshape(12, 16, -1)
    torch.testing.assert_close(grid[0, 0], old[0, 0])                 # corners map onto corners
    torch.testing.assert_close(grid[-1, -1], old[-1, -1])
    # What the model read survives the resize; only the pointer, which on these flat test images can only
    # have learned patch positions, has to learn the new grid.
    tok = WordTokenizer.load(trained / "tokenizer.json")
    before, after = ({k: v.item() for k, v in batch_losses(m, sample_batch(load_training_set(
        dataset, tok, m.config.image_width, m.config.image_height, m.config.max_len), np.random.default_rng(0), 2,
        2)).items()} for m in (model.eval(), bigger.eval()))
    for key in ("answer", "value", "attributes", "span", "holds"):
        assert after[key] <= 2 * before[key] + 0.01, (key, before[key], after[key])
    small = dict(data=str(dataset), batch_images=2, questions_per_image=2, warmup_steps=1, log_every=1, lr=1e-4)
    train(TrainConfig(out=str(tmp_path / "big"), steps=1, init=str(trained), image_width=160, image_height=120,
                      **small))
    config = json.loads((tmp_path / "big" / "model_config.json").read_text())
    record = json.loads((tmp_path / "big" / "training_config.json").read_text())
    assert (config["image_width"], config["image_height"]) == (160, 120)
    assert (record["image_width"], record["image_height"]) == (160, 120)
    vlm = CompactVLM.from_config(CompactVLMConfig(weights=str(tmp_path / "big")))
    assert vlm.ask(np.full((240, 320, 3), 20, np.uint8), QUESTION).parsed is not None


def test_the_second_look_reasks_a_two_object_question_on_the_window_around_the_pair(
        trained: Path, dataset: Path, tokenizer: WordTokenizer, tmp_path: Path) -> None:
    from spatialvlm_ros.geometry.zoom import pair_window
    torch.manual_seed(1)
    other = CompactSpatialModel(tiny_config(len(tokenizer)))
    fit(other, dataset, tokenizer, 60)              # another model, so that its answers differ from the first's
    save_weights(other.eval(), tokenizer, tmp_path / "zoom")
    first = CompactVLM.from_config(CompactVLMConfig(weights=str(trained)))
    second = CompactVLM.from_config(CompactVLMConfig(weights=str(tmp_path / "zoom")))
    both = CompactVLM.from_config(CompactVLMConfig(weights=str(trained), zoom_weights=str(tmp_path / "zoom")))
    assert first.second_look is None and both.second_look is not None
    image = np.full((240, 320, 3), 20, np.uint8)
    image[:, 160:] = 230                              # the window sees another share of bright than the frame
    for question in (QUESTION, YES_NO):
        looked = first._forward(first.preprocess([image], [question]))[0]
        assert len(looked.spans) == 2 and looked.spans[0] != looked.spans[1]   # two objects: asked again
        points = backend.input_to_pixels(looked.centres, (240, 320), 128, 96)
        x0, y0, w, h = pair_window(*points, 320, 240)
        expected = second.ask(np.ascontiguousarray(image[y0:y0 + h, x0:x0 + w]), question).text
        assert both.ask(image, question).text == expected
    # A question whose slots read one object is not asked again.
    same = looked._replace(spans=[looked.spans[0]] * 2)
    assert both._look_again([image], [YES_NO], [same]) == {}
    texts = {vlm.ask(image, q).text for vlm in (both, first) for q in (QUESTION, YES_NO)}
    assert len(texts) > 2, "the second look changed no answer: the test would pass without it"


def test_the_cli_turns_the_second_look_on_for_the_compact_backend_only(trained: Path) -> None:
    from spatialvlm_ros.cli import build_parser
    from spatialvlm_ros.cli.vlm import estimator_config_from_args
    args = build_parser().parse_args(["ask", "sim", "Q?", "--weights", str(trained), "--zoom-weights", str(trained)])
    compact = estimator_config_from_args(args).vlm.compact
    assert compact.zoom_weights == compact.weights == str(trained)
    vlm = build_vlm(estimator_config_from_args(args).vlm)
    assert isinstance(vlm, CompactVLM) and vlm.second_look is not None
    with pytest.raises(ConfigError, match="--zoom-weights is a setting of the compact backend"):
        estimator_config_from_args(build_parser().parse_args(["ask", "sim", "Q?", "--backend", "openai",
                                                              "--zoom-weights", str(trained)]))
