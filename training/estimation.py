"""The paper's pose-estimation table (3DPW and Human3.6M: MPJPE, PA-MPJPE in mm, MPJRE) for a checkpoint.

    make eval CHECKPOINT=checkpoints/X ARGS="--smpl-model models/smpl --joint-regressor J_regressor_h36m.npy \
        --3dpw data/3dpw --h36m data/h36m_valid_protocol2.npz --h36m-image-root data/h36m"
    python -m training.estimation --checkpoint CKPT --smpl-model DIR --joint-regressor J17.npy \
        [--3dpw ROOT [--3dpw-split test] | --3dpw-npz 3dpw_test.npz --3dpw-image-root ROOT] \
        [--h36m NPZ --h36m-image-root DIR] [--max-samples N] [--out results.json]

The protocol of the SMPL-regression literature (SPIN, HMR 2.0), which the paper follows:
1. The person is cropped (square box, ``training.data.estimation_sets``) and asked about with the first
   training image question; the pose is read in direct mode (``training.evaluate.predict_poses``).
2. Joints are regressed from the POSED MESH with a user-supplied regressor: Human3.6M's 17-joint regressor
   ``J_regressor_h36m.npy`` (17, 6890) from SPIN's data, applied to the SMPL vertices; the 14 LSP joints
   are taken in SPIN's ``H36M_TO_J14`` order and made relative to the regressor's pelvis (joint 0).
3. Bodies: the user's SMPL files (``--smpl-model``: a folder with SMPL_MALE / SMPL_FEMALE / SMPL_NEUTRAL
   .npz or .pkl). The ground truth is posed on the subject's own shape and gender (3DPW: ``betas``,
   ``genders``); the prediction — PoseGPT predicts no shape — on the same body by default
   (``--pred-body subject``: the error is the pose's alone), or on the neutral mean-shape body as the
   paper's text says it sets β = 0 (``--pred-body neutral``). Human3.6M's ground truth is motion-capture
   joints (``S``); its subjects' shapes are not in the file, so both use the neutral mean shape unless the
   npz has ``shape``/``gender``.
4. MPJPE: mean joint distance after both are made pelvis-relative, mm. PA-MPJPE: the same after a
   similarity Procrustes alignment per sample. MPJRE (3DPW, which has SMPL ground truth): mean geodesic
   angle over the 24 joints, radians × 100 as the paper prints it (degrees in the JSON too).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from smpl_rig import metrics

from .data.estimation_sets import EstimationSample, read_3dpw, read_spin_npz

log = logging.getLogger(__name__)

# Human3.6M's 17 regressed joints → the 14 LSP joints (SPIN's constants.H36M_TO_J14): right ankle, knee,
# hip, left hip, knee, ankle, right wrist, elbow, shoulder, left shoulder, elbow, wrist, neck, head top.
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
H36M_PELVIS = 0
CHUNK = 64                               # poses skinned at once
PAPER_ROWS = {                           # the paper's Table (3DPW MPJPE, PA-MPJPE, MPJRE; H3.6M MPJPE, PA-MPJPE)
    "SPIN": (102.9, 62.9, 10.1, 61.9, 42.6),
    "HMR 2.0": (91.0, 58.4, 9.2, 50.0, 33.6),
    "PoseGPT (paper)": (163.6, 81.9, 10.4, 126.0, 82.4),
}


def load_regressor(path) -> np.ndarray:
    """A (17, V) joint regressor from .npy or a one-array .npz ((V, 17) is transposed)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if len(data.files) != 1:
                raise ValueError(f"{path}: expected one array (the regressor), found {data.files}")
            regressor = data[data.files[0]]
    else:
        regressor = np.load(path, allow_pickle=False)
    regressor = np.asarray(regressor, dtype=np.float64)
    if regressor.ndim != 2 or 17 not in regressor.shape:
        raise ValueError(f"{path}: a Human3.6M joint regressor is (17, V), got {regressor.shape}")
    return regressor if regressor.shape[0] == 17 else regressor.T


class Bodies:
    """SMPL bodies per gender from the user's model folder (or one file: used for every gender)."""

    def __init__(self, source):
        self.source = source
        self._cache = {}

    def get(self, gender: str):
        from smpl_rig.body import load

        if gender not in self._cache:
            path = Path(self.source)
            self._cache[gender] = load(str(path), gender=gender) if path.is_dir() else load(str(path))
        return self._cache[gender]


def regressed_joints(body, regressor: np.ndarray, rotmats: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
    """(N, 24, 3, 3) poses on ``body`` with shape ``betas`` → (N, 14, 3) LSP joints relative to the
    regressor's pelvis, metres."""
    if regressor.shape[1] != body.num_vertices:
        raise ValueError(f"the joint regressor has {regressor.shape[1]} columns but the body {body.name!r} "
                         f"has {body.num_vertices} vertices")
    if betas is not None:
        body = body.shaped(np.asarray(betas, dtype=np.float64))
    rotmats = np.asarray(rotmats, dtype=np.float64)
    joints = np.zeros((len(rotmats), 17, 3))
    for start in range(0, len(rotmats), CHUNK):          # skinning holds (chunk, V, 4, 4): keep it small
        vertices, _ = body.pose(rotmats[start:start + CHUNK])
        joints[start:start + CHUNK] = np.einsum("jv,nvc->njc", regressor, vertices)
    return joints[:, list(H36M_TO_J14)] - joints[:, H36M_PELVIS:H36M_PELVIS + 1]


def _groups(samples: list[EstimationSample], key):
    groups: dict = {}
    for i, s in enumerate(samples):
        groups.setdefault(key(s), []).append(i)
    return groups


def protocol_errors(pred_rotmat: np.ndarray, samples: list[EstimationSample], bodies: Bodies,
                    regressor: np.ndarray, pred_body: str = "subject") -> dict[str, np.ndarray]:
    """Per-sample errors: mpjpe_mm, pa_mpjpe_mm (N,), and mpjre_deg / mpjre_rad100 where the samples have
    an SMPL ground truth. pred_body: "subject" (the sample's shape and gender) or "neutral" (β = 0)."""
    if pred_body not in ("subject", "neutral"):
        raise ValueError(f"pred_body must be 'subject' or 'neutral', got {pred_body!r}")
    pred_rotmat = np.asarray(pred_rotmat, dtype=np.float64)
    if pred_rotmat.shape != (len(samples), 24, 3, 3):
        raise ValueError(f"expected ({len(samples)}, 24, 3, 3) predictions, got {pred_rotmat.shape}")
    true_j = np.zeros((len(samples), 14, 3))
    pred_j = np.zeros((len(samples), 14, 3))
    subject = lambda s: (s.gender, None if s.betas is None else tuple(np.round(s.betas, 12)))  # noqa: E731
    for (gender, betas), idx in _groups(samples, subject).items():
        body = bodies.get(gender)
        betas = None if betas is None else np.asarray(betas)
        with_pose = [i for i in idx if samples[i].joints14 is None]
        if with_pose:
            true_j[with_pose] = regressed_joints(body, regressor, np.stack([samples[i].pose_rotmat for i in with_pose]),
                                                 betas)
        for i in idx:
            if samples[i].joints14 is not None:
                true_j[i] = samples[i].joints14
        if pred_body == "subject":
            pred_j[idx] = regressed_joints(body, regressor, pred_rotmat[idx], betas)
    if pred_body == "neutral":
        pred_j[:] = regressed_joints(bodies.get("neutral"), regressor, pred_rotmat, None)
    errors = {"mpjpe_mm": np.linalg.norm(pred_j - true_j, axis=-1).mean(-1) * 1000.0,
              "pa_mpjpe_mm": metrics.pa_mpjpe_mm(pred_j, true_j)}
    if all(s.pose_rotmat is not None for s in samples):
        true_r = np.stack([s.pose_rotmat for s in samples])
        errors["mpjre_deg"] = metrics.mpjre_deg(pred_rotmat, true_r)
        errors["mpjre_rad100"] = metrics.mpjre_rad100(pred_rotmat, true_r)
    return errors


def summarize(errors: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in errors.items()} | {"count": int(len(errors["mpjpe_mm"]))}


def predict_samples(model, tokenizer, template, family, samples: list[EstimationSample], batch_size: int = 8) -> np.ndarray:
    """(N, 24, 3, 3) camera-frame poses for the person crops, in direct mode (``predict_poses``)."""
    from PIL import Image

    from .data.hmr import crop_person
    from .data.records import PoseRecord
    from .evaluate import predict_poses

    def loader(sample):
        def load():
            with Image.open(sample.image_path) as image:
                return crop_person(image.convert("RGB"), sample.center, sample.box_size)
        return load

    records = [PoseRecord(kind="image", pose_rotmat=np.broadcast_to(np.eye(3), (24, 3, 3)).astype(np.float32),
                          load_image=loader(s)) for s in samples]
    return predict_poses(model, tokenizer, template, family, records, batch_size=batch_size)


def format_table(results: dict[str, dict[str, float]], name: str = "this checkpoint") -> str:
    """The paper's layout: 3DPW MPJPE, PA-MPJPE, MPJRE (rad × 100) | H3.6M MPJPE, PA-MPJPE; the paper's
    rows for reference, then this checkpoint's (— where a set was not evaluated)."""
    def cell(value):
        return "—" if value is None else f"{value:.1f}"

    pw, h36m = results.get("3dpw"), results.get("h36m")
    ours = (pw and pw["mpjpe_mm"], pw and pw["pa_mpjpe_mm"], pw and pw.get("mpjre_rad100"),
            h36m and h36m["mpjpe_mm"], h36m and h36m["pa_mpjpe_mm"])
    lines = ["| | 3DPW | | | H3.6M | |", "| Method | MPJPE | PA-MPJPE | MPJRE | MPJPE | PA-MPJPE |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {method} | " + " | ".join(cell(v) for v in row) + " |" for method, row in PAPER_ROWS.items()]
    lines.append(f"| {name} | " + " | ".join(cell(v) for v in ours) + " |")
    counts = ", ".join(f"{k}: {v['count']} people" for k, v in results.items())
    lines.append(f"(mm; MPJRE in radians × 100; {counts or 'no test set given'})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The paper's 3DPW / Human3.6M pose-estimation table (see the module docstring).")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--smpl-model", "--smpl-dir", dest="smpl_model", help="folder with SMPL_MALE/FEMALE/NEUTRAL (.npz or .pkl), or one file")
    parser.add_argument("--joint-regressor", "--regressor", dest="joint_regressor", help="J_regressor_h36m.npy (17, V)")
    parser.add_argument("--3dpw", "--3dpw-root", dest="threedpw", help="3DPW root (sequenceFiles/, imageFiles/)")
    parser.add_argument("--3dpw-split", dest="threedpw_split", default="test")
    parser.add_argument("--3dpw-npz", dest="threedpw_npz", help="SPIN's 3dpw_test.npz instead of the pickles")
    parser.add_argument("--3dpw-image-root", dest="threedpw_image_root", help="image root of --3dpw-npz")
    parser.add_argument("--h36m", "--h36m-npz", dest="h36m", help="SPIN's h36m_valid_protocol2.npz (or protocol1)")
    parser.add_argument("--h36m-image-root", help="image root of --h36m")
    parser.add_argument("--pred-body", choices=("subject", "neutral"), default="subject")
    parser.add_argument("--max-samples", type=int, default=0, help="per set; 0 = all")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sets: dict[str, list[EstimationSample]] = {}
    if args.threedpw:
        sets["3dpw"] = read_3dpw(args.threedpw, args.threedpw_split)
    elif args.threedpw_npz:
        sets["3dpw"] = read_spin_npz(args.threedpw_npz, args.threedpw_image_root or ".", "3dpw")
    if args.h36m:
        sets["h36m"] = read_spin_npz(args.h36m, args.h36m_image_root or ".", "h36m")
    results: dict[str, dict[str, float]] = {}
    if sets:
        if not (args.smpl_model and args.joint_regressor):
            parser.error("the protocol regresses joints from SMPL meshes: give --smpl-model and --joint-regressor")
        from backend.posegpt.checkpoint import load_checkpoint
        from backend.posegpt.families import make_family
        from backend.posegpt.model import unwrap_backbone
        from backend.posegpt.templates import Template

        model, tokenizer, processor, manifest = load_checkpoint(args.checkpoint, device=args.device)
        base = unwrap_backbone(model.backbone)
        family = make_family(manifest["family"], base.config, processor, base.model)
        template = Template.from_dict(manifest["template"])
        bodies, regressor = Bodies(args.smpl_model), load_regressor(args.joint_regressor)
        for name, samples in sets.items():
            samples = samples[: args.max_samples or None]
            pred = predict_samples(model, tokenizer, template, family, samples, args.batch_size)
            results[name] = summarize(protocol_errors(pred, samples, bodies, regressor, args.pred_body))
            log.info("%s: %s", name, results[name])
    print(format_table(results, Path(args.checkpoint).name))
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "pred_body": args.pred_body,
                                              "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
