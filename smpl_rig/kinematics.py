"""Forward kinematics and the transforms linear blend skinning needs, numpy or torch.

Written as numbered steps, in the manner of smplx's ``lbs.py``; every tensor carries its shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import namespace
from .skeleton import NUM_JOINTS, PARENTS


@dataclass
class ForwardKinematics:
    """Result of ``forward_kinematics``.

    joints:     (..., 24, 3) posed joint positions.
    rotations:  (..., 24, 3, 3) world (model-frame) rotation of each joint.
    transforms: (..., 24, 4, 4) world transform of each joint frame (rotation, joint position).
    skinning:   (..., 24, 4, 4) rest-to-posed transforms for linear blend skinning (the joint frame
                transform with the rest joint position taken out).
    """
    joints: object
    rotations: object
    transforms: object
    skinning: object


def forward_kinematics(rest_joints, rotmats, translation=None) -> ForwardKinematics:
    """Pose a skeleton.

    rest_joints: (..., 24, 3) rest (T-pose) joint positions, SMPL frame.
    rotmats:     (..., 24, 3, 3) local joint rotations; joint 0 is the global orientation (about J0).
    translation: optional (..., 3), added to every joint (SMPL's ``transl``).
    """
    xp = namespace(rotmats)
    stack, concat = xp.stack, xp.concat
    if tuple(rest_joints.shape[-2:]) != (NUM_JOINTS, 3) or tuple(rotmats.shape[-3:]) != (NUM_JOINTS, 3, 3):
        raise ValueError(f"expected rest joints (..., 24, 3) and rotations (..., 24, 3, 3), got "
                         f"{tuple(rest_joints.shape)} and {tuple(rotmats.shape)}")
    batch = tuple(np.broadcast_shapes(tuple(rest_joints.shape[:-2]), tuple(rotmats.shape[:-3])))
    rest_joints = xp.expand(rest_joints, batch + (NUM_JOINTS, 3))
    rotmats = xp.expand(rotmats, batch + (NUM_JOINTS, 3, 3))

    # 1. Offsets of each joint from its parent in the rest pose (the root's is J0 itself): (..., 24, 3)
    offsets = concat([rest_joints[..., :1, :], rest_joints[..., 1:, :] - rest_joints[..., list(PARENTS[1:]), :]], -2)

    # 2. Chain the local rotations from the root outward: world rotation and position per joint.
    world_rot = [rotmats[..., 0, :, :]]                                   # (..., 3, 3)
    world_pos = [offsets[..., 0, :] + (translation if translation is not None else 0)]  # (..., 3)
    for i in range(1, NUM_JOINTS):
        p = PARENTS[i]
        world_rot.append(world_rot[p] @ rotmats[..., i, :, :])
        world_pos.append(world_pos[p] + (world_rot[p] @ offsets[..., i, :, None])[..., 0])
    rotations = stack(world_rot, -3)                     # (..., 24, 3, 3)
    joints = stack(world_pos, -2)                        # (..., 24, 3)

    # 3. 4×4 joint frames, and the skinning transforms that first move a rest vertex to the joint origin.
    bottom = rotations[..., :1, :] * 0                                    # (..., 24, 1, 3)
    homog = concat([bottom, bottom[..., :1] * 0 + 1], -1)                 # (..., 24, 1, 4)
    transforms = concat([concat([rotations, joints[..., None]], -1), homog], -2)
    skin_t = joints - (rotations @ rest_joints[..., None])[..., 0]
    skinning = concat([concat([rotations, skin_t[..., None]], -1), homog], -2)
    return ForwardKinematics(joints=joints, rotations=rotations, transforms=transforms, skinning=skinning)
