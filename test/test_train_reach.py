"""``scripts/train_reach.py``: the RL comparison runs end to end, and its three rewards differ only in the gap.

The real run takes an hour; here two rewards train for a few hundred updates in parallel processes, which is
enough to show that the script, its process pool and its JSON still work.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "train_reach.py"


@pytest.fixture(scope="module")
def train_reach() -> Iterator[ModuleType]:
    """The script, imported as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("train_reach", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_true_reward_is_the_shaped_exact_gap_plus_the_disturbance_penalty(train_reach: ModuleType) -> None:
    env = train_reach.make_train_env("true")
    config = train_reach.SETUPS["physical"].reward
    try:
        obs, _ = env.reset(seed=0)
        rewards, infos = [], []
        for _ in range(50):   # full speed at the can: it reaches the success band, then knocks the can over
            obs, reward, _, _, info = env.step(np.clip((obs[3:6] - obs[:3]) / 0.03, -1.0, 1.0).astype(np.float32))
            rewards.append(reward)
            infos.append(info)
            # The policy sees the can's offset from the gripper in decimetres.
            np.testing.assert_allclose(obs[14:17], 10.0 * (obs[3:6] - obs[:3]), atol=1e-5)
    finally:
        env.close()
    penalty = 0.5 / train_reach.SCALE_M
    expected = [-max(i["true_distance_m"], 0.0) / 0.1 + config.success_bonus * (i["true_distance_m"] < 0.02)
                - penalty * i["target_disturbed"] for i in infos]
    np.testing.assert_allclose(rewards, expected, atol=1e-9)
    assert any(i["target_disturbed"] for i in infos) and config.success_bonus > 0
    # Pushing never pays: any disturbed step earns less than any step in the success band without a push.
    band = [r for r, i in zip(rewards, infos) if i["is_success"]]
    pushed = [r for r, i in zip(rewards, infos) if i["target_disturbed"]]
    assert band and max(pushed) < min(band)


def test_camera_rewards_share_the_shaping_and_the_penalty(train_reach: ModuleType) -> None:
    from spatialvlm_ros.reward import shape_distance
    env = train_reach.make_train_env("geometric")
    config = train_reach.SETUPS["physical"].reward
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(8):
            obs, reward, _, _, info = env.step(np.clip((obs[3:6] - obs[:3]) / 0.03, -1.0, 1.0).astype(np.float32))
            assert info["spatial_distance_valid"]
            expected = shape_distance(info["spatial_distance_m"], config) - 5.0 * info["target_disturbed"]
            assert reward == pytest.approx(expected)
            assert reward == pytest.approx(-info["true_distance_m"] / 0.1, abs=0.3)   # within 3 cm: the estimate tracks
    finally:
        env.close()
    # The compact VLM's reward builds too (its estimator holds locks: the wrapper must not deep-copy it).
    vlm = train_reach.make_train_env("vlm")
    try:
        vlm.reset(seed=0)
        _, reward, _, _, info = vlm.step(np.zeros(3, np.float32))
        assert info["spatial_distance_valid"] and reward == pytest.approx(
            shape_distance(info["spatial_distance_m"], config))
    finally:
        vlm.close()
    # The two-view reward renders the side camera too and reads the larger of the two answers.
    two = train_reach.make_train_env("vlm_two_views")
    try:
        assert two.unwrapped.sim.n_cameras == 2
        two.reset(seed=0)
        _, reward, _, _, info = two.step(np.zeros(3, np.float32))
        assert info["spatial_distance_valid"] and reward == pytest.approx(
            shape_distance(info["spatial_distance_m"], config))
        from spatialvlm_ros.estimation import build_estimator
        from spatialvlm_ros.types import DistanceKind, Pair
        vlm_estimator = build_estimator(train_reach.CAMERA_ESTIMATORS["vlm_two_views"])
        answers = [vlm_estimator.estimate(f, [Pair.parse(train_reach.PAIR)], DistanceKind.GAP)[0].distance_m
                   for f in two.unwrapped.render_rgbd_views()]
        assert info["spatial_distance_m"] == max(answers)
    finally:
        two.close()
    # The wrist reward renders the wrist camera too and reads its answer alone.
    wrist = train_reach.make_train_env("vlm_wrist")
    try:
        assert wrist.unwrapped.sim.n_cameras == 2
        wrist.reset(seed=0)
        _, reward, _, _, info = wrist.step(np.zeros(3, np.float32))
        assert reward == pytest.approx(shape_distance(info["spatial_distance_m"], config))
        [answer] = vlm_estimator.estimate(wrist.unwrapped.render_rgbd_views()[-1], [Pair.parse(train_reach.PAIR)],
                                          DistanceKind.GAP)
        assert info["spatial_distance_m"] == answer.distance_m
    finally:
        wrist.close()
    kinematic = train_reach.make_train_env("true", kinematic=True)
    try:
        assert not isinstance(kinematic, train_reach.TargetDisturbedPenalty) and not kinematic.unwrapped.physics
    finally:
        kinematic.close()


def test_vlm_rewards_read_with_candidate_weights_when_given(train_reach: ModuleType, tmp_path: Path) -> None:
    from spatialvlm_ros.errors import ConfigError
    assert train_reach.camera_estimator("vlm") == train_reach.CAMERA_ESTIMATORS["vlm"]      # packaged by default
    candidate = train_reach.camera_estimator("vlm_mirror", str(tmp_path))
    assert candidate.vlm.compact.weights == str(tmp_path) and candidate.vlm.mirror      # the rest kept
    assert train_reach.camera_estimator("geometric", str(tmp_path)) == train_reach.CAMERA_ESTIMATORS["geometric"]
    with pytest.raises(ConfigError, match=str(tmp_path / "missing")):
        train_reach.make_train_env("vlm", vlm_weights=str(tmp_path / "missing"))


def test_the_comparison_runs_in_parallel_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "rl"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1100", "--eval-every", "1100", "--eval-episodes", "2",
         "--rewards", "true", "geometric", "--seeds", "0", "--jobs", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert summary["task"] == "physical" and [r["reward"] for r in summary["runs"]] == ["true", "geometric"]
    for run in summary["runs"]:
        assert [p["steps"] for p in run["curve"]] == [0, 1100] and run["wall_s"] > 0
        assert all(0.0 <= p["success_rate"] <= 1.0 and p["mean_final_gap_m"] > -0.01 for p in run["curve"])
    assert 0.0 <= summary["runs"][1]["spatial_invalid_rate"] < 0.5   # the geometric reward saw the can
    assert summary["reward_config"]["success_bonus"] == 1.0 and summary["sac_settings"]["gamma"] == 0.95
    assert "true reward, seed 0" in proc.stdout and "geometric reward, seed 0" in proc.stdout


def test_reuse_keeps_other_rewards_runs_only_from_a_comparable_file(train_reach: ModuleType, tmp_path: Path) -> None:
    import argparse
    args = argparse.Namespace(kinematic=False, steps=20_000, eval_every=2_000, eval_episodes=30, seeds=[0, 1])
    wanted = train_reach.settings(args, train_reach.setup_for(False))
    curve = [{"steps": 0, "success_rate": 0.0, "mean_final_gap_m": 0.3, "disturbed_rate": 0.0},
             {"steps": 20_000, "success_rate": 0.8, "mean_final_gap_m": 0.01, "disturbed_rate": 0.1}]
    runs = [{"reward": reward, "seed": seed, "curve": curve, "wall_s": 1.0, "spatial_invalid_rate": float("nan")}
            for reward in ("true", "vlm") for seed in (0, 1)]
    earlier = tmp_path / "rl.json"
    earlier.write_text(json.dumps({**wanted, "runs": runs}))
    kept = train_reach.reused_runs(earlier, wanted, ["vlm"])
    assert [(r.reward, r.seed) for r in kept] == [("true", 0), ("true", 1)]
    assert kept[0].curve[-1] == train_reach.EvalPoint(20_000, 0.8, 0.01, 0.1)
    for change in ({"steps": 10_000}, {"seeds": [0, 1, 2]}, {"kinematic": True}):
        other = train_reach.settings(argparse.Namespace(**{**vars(args), **change}), train_reach.setup_for(False))
        with pytest.raises(SystemExit, match="other settings"):
            train_reach.reused_runs(earlier, other, ["vlm"])


def test_reuse_takes_each_rewards_runs_from_the_first_file_that_has_them(
        train_reach: ModuleType, tmp_path: Path) -> None:
    import argparse
    args = argparse.Namespace(kinematic=False, steps=20_000, eval_every=2_000, eval_episodes=30, seeds=[0])
    wanted = train_reach.settings(args, train_reach.setup_for(False))

    def write(name: str, rates: dict[str, float]) -> Path:
        runs = [{"reward": reward, "seed": 0, "wall_s": 1.0, "spatial_invalid_rate": 0.0,
                 "curve": [{"steps": 20_000, "success_rate": rate, "mean_final_gap_m": 0.01}]}
                for reward, rate in rates.items()]
        path = tmp_path / name
        path.write_text(json.dumps({**wanted, "runs": runs}))
        return path

    first = write("a.json", {"true": 0.8, "vlm": 0.4})
    second = write("b.json", {"true": 0.1, "vlm_two_views": 0.2, "geometric": 0.7})
    runs, sources = train_reach.reuse_all([first, second], wanted, ["geometric"])
    assert [(r.reward, r.curve[-1].success_rate) for r in runs] == [("true", 0.8), ("vlm", 0.4),
                                                                    ("vlm_two_views", 0.2)]
    assert sources == [{"file": str(first), "rewards": ["true", "vlm"]},
                       {"file": str(second), "rewards": ["vlm_two_views"]}]
    # No reward to train: the script only combines the files (and says where each reward's runs came from).
    out = tmp_path / "combined"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rewards", "--reuse", str(first), str(second),
                           "--seeds", "0", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [r["reward"] for r in summary["runs"]] == ["true", "vlm", "vlm_two_views", "geometric"]
    assert summary["final_success_rate"]["geometric"] == 0.7 and summary["vlm_over_true"] == pytest.approx(0.5)
    assert summary["reused_from"][1] == {"file": str(second), "rewards": ["geometric", "vlm_two_views"]}
    nothing = subprocess.run([sys.executable, str(SCRIPT), "--rewards"], capture_output=True, text=True, timeout=300,
                             cwd=REPO)
    assert nothing.returncode == 2 and "nothing to train" in nothing.stderr
