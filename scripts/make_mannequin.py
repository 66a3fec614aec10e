"""Regenerate the licence-free default body, ``smpl_rig/data/mannequin.npz``, from ``mannequin-x``.

Run:  .venv/bin/python scripts/make_mannequin.py            (about a minute, needs PyPI)

``mannequin-x`` (Apache-2.0) ships a skinned "wooden" mannequin driven by SMPL-X joint rotations. It
declares numpy >= 2 while this project's venv keeps numpy < 2 (bpy 5.0.x), so this script builds a
throw-away venv, installs the package there (plus ``fast-simplification`` to decimate the mesh) and
re-runs itself inside it with ``--export``. The export:

1. Poses the mannequin at rest with flat hands, so every joint rotation is identity (the SMPL rest
   convention). The package's frame already is the SMPL model frame: +Y up, facing +Z, body left +X,
   metres.
2. Maps its 54 joints onto SMPL's 24: joints 0–21 are the same SMPL-X body joints in the same order;
   the zero-length L_Hand/R_Hand helpers at the wrists (palm) go to the wrists; all finger joints go to
   SMPL's left_hand/right_hand, whose rest position is put at the mean of the four finger-base
   knuckles (where SMPL's hand joint sits).
3. Checks that SMPL linear blend skinning with the mapped weights reproduces the package's own posed
   vertices for random body poses (before decimation), so the mapping is exact, not approximate.
4. Decimates each mesh part separately (quadric collapse) and gives every kept vertex the weights of
   the nearest source vertex of the same part; writes float32 arrays, well under 1 MB.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "smpl_rig" / "data" / "mannequin.npz"
LICENSE_OUTPUT = REPO / "smpl_rig" / "data" / "MANNEQUIN_LICENSE.txt"
VENV = Path(os.environ.get("MANNEQUIN_VENV", "/tmp/posegpt_mannequin_venv"))
PACKAGE = "mannequin-x==0.3.0"
DECIMATOR = "fast-simplification==0.2.0"
FACE_KEEP_RATIO = 0.35  # 48k source triangles → about 17k: smooth enough, asset stays small
FINGER_BASES = ("Index1", "Middle1", "Ring1", "Pinky1")


def bootstrap() -> None:
    """Create the throw-away venv, install mannequin-x there, and run the export inside it."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", PACKAGE, DECIMATOR], check=True)
    subprocess.run([str(python), __file__, "--export"], check=True)


def smpl_mapping(joint_names):
    """For each of the package's joints, the SMPL joint (0..23) its skin weight goes to."""
    mapping = []
    for index, name in enumerate(joint_names):
        if index < 22:
            mapping.append(index)                       # same body joint, same order
        elif name in ("L_Hand", "R_Hand"):
            mapping.append(20 if name[0] == "L" else 21)  # zero-length palm helper sits at the wrist
        else:
            mapping.append(22 if name[0] == "L" else 23)  # every finger bone rides on SMPL's hand joint
    return mapping


def smpl_lbs(rest_joints, vertices, weights, rotmats):
    """SMPL-style LBS with the project's own forward kinematics: (V, 3) posed vertices."""
    from smpl_rig.kinematics import forward_kinematics
    import numpy as np

    skin = forward_kinematics(rest_joints, rotmats).skinning            # (24, 4, 4)
    per_vertex = np.einsum("vj,jab->vab", weights, skin)                # (V, 4, 4)
    return np.einsum("vab,vb->va", per_vertex[:, :3, :3], vertices) + per_vertex[:, :3, 3]


def decimate(vertices, faces, weights, part_vertex_ranges, part_face_ranges):
    """Quadric-decimate each part on its own; weights come from the nearest source vertex of the part."""
    import fast_simplification
    import numpy as np

    out_vertices, out_faces, out_weights, offset = [], [], [], 0
    for (v0, vn), (f0, fn) in zip(part_vertex_ranges, part_face_ranges):
        part_vertices = vertices[v0:v0 + vn]
        part_faces = faces[f0:f0 + fn] - v0
        assert part_faces.min() >= 0 and part_faces.max() < vn, "a face crosses mesh parts"
        target = max(int(fn * FACE_KEEP_RATIO), 40)
        new_vertices, new_faces = fast_simplification.simplify(part_vertices, part_faces, target_count=target)
        # Nearest source vertex (same part) for the weights; parts are small, brute force is fine.
        d2 = ((new_vertices[:, None, :] - part_vertices[None, :, :]) ** 2).sum(-1)
        nearest = d2.argmin(1)
        out_vertices.append(new_vertices)
        out_faces.append(new_faces + offset)
        out_weights.append(weights[v0:v0 + vn][nearest])
        offset += len(new_vertices)
    return np.concatenate(out_vertices), np.concatenate(out_faces), np.concatenate(out_weights)


def export() -> None:
    """Runs inside the throw-away venv (numpy >= 2, mannequin-x importable)."""
    import importlib.metadata

    import numpy as np
    from mannequin import Mannequin

    sys.path.insert(0, str(REPO))  # smpl_rig's core needs numpy alone, any version
    from smpl_rig.rotations import rotvec_to_rotmat
    from smpl_rig.skeleton import JOINT_NAMES

    model = Mannequin("wooden", flat_hand_mean=True)
    names = model.joint_names
    assert names[:24] == ("Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle",
                          "R_Ankle", "Spine3", "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head",
                          "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand",
                          "R_Hand"), names[:24]
    rest = model.rest_pose(dtype=np.float64)
    transforms = model.joint_transforms(rest)                             # (54, 4, 4)
    assert np.allclose(transforms[:, :3, :3], np.eye(3), atol=1e-6), "rest pose must have identity rotations"
    source_joints = transforms[:, :3, 3].astype(np.float64)               # (54, 3)
    vertices = model.vertices(rest).astype(np.float64)                    # (V, 3)

    # 1. Rest joints in SMPL order; SMPL's hand joints at the knuckles.
    rest_joints = source_joints[:24].copy()
    for side, smpl_index in (("L", 22), ("R", 23)):
        knuckles = [names.index(f"{side}_{finger}") for finger in FINGER_BASES]
        rest_joints[smpl_index] = source_joints[knuckles].mean(0)

    # 2. Skin weights folded onto the 24 SMPL joints (the package's top-4 influences, rigid parts kept).
    mapping = np.asarray(smpl_mapping(names))
    influences, influence_weights = model._skin_joint_indices, model._skin_weights  # (V, 4) each
    weights = np.zeros((len(vertices), 24))
    np.add.at(weights, (np.arange(len(vertices))[:, None], mapping[influences]), influence_weights)
    weights /= weights.sum(1, keepdims=True)

    # 3. Exactness check against the package's own skinning, for random body poses (hands at rest).
    rng = np.random.default_rng(0)
    for _ in range(3):
        rotvecs = np.zeros((24, 3))
        rotvecs[:22] = rng.normal(scale=0.4, size=(22, 3))
        pose = model.rest_pose(dtype=np.float64)
        pose["pelvis_rotation"] = rotvecs[0]
        pose["body_pose"] = rotvecs[1:22]
        theirs = model.vertices(pose)
        ours = smpl_lbs(rest_joints, vertices, weights, rotvec_to_rotmat(rotvecs))
        error = np.abs(theirs - ours).max()
        assert error < 1e-4, f"SMPL skinning disagrees with mannequin-x by {error} m"
    print(f"skinning check: max difference to mannequin-x {error:.2e} m")

    # 4. Decimate part by part.
    source = model._weights
    vertex_ranges = list(zip(source.skin_part_vertex_starts, source.skin_part_vertex_counts))
    face_ranges = list(zip(source.skin_part_face_starts, source.skin_part_face_counts))
    faces = np.asarray(model.faces)
    small_vertices, small_faces, small_weights = decimate(vertices, faces, weights, vertex_ranges, face_ranges)
    used = np.unique(small_faces)
    assert len(used) == len(small_vertices), "decimation left unreferenced vertices"

    version = importlib.metadata.version("mannequin-x")
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUTPUT,
        rest_joints=rest_joints.astype(np.float32),
        vertices=small_vertices.astype(np.float32),
        faces=small_faces.astype(np.int32),
        weights=small_weights.astype(np.float32),
        joint_names=np.asarray(JOINT_NAMES),
        source=np.asarray(f"mannequin-x {version} (wooden), Apache-2.0"),
    )
    licence_text = Path(importlib.metadata.distribution("mannequin-x").locate_file(
        f"mannequin_x-{version}.dist-info/licenses/LICENSE")).read_text()
    LICENSE_OUTPUT.write_text(NOTICE.format(version=version) + "\n" + licence_text)
    height = small_vertices[:, 1].max() - small_vertices[:, 1].min()
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1024:.0f} KiB): {len(small_vertices)} vertices, "
          f"{len(small_faces)} faces, height {height:.3f} m")


NOTICE = """\
smpl_rig/data/mannequin.npz is derived from the "wooden" mannequin of the Python package
mannequin-x {version} (from PyPI) by Andrea Boscolo Camiletto (the package's
author), distributed under the Apache License, Version 2.0 (the package's licence, full text below).

Changes made by scripts/make_mannequin.py: posed at rest with flat hands; the 54 joints folded onto the
24 SMPL joints (finger bones onto the hand joints, placed at the knuckles); skin weights re-mapped and
renormalised; each mesh part decimated (quadric edge collapse); stored as float32 arrays.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", action="store_true", help="internal: run inside the throw-away venv")
    args = parser.parse_args()
    export() if args.export else bootstrap()


if __name__ == "__main__":
    main()
