"""The demo checkpoint's test-split metrics next to two baselines, shared by the model card, the test and
the benchmark (one definition, so the three cannot drift apart).

- model: the checkpoint through ``PoseRuntime`` in direct mode (what the backend serves), camera frame;
- mean pose: the chordal mean of the training poses, each joint projected back onto SO(3)
  (`smpl_rig.pose_mean`);
- nearest caption: the pose of the training caption sharing the most words with the prompt (Jaccard
  overlap of lower-cased word sets; ties go to the earlier caption).

Errors are ``training.evaluate.pose_errors``: MPJRE (degrees), MPJPE and PA-MPJPE (mm) through forward
kinematics on the mannequin's rest joints.
"""
from __future__ import annotations

import re

import numpy as np

from smpl_rig.pose_mean import mean_pose

WORD = re.compile(r"[a-z]+")


def words(text: str) -> frozenset:
    return frozenset(WORD.findall(text.lower()))


class NearestCaption:
    """Word-overlap retrieval over training captions: ``predict(prompts)`` → (N, 24, 3, 3)."""

    def __init__(self, captions: list[str], rotmats: np.ndarray):
        if len(captions) != len(rotmats) or not captions:
            raise ValueError(f"need as many poses as captions (>= 1), got {len(captions)} and {len(rotmats)}")
        self.rotmats = np.asarray(rotmats, dtype=np.float64)
        vocab: dict[str, int] = {}
        rows = [[vocab.setdefault(w, len(vocab)) for w in words(c)] for c in captions]
        # A dense 0/1 caption × word matrix: overlaps for a batch of prompts are one matrix product.
        self.matrix = np.zeros((len(captions), len(vocab)), dtype=np.float32)
        for i, row in enumerate(rows):
            self.matrix[i, row] = 1.0
        self.sizes = self.matrix.sum(1)
        self.vocab = vocab

    def indices(self, prompts: list[str]) -> np.ndarray:
        query = np.zeros((len(prompts), len(self.vocab)), dtype=np.float32)
        extra = np.zeros(len(prompts), dtype=np.float32)      # prompt words no caption has
        for i, prompt in enumerate(prompts):
            for w in words(prompt):
                if w in self.vocab:
                    query[i, self.vocab[w]] = 1.0
                else:
                    extra[i] += 1.0
        inter = query @ self.matrix.T
        union = query.sum(1, keepdims=True) + extra[:, None] + self.sizes[None, :] - inter
        return np.argmax(inter / np.maximum(union, 1.0), axis=1)

    def predict(self, prompts: list[str]) -> np.ndarray:
        return self.rotmats[self.indices(prompts)]


def runtime_poses(runtime, prompts: list[str], images: list | None = None, batch: int = 16) -> np.ndarray:
    """(N, 24, 3, 3) camera-frame poses from a ``PoseRuntime`` in direct mode, a fresh session per prompt."""
    from backend.posegpt.errors import PoseGPTError

    out = []
    for start in range(0, len(prompts), batch):
        requests = [{"session_id": f"eval-{start + k}", "prompt": p, "mode": "direct",
                     "images": [images[start + k]] if images else []}
                    for k, p in enumerate(prompts[start:start + batch])]
        for request, result in zip(requests, runtime.chat_batch(requests)):
            if isinstance(result, PoseGPTError):
                raise result
            out.append(result.poses[0].rotmat)
            runtime.close(request["session_id"])
    return np.asarray(out, dtype=np.float64)


def summarize(pred: np.ndarray, true: np.ndarray, rest_joints: np.ndarray) -> dict[str, float]:
    from training.evaluate import pose_errors

    errors = pose_errors(pred, true, rest_joints)
    return {"mpjre_deg": float(np.mean(errors["mpjre_deg"])), "mpjpe_mm": float(np.mean(errors["mpjpe_mm"])),
            "pa_mpjpe_mm": float(np.mean(errors["pa_mpjpe_mm"])), "count": int(len(pred))}


def compare(model_pred: np.ndarray, prompts: list[str], true: np.ndarray, train_captions: list[str],
            train_rotmats: np.ndarray, rest_joints: np.ndarray) -> dict[str, dict[str, float]]:
    """{"model": ..., "mean_pose": ..., "nearest_caption": ...} each with mpjre_deg, mpjpe_mm, pa_mpjpe_mm."""
    true = np.asarray(true, dtype=np.float64)
    mean = np.broadcast_to(mean_pose(train_rotmats), true.shape)
    nearest = NearestCaption(train_captions, train_rotmats).predict(prompts)
    return {"model": summarize(model_pred, true, rest_joints),
            "mean_pose": summarize(mean, true, rest_joints),
            "nearest_caption": summarize(nearest, true, rest_joints)}


# --- the test sets -------------------------------------------------------------------------------------

def text_prompts(prompts, style: str) -> list[str]:
    from training.chat_turns import TEXT_QUESTIONS

    if style == "typed":
        return [str(p) for p in prompts]
    if style == "templated":
        return [TEXT_QUESTIONS[0].format(description=str(p).strip()) for p in prompts]
    raise ValueError(f"style must be 'typed' or 'templated', got {style!r}")


def evaluate(runtime, bench: dict, rest_joints, *, sets=("explicit", "speculative", "images"),
             styles=("typed", "templated"), limit: int = 0) -> dict:
    """{"explicit_typed": {"model": {...}, "mean_pose": {...}, "nearest_caption": {...}}, ...}."""
    from PIL import Image

    from training.chat_turns import IMAGE_QUESTIONS

    results = {}
    train_texts = [str(t) for t in bench["train_texts"]]
    cut = slice(0, limit or None)
    for name in [s for s in sets if s in ("explicit", "speculative")]:
        prompts, true = bench[f"{name}_prompts"][cut], bench[f"{name}_rotmat"][cut]
        for style in styles:
            pred = runtime_poses(runtime, text_prompts(prompts, style))
            results[f"{name}_{style}"] = compare(pred, [str(p) for p in prompts], true, train_texts,
                                                 bench["train_text_rotmat"], rest_joints)
    if "images" in sets:
        pixels, true = bench["image_pixels"][cut], bench["image_rotmat"][cut]
        pred = runtime_poses(runtime, [IMAGE_QUESTIONS[0]] * len(pixels), [Image.fromarray(p) for p in pixels])
        mean = np.broadcast_to(bench["train_image_mean_rotmat"].astype(np.float64), true.shape)
        results["images"] = {"model": summarize(pred, true, rest_joints), "mean_pose": summarize(mean, true, rest_joints)}
    return results
