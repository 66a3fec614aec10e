"""Issue 17's held-out figures for a demo checkpoint, one definition shared by ``bench/bench_demo.py`` and
the tests: outside-the-corpus prompts, paraphrased captions, two-turn edit chats, speculative prompts
against the per-situation mean pose, and images.

Every set is built from the checkpoint's ``benchmark.npz`` (its corpus' TEST split, never trained on) or
from ``training/corpus/outside_prompts.jsonl`` (typed by hand, targets built from generator recipes); the
mean-pose baseline is the chordal mean of the checkpoint's TRAIN poses. All errors are MPJRE in degrees
(``smpl_rig.metrics.mpjre_deg``: mean geodesic angle over joints, joint 0 the camera-frame text target).
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

import numpy as np

from smpl_rig import frames
from smpl_rig import rotations as rot
from smpl_rig.metrics import mpjre_deg
from smpl_rig.pose_mean import mean_pose
from smpl_rig.rotations import geodesic_angle

# --- metric functions -----------------------------------------------------------------------------------


def mpjre(pred, true) -> float:
    """Mean over samples of the MPJRE (degrees) of (N, 24, 3, 3) poses."""
    return float(np.mean(mpjre_deg(np.asarray(pred, np.float64), np.asarray(true, np.float64))))


def against_mean(pred, true, mean_rotmat) -> dict:
    """{"model": MPJRE, "mean": MPJRE of the mean pose, "ratio": model / mean} on one set."""
    true = np.asarray(true, np.float64)
    mean = np.broadcast_to(np.asarray(mean_rotmat, np.float64), true.shape)
    model, base = mpjre(pred, true), mpjre(mean, true)
    return {"model": model, "mean": base, "ratio": model / base if base > 0 else float("nan")}


def joint_angles_deg(a, b) -> np.ndarray:
    """(N, 24) geodesic angles in degrees between two (N, 24, 3, 3) pose sets."""
    return np.degrees(geodesic_angle(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def edit_figures(pred1, pred2, true1, true2, changed: np.ndarray) -> dict:
    """Figures of two-turn edit chats, each (N, 24, 3, 3); ``changed`` (N, 24) bool, the joints the edit moves.

    - edit_target_mpjre_deg: turn 2's prediction vs the edited target, on the changed joints;
    - unchanged_baseline_deg: the same error for "the pose did not change" (turn 1's TRUE pose);
    - edit_target_over_unchanged: their ratio (1 = no better than ignoring the instruction);
    - edit_drift_deg: turn 2's prediction vs turn 1's prediction on the joints that should not move.
    Means are per chat first (over its joints), then over chats.
    """
    changed = np.asarray(changed, bool)
    if not changed.any(1).all():
        raise ValueError("every edit must change at least one joint")
    def per_chat(angles, mask):
        keep = mask.any(1)
        return float(np.mean((angles * mask).sum(1)[keep] / mask.sum(1)[keep])) if keep.any() else float("nan")
    target = per_chat(joint_angles_deg(pred2, true2), changed)
    baseline = per_chat(joint_angles_deg(true1, true2), changed)
    drift = per_chat(joint_angles_deg(pred2, pred1), ~changed)
    return {"edit_target_mpjre_deg": target, "unchanged_baseline_deg": baseline,
            "edit_target_over_unchanged": target / baseline if baseline > 0 else float("nan"),
            "edit_drift_deg": drift, "chats": int(len(changed))}


# --- speculative prompts: the per-situation mean pose ----------------------------------------------------

def _situation_patterns() -> dict:
    """situation → compiled regex matching every phrasing of it with any subject (``speculative.prompt``)."""
    from training.corpus import speculative

    subjects = speculative.SUBJECTS
    alt = lambda words: "(?:" + "|".join(sorted({re.escape(w) for w in words}, key=len, reverse=True)) + ")"  # noqa: E731
    fills = {"S": alt(s[0][0].upper() + s[0][1:] for s in subjects), "s": alt(s[0] for s in subjects),
             "poss": alt(s[1] for s in subjects), "obj": alt(s[2] for s in subjects),
             "refl": alt(s[3] for s in subjects)}
    out = {}
    for name, situation in speculative.SITUATIONS.items():
        parts = []
        for phrasing in situation.phrasings:
            pieces = re.split(r"\{(\w+)\}", phrasing)
            parts.append("".join(fills[p] if k % 2 else re.escape(p) for k, p in enumerate(pieces)))
        out[name] = re.compile("^(?:" + "|".join(parts) + ")$")
    return out


def train_situations(bench: dict) -> np.ndarray:
    """(number of train poses,) the situation of each train pose ("" for explicit ones): the benchmark's
    ``train_situations`` when it has them, else read from the train prompts (the speculative phrasings)."""
    n = len(bench["train_rotmat"])
    if "train_situations" in bench:
        return np.asarray([str(s) for s in bench["train_situations"]])
    patterns = _situation_patterns()
    out = np.full(n, "", dtype=object)
    for text, pose in zip(bench["train_texts"], bench["train_text_pose"]):
        text = str(text)
        for name, pattern in patterns.items():
            if pattern.match(text):
                out[int(pose)] = name
                break
    return out.astype(str)


def situation_mean_poses(bench: dict) -> dict:
    """situation → chordal mean of its train poses (text targets)."""
    names = train_situations(bench)
    return {name: mean_pose(bench["train_rotmat"][names == name]) for name in sorted(set(names) - {""})}


# --- the sets -------------------------------------------------------------------------------------------

def smpl_frame(text_target: np.ndarray) -> np.ndarray:
    """A text target (24, 3, 3; joint 0 camera frame, yaw removed) → the same pose in the SMPL frame."""
    out = np.array(text_target, dtype=np.float64)
    out[0] = frames.camera_to_smpl_orient(out[0])
    return out


def text_target(rotmat_smpl: np.ndarray) -> np.ndarray:
    """A pose in the SMPL frame (24, 3, 3) → its text target (joint 0 yaw removed, camera frame)."""
    out = np.array(rotmat_smpl, dtype=np.float64)
    out[0] = frames.canonical_camera_orient(out[0])
    return out


def pick(n_total: int, limit: int, seed: int = 17) -> np.ndarray:
    """Indices of a fixed subsample (all of them when ``limit`` is 0 or ≥ n_total), in order."""
    if not limit or limit >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=limit, replace=False))


def writer_set(bench: dict, indices) -> tuple[list[str], np.ndarray]:
    """The outside writer's description of each chosen explicit test pose, with its target."""
    from training.corpus.outside_writer import describe

    true = bench["explicit_rotmat"][indices]
    prompts = [describe(smpl_frame(r), np.random.default_rng([17, int(i)])) for i, r in zip(indices, true)]
    return prompts, true


def hand_set() -> tuple[list[str], np.ndarray]:
    """The hand-typed prompts and their recipe targets."""
    from training.corpus.outside_writer import load_prompts, spec_target_rotmat

    rows = load_prompts()
    return [r["prompt"] for r in rows], np.stack([spec_target_rotmat(r["spec"]) for r in rows])


def paraphrase_set(bench: dict, indices) -> tuple[list[str], list[str]]:
    """(original, paraphrased) explicit test captions."""
    from training.corpus.outside_writer import paraphrase

    originals = [str(bench["explicit_prompts"][i]) for i in indices]
    return originals, [paraphrase(t, np.random.default_rng([29, int(i)])) for t, i in zip(originals, indices)]


@dataclass
class EditChat:
    turn1: str
    turn2: str
    true1: np.ndarray      # (24, 3, 3) text target before the edit
    true2: np.ndarray      # (24, 3, 3) text target after it
    changed: np.ndarray    # (24,) bool
    kind: str


def edit_chats(bench: dict, indices, edit_pose) -> list[EditChat]:
    """Two-turn chats on explicit test poses: turn 1 the pose's caption, turn 2 an edit instruction from
    ``edit_pose(rotvec (24, 3) SMPL frame, rng: random.Random, kind=None) -> Edit | None``
    (training.corpus.edits), one seeded draw per test pose. The edited target takes the changed joints
    from the edit and every other joint from the turn-1 target, untouched."""
    chats = []
    for i in indices:
        true1 = np.asarray(bench["explicit_rotmat"][i], np.float64)
        rotvec = rot.rotmat_to_rotvec(smpl_frame(true1)).astype(np.float32)
        edit = edit_pose(rotvec, random.Random(1_000_003 * 31 + int(i)))
        if edit is None:
            continue
        changed = np.zeros(24, bool)
        changed[list(edit.changed)] = True
        if not changed.any():
            continue
        true2 = true1.copy()
        true2[changed] = text_target(rot.rotvec_to_rotmat(np.asarray(edit.rotvec, np.float64)))[changed]
        chats.append(EditChat(str(bench["explicit_prompts"][i]), str(edit.instruction), true1, true2, changed,
                              str(edit.kind)))
    return chats


def run_chats(runtime, chats: list[EditChat], batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Turn 1 then turn 2 of each chat through the runtime's sessions (direct mode, as the add-on sends
    them); returns the (N, 24, 3, 3) predictions of both turns."""
    from backend.posegpt.errors import PoseGPTError

    pred1, pred2 = [], []
    for start in range(0, len(chats), batch):
        part = chats[start:start + batch]
        ids = [f"edit-{start + k}" for k in range(len(part))]
        for turn, out in (("turn1", pred1), ("turn2", pred2)):
            results = runtime.chat_batch([{"session_id": sid, "prompt": getattr(c, turn), "mode": "direct"}
                                          for sid, c in zip(ids, part)])
            for result in results:
                if isinstance(result, PoseGPTError):
                    raise result
                out.append(result.poses[0].rotmat)
        for sid in ids:
            runtime.close(sid)
    return np.asarray(pred1, np.float64), np.asarray(pred2, np.float64)


def load_edit_pose():
    """``training.corpus.edits.edit_pose``, or the reason it is not there."""
    try:
        from training.corpus.edits import edit_pose
    except ImportError as exc:
        return None, f"training.corpus.edits is not available ({exc})"
    return edit_pose, ""


# --- everything in one run ------------------------------------------------------------------------------

def figures(runtime, bench: dict, rest_joints, *, limit: int = 0, edit_limit: int = 150, edit_pose=None,
            log=print) -> dict:
    """Every figure of issue 17 for one runtime, printed as ``name: value`` through ``log`` as it is
    measured, and returned. ``limit`` caps each test set (0 = all), ``edit_limit`` the edit chats."""
    from demo.evaluation import evaluate, runtime_poses, summarize

    out = {}

    def emit(name, value, fmt="{:.2f}"):
        out[name] = value
        log(f"{name}: {value if isinstance(value, str) else fmt.format(value)}")

    train_mean = mean_pose(bench["train_rotmat"])
    n_explicit = len(bench["explicit_prompts"])
    idx = pick(n_explicit, limit)

    # Explicit captions, as typed.
    originals, paraphrased = paraphrase_set(bench, idx)
    true = bench["explicit_rotmat"][idx]
    started = time.perf_counter()
    pred = runtime_poses(runtime, originals)
    ms_per_prompt = 1000 * (time.perf_counter() - started) / len(originals)
    explicit = against_mean(pred, true, train_mean)
    emit("demo_mpjre_deg", explicit["model"])
    emit("mean_pose_mpjre_deg", explicit["mean"])
    emit("demo_over_mean", explicit["ratio"], "{:.3f}")
    emit("demo_mpjpe_mm", summarize(pred, true, rest_joints)["mpjpe_mm"], "{:.1f}")
    emit("test_prompts", len(idx), "{:d}")
    emit("demo_batched_ms_per_prompt", ms_per_prompt, "{:.1f}")

    # Paraphrased explicit captions, same poses.
    pred_para = runtime_poses(runtime, paraphrased)
    para = mpjre(pred_para, true)
    emit("paraphrased_mpjre_deg", para)
    emit("paraphrase_degradation", para / explicit["model"], "{:.3f}")
    emit("paraphrased_share_changed", float(np.mean([a != b for a, b in zip(originals, paraphrased)])), "{:.2f}")

    # Outside the corpus: the outside writer on test poses, and the hand-typed prompts.
    w_prompts, w_true = writer_set(bench, idx)
    w_pred = runtime_poses(runtime, w_prompts)
    h_prompts, h_true = hand_set()
    h_pred = runtime_poses(runtime, h_prompts)
    writer = against_mean(w_pred, w_true, train_mean)
    hand = against_mean(h_pred, h_true, train_mean)
    pooled = against_mean(np.concatenate([w_pred, h_pred]), np.concatenate([w_true, h_true]), train_mean)
    emit("outside_writer_mpjre_deg", writer["model"])
    emit("outside_writer_over_mean", writer["ratio"], "{:.3f}")
    emit("hand_prompts_mpjre_deg", hand["model"])
    emit("hand_prompts_over_mean", hand["ratio"], "{:.3f}")
    emit("hand_prompts", len(h_prompts), "{:d}")
    emit("outside_mpjre_deg", pooled["model"])
    emit("outside_mpjre_over_mean", pooled["ratio"], "{:.3f}")

    # Speculative prompts against the mean train pose of their situation.
    s_idx = pick(len(bench["speculative_prompts"]), limit)
    s_prompts = [str(p) for p in bench["speculative_prompts"][s_idx]]
    s_true = bench["speculative_rotmat"][s_idx]
    s_pred = runtime_poses(runtime, s_prompts)
    means = situation_mean_poses(bench)
    s_ref = np.stack([means.get(str(name), train_mean) for name in bench["speculative_situations"][s_idx]])
    s_model, s_sit = mpjre(s_pred, s_true), mpjre(s_ref, s_true)
    emit("speculative_demo_mpjre_deg", s_model)
    emit("speculative_situation_mean_mpjre_deg", s_sit)
    emit("speculative_over_situation_mean", s_model / s_sit, "{:.3f}")

    # Images.
    if "image_pixels" in bench and len(bench["image_pixels"]):
        images = evaluate(runtime, bench, rest_joints, sets=("images",), limit=limit)["images"]
        emit("demo_image_mpjre_deg", images["model"]["mpjre_deg"])
        emit("image_mean_pose_mpjre_deg", images["mean_pose"]["mpjre_deg"])
        emit("demo_image_mpjre_over_mean", images["model"]["mpjre_deg"] / images["mean_pose"]["mpjre_deg"], "{:.3f}")

    # Edit turns.
    reason = ""
    if edit_pose is None:
        edit_pose, reason = load_edit_pose()
    if edit_pose is None:
        emit("edit_turns", f"skipped: {reason}")
    else:
        chats = edit_chats(bench, pick(n_explicit, edit_limit, seed=23), edit_pose)
        if not chats:
            emit("edit_turns", "skipped: edit_pose returned no edit for the chosen test poses")
        else:
            pred1, pred2 = run_chats(runtime, chats)
            edits = edit_figures(pred1, pred2, np.stack([c.true1 for c in chats]), np.stack([c.true2 for c in chats]),
                                 np.stack([c.changed for c in chats]))
            emit("edit_target_mpjre_deg", edits["edit_target_mpjre_deg"])
            emit("edit_unchanged_baseline_deg", edits["unchanged_baseline_deg"])
            emit("edit_target_over_unchanged", edits["edit_target_over_unchanged"], "{:.3f}")
            emit("edit_drift_deg", edits["edit_drift_deg"])
            emit("edit_chats", edits["chats"], "{:d}")
    return out
