"""The outside-the-corpus evaluation set (training/corpus/outside_writer.py, outside_prompts.jsonl) and the
benchmark's metric functions (demo/outside_eval.py)."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from smpl_rig import rotations as rot
from smpl_rig.pose_mean import mean_pose
from training.corpus import generator as gen
from training.corpus import outside_writer as ow
from training.corpus import speculative
from training.corpus.captioner import captions, extract_facts, measure

REPO = Path(__file__).resolve().parents[1]


def _training_texts() -> list[str]:
    """The training captions and prompts of every committed demo checkpoint."""
    texts = []
    for path in sorted(REPO.glob("checkpoints/*/benchmark.npz")):
        with np.load(path, allow_pickle=False) as data:
            texts += [str(t) for t in data["train_texts"]]
    return texts


# --- the writer -----------------------------------------------------------------------------------------

def test_writer_vocabulary_is_disjoint_from_the_training_texts():
    trained = ow.training_words(_training_texts())
    own = ow.writer_words() - ow.SHARED_WORDS
    assert len(own) >= 80, "the writer should have a vocabulary of its own, not only shared words"
    assert not own & trained, f"outside writer words the training texts also use: {sorted(own & trained)}"
    trained_stems = {ow.stem(w) for w in trained}
    inflected = sorted(w for w in own if ow.stem(w) in trained_stems)
    assert not inflected, f"outside writer words that are inflections of training words: {inflected}"


def test_training_words_read_the_captioners_and_the_situations():
    trained = ow.training_words()
    # A phrasing of the captioner, of a speculative situation and of the chat templates.
    assert {"kneeling", "surrendering", "pose"} <= trained
    assert "hunkered" not in trained


def test_shared_words_are_closed_class_sides_or_body_parts():
    body = {"arm", "arms", "hand", "hands", "leg", "legs", "knee", "knees", "foot", "feet", "head", "neck",
            "shoulder", "shoulders", "elbow", "elbows", "hip", "hips", "chest", "chin", "face", "body", "forearm",
            "forearms", "eyes", "fingers", "back", "front"}
    assert {"left", "right"} <= ow.SHARED_WORDS
    assert len(ow.SHARED_WORDS - body) <= 75


def _poses(n=40, seed=3):
    return gen.generate(n, seed=seed)


def test_writer_words_stay_in_its_vocabulary_and_name_the_sides():
    allowed = ow.writer_words() | ow.SHARED_WORDS
    rng = np.random.default_rng(0)
    for pose in _poses():
        text = ow.describe(pose.rotmat, rng)
        assert text.strip()
        assert set(ow.WORD.findall(text.lower())) <= allowed, text
        for fact in ow.pick_facts(extract_facts(measure(pose.rotmat))):
            if fact.side in ("left", "right") and ow._phrase_key(fact) in ow.OUTSIDE_PHRASES:
                assert fact.side in text, (text, fact)


def test_writer_states_what_the_pose_does():
    pose = ow.build_spec_pose({"arms": "both_up", "legs": "kneeling_both"})
    text = ow.describe(pose.rotmat, np.random.default_rng(1))
    ups = [p.format(p="his", side="") for p in ow.OUTSIDE_PHRASES["arm_up:both"]]
    assert any(u.replace("his", "") in text.replace("his", "").replace("her", "").replace("their", "") for u in ups)
    assert "knees" in text


def test_writer_is_deterministic_for_a_seed():
    pose = _poses(1)[0]
    assert ow.describe(pose.rotmat, np.random.default_rng(5)) == ow.describe(pose.rotmat, np.random.default_rng(5))


# --- the paraphraser ------------------------------------------------------------------------------------

def test_paraphrase_changes_words_keeps_sides_and_numbers():
    rng = np.random.default_rng(0)
    texts = [c.text for p in _poses(30, seed=4) for c in captions(p.rotmat, rng, 3)]
    changed = 0
    for k, text in enumerate(texts):
        para = ow.paraphrase(text, np.random.default_rng(k))
        changed += para != text
        sides = text.lower().replace("right angle", "")     # an angle, not a side: rewritten as "an L shape"
        for word in ("left", "right"):
            assert len(re.findall(rf"\b{word}\b", para.lower())) == len(re.findall(rf"\b{word}\b", sides)), \
                (text, para)
        assert re.findall(r"\d+", para) == re.findall(r"\d+", text)
    assert changed >= 0.9 * len(texts)


def test_paraphrase_examples():
    assert ow.paraphrase("The person is kneeling on both knees.") == "The guy is on both knees."
    assert ow.paraphrase("She has her face turned upward.") == "She has her face tipped skyward."
    assert ow.paraphrase("He is raising his left arm above his head.") == "He is hoisting his left arm over his head."
    assert "to the right" in ow.paraphrase("He is leaning to the right by about 20 degrees.")


# --- the hand-typed prompts -----------------------------------------------------------------------------

def test_hand_prompts_parse_and_build_valid_targets():
    rows = ow.load_prompts()
    assert len(rows) >= 100
    assert len({r["prompt"].lower() for r in rows}) == len(rows)
    for row in rows:
        angles = ow.spec_angles(row["spec"])
        assert gen.within_limits(angles).all(), row
        pose = ow.build_spec_pose(row["spec"])
        overlap, pair = gen.worst_penetration(pose.joints)
        assert overlap <= gen.PENETRATION_ALLOWANCE, (row, pair)
        target = ow.spec_target_rotmat(row["spec"])
        assert target.shape == (24, 3, 3)
        np.testing.assert_allclose(np.swapaxes(target, -1, -2) @ target, np.broadcast_to(np.eye(3), target.shape),
                                   atol=1e-9)
        np.testing.assert_allclose(np.linalg.det(target), 1.0, atol=1e-9)
        assert target[0, 1, 1] < 0 and target[0, 2, 2] < 0, "upright and facing the camera (camera frame)"


def test_hand_prompts_with_one_sided_targets_name_a_side():
    # "waving with the right hand" has a side; a target with one side's arm or leg needs a prompt saying which.
    for row in ow.load_prompts():
        spec = row["spec"]
        sided = [str(spec.get(k, "")) for k in ("arms", "legs")]
        if any(v.endswith(("_left", "_right")) for v in sided) or "left_arm" in spec:
            assert re.search(r"\b(left|right)\b", row["prompt"]), row


def test_hand_prompt_targets_are_deterministic_and_distinct():
    rows = ow.load_prompts()
    a = np.stack([ow.spec_target_rotmat(r["spec"]) for r in rows[:10]])
    b = np.stack([ow.spec_target_rotmat(r["spec"]) for r in rows[:10]])
    np.testing.assert_array_equal(a, b)
    left, right = ow.spec_angles({"arms": "waving_left"}), ow.spec_angles({"arms": "waving_right"})
    np.testing.assert_allclose(gen.mirror_angles(left), right, atol=1e-9)
    assert not np.allclose(left, right)


def test_bad_specs_are_refused():
    for spec in ({"arms": "juggling"}, {"legs": "cartwheel"}, {"lean": "sideways"}, {"arms": "mixed"},
                 {"arms": "t_pose", "left_arm": "up"}, {"elbow": 3}):
        with pytest.raises(ValueError):
            ow.check_spec(spec)


# --- metric functions -----------------------------------------------------------------------------------

def _true_poses(n=12, seed=9):
    from demo.outside_eval import text_target
    return np.stack([text_target(p.rotmat) for p in gen.generate(n, seed=seed)])


def test_against_mean_is_zero_for_a_perfect_predictor_and_one_for_the_mean():
    from demo.outside_eval import against_mean

    true = _true_poses()
    mean = mean_pose(_true_poses(30, seed=10))
    perfect = against_mean(true, true, mean)
    assert perfect["model"] == pytest.approx(0.0, abs=1e-5) and perfect["ratio"] == pytest.approx(0.0, abs=1e-6)
    baseline = against_mean(np.broadcast_to(mean, true.shape), true, mean)
    assert baseline["model"] == pytest.approx(baseline["mean"]) and baseline["ratio"] == pytest.approx(1.0)
    assert baseline["mean"] > 5.0


@dataclass
class _Edit:
    kind: str
    instruction: str
    rotvec: np.ndarray
    changed: tuple


def _raise_left_arm(rotvec, rng, kind=None):
    """A stand-in for training.corpus.edits.edit_pose: the left shoulder rotated up."""
    assert isinstance(rng, random.Random)
    out = np.array(rotvec, dtype=np.float32)
    j = gen.J["left_shoulder"]
    out[j] = rot.rotmat_to_rotvec(rot.rotmat_z(np.radians(rng.uniform(30, 60))) @ rot.rotvec_to_rotmat(
        out[j].astype(np.float64))).astype(np.float32)
    return _Edit("raise_arm_left", "now raise the left arm", out, (j,))


def _bench(n=8):
    true = _true_poses(n)
    return {"explicit_rotmat": true, "explicit_prompts": np.array([f"pose {k}" for k in range(n)])}


def test_edit_chats_change_only_the_edited_joints():
    from demo.outside_eval import edit_chats

    bench = _bench()
    chats = edit_chats(bench, np.arange(len(bench["explicit_rotmat"])), _raise_left_arm)
    assert len(chats) == len(bench["explicit_rotmat"])
    for chat in chats:
        assert chat.changed.sum() == 1 and chat.changed[gen.J["left_shoulder"]]
        np.testing.assert_array_equal(chat.true2[~chat.changed], chat.true1[~chat.changed])
        assert not np.allclose(chat.true2[chat.changed], chat.true1[chat.changed])
        assert chat.turn2 == "now raise the left arm"


def test_edit_figures_zero_for_perfect_and_one_for_unchanged_pose():
    from demo.outside_eval import edit_chats, edit_figures

    bench = _bench()
    chats = edit_chats(bench, np.arange(len(bench["explicit_rotmat"])), _raise_left_arm)
    true1, true2 = np.stack([c.true1 for c in chats]), np.stack([c.true2 for c in chats])
    changed = np.stack([c.changed for c in chats])
    perfect = edit_figures(true1, true2, true1, true2, changed)
    assert perfect["edit_target_mpjre_deg"] == pytest.approx(0.0, abs=1e-5)
    assert perfect["edit_drift_deg"] == pytest.approx(0.0, abs=1e-5)
    assert perfect["unchanged_baseline_deg"] > 20
    ignoring = edit_figures(true1, true1, true1, true2, changed)
    assert ignoring["edit_target_over_unchanged"] == pytest.approx(1.0)
    assert ignoring["edit_drift_deg"] == pytest.approx(0.0, abs=1e-5)
    mean = np.broadcast_to(mean_pose(true1), true1.shape)
    drifting = edit_figures(true1, mean, true1, true2, changed)
    assert drifting["edit_drift_deg"] > 1.0
    with pytest.raises(ValueError):
        edit_figures(true1, true2, true1, true2, np.zeros_like(changed))


class _FakeRuntime:
    """Answers each prompt with a fixed pose; records the turns each session saw."""

    def __init__(self, answers: dict):
        self.answers, self.turns, self.closed = answers, {}, []

    def chat_batch(self, requests):
        out = []
        for r in requests:
            self.turns.setdefault(r["session_id"], []).append(r["prompt"])
            pose = type("Pose", (), {"rotmat": self.answers[r["prompt"]]})
            out.append(type("Result", (), {"poses": [pose]}))
        return out

    def close(self, session_id):
        self.closed.append(session_id)


def test_run_chats_sends_both_turns_in_one_session():
    from demo.outside_eval import EditChat, edit_figures, run_chats

    bench = _bench(20)
    raw = [_raise_left_arm(rot.rotmat_to_rotvec(t), random.Random(k)) for k, t in enumerate(bench["explicit_rotmat"])]
    chats, answers = [], {}
    for k, (true1, edit) in enumerate(zip(bench["explicit_rotmat"], raw)):
        changed = np.zeros(24, bool)
        changed[list(edit.changed)] = True
        true2 = true1.copy()
        true2[changed] = rot.rotvec_to_rotmat(edit.rotvec.astype(np.float64))[changed]
        chats.append(EditChat(f"caption {k}", f"edit {k}", true1, true2, changed, edit.kind))
        answers[f"caption {k}"], answers[f"edit {k}"] = true1, true2
    runtime = _FakeRuntime(answers)
    pred1, pred2 = run_chats(runtime, chats, batch=8)
    assert all(turns == [f"caption {k}", f"edit {k}"] for k, turns in
               enumerate(runtime.turns[s] for s in sorted(runtime.turns, key=lambda s: int(s.split("-")[1]))))
    assert sorted(runtime.closed) == sorted(runtime.turns)
    figures = edit_figures(pred1, pred2, np.stack([c.true1 for c in chats]), np.stack([c.true2 for c in chats]),
                           np.stack([c.changed for c in chats]))
    assert figures["edit_target_mpjre_deg"] == pytest.approx(0.0, abs=1e-5)
    assert figures["edit_drift_deg"] == pytest.approx(0.0, abs=1e-5)


def test_train_situations_are_read_back_from_the_prompts():
    from demo.outside_eval import situation_mean_poses, train_situations

    rng = np.random.default_rng(0)
    names = list(speculative.SITUATIONS)[:6]
    texts, pose_of, poses = [], [], []
    for k, name in enumerate(names * 2):
        for text in speculative.prompts(name, rng, 3):
            texts.append(text)
            pose_of.append(k)
        poses.append(gen.PoseGenerator(k).sample(speculative.SITUATIONS[name].family).rotmat)
    texts.append("The person is standing upright.")          # an explicit caption: no situation
    pose_of.append(len(poses))
    poses.append(gen.generate(1, seed=99)[0].rotmat)
    bench = {"train_texts": np.array(texts), "train_text_pose": np.array(pose_of), "train_rotmat": np.stack(poses)}
    found = train_situations(bench)
    assert list(found) == names * 2 + [""]
    means = situation_mean_poses(bench)
    assert set(means) == set(names)
    np.testing.assert_allclose(means[names[0]], mean_pose(np.stack([poses[0], poses[6]])))
    bench["train_situations"] = np.array(["a"] * len(poses))
    assert set(train_situations(bench)) == {"a"}


@pytest.mark.slow
def test_figures_run_end_to_end_on_the_demo_checkpoint():
    """Every figure through the real runtime on a small subsample (edits from the stand-in above)."""
    from backend.posegpt.runtime import PoseRuntime
    from demo.model_card import BENCHMARK_FILE, load_benchmark
    from demo.outside_eval import figures
    from training.evaluate import rest_skeleton

    checkpoint = REPO / "checkpoints" / "posegpt-demo"
    bench = load_benchmark(checkpoint / BENCHMARK_FILE)
    runtime = PoseRuntime.from_checkpoint(checkpoint, device="cpu", dtype="float32")
    lines = []
    out = figures(runtime, bench, rest_skeleton()[0], limit=6, edit_limit=4, edit_pose=_raise_left_arm,
                  log=lines.append)
    for name in ("demo_over_mean", "paraphrase_degradation", "outside_mpjre_over_mean", "hand_prompts_over_mean",
                 "speculative_over_situation_mean", "demo_image_mpjre_over_mean", "edit_target_over_unchanged",
                 "edit_drift_deg"):
        assert np.isfinite(out[name]) and out[name] >= 0, name
        assert any(line.startswith(f"{name}: ") for line in lines)
    assert out["edit_chats"] == 4 and out["test_prompts"] == 6
    assert runtime.sessions == []
