"""Evaluation: pose errors through forward kinematics, text→pose recall@K, and the two reasoning benchmarks.

    python -m training.evaluate --checkpoint CKPT [--posescript-dir PS --amass-dir AMASS] \
        [--spg SPG.jsonl] [--rpe RPE.jsonl --rpe-image-root DIR] [--retrieval RETRIEVAL_DIR] \
        [--smpl-model SMPL.npz] [--max-samples 500] [--out results.json]

Poses are predicted the way the backend's direct mode does it: one forward pass over the prompt and the
template's forced answer ending in ``<POSE>`` (the hidden state before the token feeds the head).
Joint positions come from forward kinematics on the rest skeleton of the user's SMPL file (its joint
regressor applied to the template) or, without one, the mannequin's 24 joints. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from smpl_rig import metrics
from smpl_rig.kinematics import forward_kinematics

from .data.records import PoseRecord
from backend.posegpt.templates import IMAGE_MARK

from .chat_turns import DESCRIBED_PERSON_QUESTION, IMAGE_QUESTIONS, TEXT_QUESTIONS

log = logging.getLogger(__name__)
MANNEQUIN_NPZ = Path(__file__).resolve().parents[1] / "smpl_rig" / "data" / "mannequin.npz"


def rest_skeleton(smpl_model: str | None = None) -> tuple[np.ndarray, str]:
    """(rest joints (24, 3) metres, what they come from): the user's SMPL file, else the mannequin."""
    from smpl_rig import body as body_module

    if smpl_model:
        return np.asarray(body_module.load(smpl_model).rest_joints, dtype=np.float64), f"SMPL file {smpl_model}"
    if hasattr(body_module, "load"):
        try:
            return np.asarray(body_module.load("mannequin").rest_joints, dtype=np.float64), "mannequin"
        except (FileNotFoundError, NotImplementedError, ValueError) as exc:
            log.warning("smpl_rig.body.load('mannequin') failed (%s); reading the mannequin asset directly", exc)
    # smpl_rig.body.load not available (yet): the asset's joints are all FK needs.
    with np.load(MANNEQUIN_NPZ, allow_pickle=False) as data:
        return data["rest_joints"].astype(np.float64), "mannequin (asset read directly)"


def pose_errors(pred_rotmat, true_rotmat, rest_joints) -> dict[str, np.ndarray]:
    """Per-sample MPJPE / PA-MPJPE (mm), MPJRE (degrees and radians × 100) for (N, 24, 3, 3) poses."""
    pred = np.asarray(pred_rotmat, dtype=np.float64)
    true = np.asarray(true_rotmat, dtype=np.float64)
    if pred.shape != true.shape or pred.shape[-3:] != (24, 3, 3):
        raise ValueError(f"expected two (N, 24, 3, 3) arrays, got {pred.shape} and {true.shape}")
    rest = np.asarray(rest_joints, dtype=np.float64)
    joints_pred = forward_kinematics(rest, pred).joints
    joints_true = forward_kinematics(rest, true).joints
    return {"mpjpe_mm": metrics.mpjpe_mm(joints_pred, joints_true),
            "pa_mpjpe_mm": metrics.pa_mpjpe_mm(joints_pred, joints_true),
            "mpjre_deg": metrics.mpjre_deg(pred, true),
            "mpjre_rad100": metrics.mpjre_rad100(pred, true)}


def question_for(record: PoseRecord) -> str:
    """The fixed evaluation question (first template) for a record: text, image, or described person."""
    if record.kind == "text":
        return TEXT_QUESTIONS[0].format(description=record.caption.strip())
    if record.caption:
        return IMAGE_MARK + "\n" + DESCRIBED_PERSON_QUESTION.format(description=record.caption.strip())
    return IMAGE_MARK + "\n" + IMAGE_QUESTIONS[0]


@torch.no_grad()
def predict_poses(model, tokenizer, template, family, records: list[PoseRecord], *, batch_size: int = 8,
                  device=None, questions: list[str] | None = None, prompt_attention: str = "causal") -> np.ndarray:
    """(N, 24, 3, 3) camera-frame predictions for pose records, one forward pass per batch, prompts read
    under the model's ``prompt_attention`` (its manifest's)."""
    from backend.posegpt.templates import encode_conversation_spans

    from .collate import EncodedSample, collate, language_mask

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    dtype = next(p for p in model.backbone.parameters()).dtype
    out = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        samples = []
        for k, record in enumerate(chunk):
            question = questions[start + k] if questions else question_for(record)
            images = [family.encode_image(record.load_image())] if record.load_image else []
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": template.direct_answer}]
            ids, labels, spans = encode_conversation_spans(
                tokenizer, template, messages, image_ids=lambda i, images=images: family.placeholder_ids(images[i]))
            samples.append(EncodedSample(ids, labels, images, family.positions(ids, images), None, record.kind,
                                         user_spans=spans))
        batch = collate(samples, tokenizer.pad_token_id or 0, family, prompt_attention)
        kwargs = family.image_kwargs(batch["images"], device, dtype)
        if "position_ids" in batch:
            kwargs["position_ids"] = batch["position_ids"].to(device)
        result = model(input_ids=batch["input_ids"].to(device), attention_mask=language_mask(batch, family, device, dtype),
                       **kwargs)
        if len(result.pose_rotmat) != len(chunk):
            raise RuntimeError(f"expected one pose per sample, got {len(result.pose_rotmat)} for {len(chunk)}")
        out.append(result.pose_rotmat.float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 24, 3, 3))


def summarize(errors: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in errors.items()} | {"count": int(len(next(iter(errors.values()))))}


def evaluate_records(model, tokenizer, template, family, records, rest_joints, *, retrieval=None,
                     batch_size: int = 8, prompt_attention: str = "causal") -> dict[str, float]:
    """Pose errors (and recall@K for captioned text records when a retrieval model is given)."""
    pred = predict_poses(model, tokenizer, template, family, records, batch_size=batch_size,
                         prompt_attention=prompt_attention)
    true = np.stack([r.pose_rotmat for r in records])
    result = summarize(pose_errors(pred, true, rest_joints))
    if retrieval is not None and records and records[0].kind == "text" and len(records) >= 2:
        from .retrieval import recall_at_k
        result |= recall_at_k(retrieval, [r.caption for r in records], pred)
    return result


def format_table(results: dict[str, dict[str, float]]) -> str:
    columns = ["count", "mpjpe_mm", "pa_mpjpe_mm", "mpjre_deg", "mpjre_rad100",
               "text_to_pose_R@1", "text_to_pose_R@5", "text_to_pose_R@10"]
    columns = [c for c in columns if any(c in r for r in results.values())]
    lines = ["| set | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in results.items():
        cells = [(f"{row[c]:.0f}" if c == "count" else f"{row[c]:.2f}") if c in row else "–" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from backend.posegpt.checkpoint import load_checkpoint
    from backend.posegpt.families import make_family
    from backend.posegpt.model import unwrap_backbone
    from backend.posegpt.templates import Template

    from .data.benchmarks import load_rpe, load_spg
    from .data.posescript import PoseScript
    from .retrieval import TextPoseRetrieval

    parser = argparse.ArgumentParser(description="Evaluate a PoseGPT checkpoint (see module docstring).")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--posescript-dir")
    parser.add_argument("--amass-dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--spg")
    parser.add_argument("--rpe")
    parser.add_argument("--rpe-image-root", default=".")
    parser.add_argument("--retrieval")
    parser.add_argument("--smpl-model")
    parser.add_argument("--max-samples", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="eval_results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model, tokenizer, processor, manifest = load_checkpoint(args.checkpoint, device=args.device)
    base = unwrap_backbone(model.backbone)
    family = make_family(manifest["family"], base.config, processor, base.model)
    template = Template.from_dict(manifest["template"])
    rest, skeleton = rest_skeleton(args.smpl_model)
    retrieval = TextPoseRetrieval.load(args.retrieval) if args.retrieval else None
    limit = args.max_samples or None
    sets: dict[str, list] = {}
    if args.posescript_dir and args.amass_dir:
        data = PoseScript(args.posescript_dir, args.amass_dir, args.split, limit=args.max_samples)
        sets[f"posescript_{args.split}"] = [data[i] for i in range(len(data))]
    if args.spg:
        sets["spg"] = load_spg(args.spg)[:limit]
    if args.rpe:
        sets["rpe"] = load_rpe(args.rpe, args.rpe_image_root)[:limit]
    if not sets:
        parser.error("nothing to evaluate: give --posescript-dir/--amass-dir, --spg or --rpe")
    random.seed(0)
    results = {name: evaluate_records(model, tokenizer, template, family, records, rest, retrieval=retrieval,
                                      batch_size=args.batch_size,
                                      prompt_attention=manifest.get("prompt_attention", "causal"))
               for name, records in sets.items()}
    print(f"skeleton: {skeleton}")
    print(format_table(results))
    Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "skeleton": skeleton,
                                          "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
