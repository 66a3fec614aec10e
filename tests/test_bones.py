"""The bone formula without Blender: M_i = D_iᵀ R_i D_i, simulated through Blender's own pose evaluation
(armature-space matrix = parent's · parent restⁱ · rest · basis), puts every bone head on the SMPL
forward-kinematics joint mapped by C, for any rest orientation; the one rotation-validity check."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from smpl_rig import bones, frames, kinematics, rotations as rot
from smpl_rig.body import load
from smpl_rig.skeleton import NUM_JOINTS, PARENTS

C = frames.SMPL_TO_BLENDER
SMPL_RIG = Path(__file__).resolve().parents[1] / "smpl_rig"


def random_rotmats(rng, batch=(), scale=0.6):
    return rot.rotvec_to_rotmat(rng.normal(0.0, scale, (*batch, NUM_JOINTS, 3)))


def simulate_blender_pose(rest_rot, heads, basis_rot, basis_loc):
    """What Blender computes for pose bones: armature-space matrices (24, 4, 4) from rest matrices
    (``bone.matrix_local``) and ``matrix_basis`` (rotation, location), parents first."""
    rest = np.tile(np.eye(4), (NUM_JOINTS, 1, 1))
    rest[:, :3, :3], rest[:, :3, 3] = rest_rot, heads
    basis = np.tile(np.eye(4), (NUM_JOINTS, 1, 1))
    basis[:, :3, :3], basis[:, :3, 3] = basis_rot, basis_loc
    posed = np.empty_like(rest)
    for i in range(NUM_JOINTS):
        p = PARENTS[i]
        posed[i] = (rest[i] if p < 0 else posed[p] @ np.linalg.inv(rest[p]) @ rest[i]) @ basis[i]
    return posed


@pytest.mark.parametrize("seed", range(5))
def test_formula_puts_every_head_on_forward_kinematics_for_any_bone_orientation(seed):
    rng = np.random.default_rng(seed)
    body = load("mannequin")
    rest_rot = rot.rotvec_to_rotmat(rng.normal(0.0, 2.0, (NUM_JOINTS, 3)))   # any direction, any roll
    heads = frames.smpl_points_to_blender(body.rest_joints)
    rotmats, transl = random_rotmats(rng), rng.normal(0.0, 0.3, 3)
    d = bones.bone_frames(rest_rot)
    location = np.zeros((NUM_JOINTS, 3))
    location[0] = bones.pelvis_location(d, transl)
    posed = simulate_blender_pose(rest_rot, heads, bones.pose_bone_rotmats(d, rotmats), location)
    expected = frames.smpl_points_to_blender(kinematics.forward_kinematics(body.rest_joints, rotmats, transl).joints)
    np.testing.assert_allclose(posed[:, :3, 3], expected, atol=1e-9 * body.height)
    np.testing.assert_allclose(bones.translation_from_location(d, location[0]), transl, atol=1e-12)


def test_bones_along_z_with_roll_zero_have_identity_frames():
    """The special case older add-ons rely on: bones along Blender +Z with roll 0 (B = C) give D = I."""
    np.testing.assert_allclose(bones.bone_frames(np.broadcast_to(C, (NUM_JOINTS, 3, 3))),
                               np.broadcast_to(np.eye(3), (NUM_JOINTS, 3, 3)), atol=1e-12)


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_and_quaternions_keep_batch_shapes(batch, dtype):
    rng = np.random.default_rng(1)
    d = bones.bone_frames(rot.rotvec_to_rotmat(rng.normal(size=(NUM_JOINTS, 3))))
    rotmats = random_rotmats(rng, batch).astype(dtype)
    local = bones.pose_bone_rotmats(d, rotmats)
    assert local.shape == (*batch, NUM_JOINTS, 3, 3)
    np.testing.assert_allclose(bones.smpl_rotmats_from_pose_bones(d, local), rotmats, atol=1e-6)
    quats = bones.pose_bone_quats(d, rotmats)
    assert quats.shape == (*batch, NUM_JOINTS, 4) and np.all(quats[..., 0] >= 0)
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(quats), local, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.full((24, 3, 3), 2.0), "not rotations"),
    (np.tile(np.diag([1.0, 1.0, -1.0]), (24, 1, 1)), "not rotations"),
    (np.full((24, 3, 3), np.nan), "NaN"),
    (np.zeros((24, 3)), "shape"),
])
def test_check_rotmats_refuses_what_is_not_a_rotation(bad, message):
    with pytest.raises(ValueError, match=message):
        bones.check_rotmats(bad)


def test_check_rotmats_accepts_float32_model_output_and_checks_the_joint_count():
    rotmats = random_rotmats(np.random.default_rng(2)).astype(np.float32)
    out = bones.check_rotmats(rotmats, num_joints=NUM_JOINTS)
    assert out.dtype == np.float64 and out.shape == (NUM_JOINTS, 3, 3)
    with pytest.raises(ValueError, match=r"\(23, 3, 3\)"):
        bones.check_rotmats(rotmats[:23], num_joints=NUM_JOINTS)


def test_pose_rotmats_reads_every_form_and_dicts_keep_the_current_pose():
    rng = np.random.default_rng(3)
    rotmats = random_rotmats(rng)
    for form in (rot.rotmat_to_rotvec(rotmats), rot.rotmat_to_d6(rotmats), rot.rotmat_to_quat_wxyz(rotmats), rotmats):
        np.testing.assert_allclose(bones.pose_rotmats(form), rotmats, atol=1e-9)
    changed = bones.pose_rotmats({"head": [0.3, 0.0, 0.0]}, current=rotmats)
    np.testing.assert_allclose(changed[15], rot.rotmat_x(0.3), atol=1e-12)
    np.testing.assert_array_equal(np.delete(changed, 15, 0), np.delete(rotmats, 15, 0))


def test_leaf_bones_continue_their_parent_and_rolls_face_forward():
    heads = frames.smpl_points_to_blender(load("mannequin").rest_joints)
    tails = bones.bone_tails(heads, 0.01)
    direction = lambda i: (tails[i] - heads[i]) / np.linalg.norm(tails[i] - heads[i])
    np.testing.assert_allclose(direction(15), (heads[15] - heads[12]) / np.linalg.norm(heads[15] - heads[12]))
    np.testing.assert_allclose(bones.roll_target(np.array([1.0, 0.0, 0.0])), [0.0, -1.0, 0.0])
    np.testing.assert_allclose(bones.roll_target(np.array([0.0, -1.0, 0.1])), [0.0, 0.0, 1.0])


# --- the package's layout ------------------------------------------------------------------------------

def _internal_imports(path: Path) -> set[str]:
    """Modules of smpl_rig that ``path`` imports (at any depth of the file), by module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smpl_rig."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("smpl_rig.")}
    return found


def test_smpl_rig_has_no_import_cycles_and_only_its_blender_modules_import_bpy():
    modules = {p.stem: p for p in SMPL_RIG.glob("*.py") if p.stem != "__init__"}
    graph = {name: _internal_imports(path) & set(modules) for name, path in modules.items()}
    for name, path in modules.items():
        imports_bpy = any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                          any((a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0] == "bpy"
                              for a in n.names)
                          for n in ast.walk(ast.parse(path.read_text())))
        # bpy only in the Blender-specific modules (blender_skinning reads Blender objects it is handed
        # without importing bpy itself)
        assert not imports_bpy or name.startswith("blender"), name
    state: dict[str, str] = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' → '.join(trail + [name])}"
        state[name] = "open"
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])
