"""smpl_rig: the SMPL skeleton, rotation conventions, frames, forward kinematics, body models, metrics,
the bone formula (``bones``), retargeting onto any humanoid rig (``rig_names``, ``retarget``), and, in
``smpl_rig.blender*`` (the only modules that import bpy), the mapping onto Blender armatures.

Everything here but ``smpl_rig.blender*`` needs numpy alone; torch tensors are accepted where noted
(``smpl_rig.arrays`` is the one numpy/torch shim).
"""
from . import frames, kinematics, metrics, rotations, skeleton  # noqa: F401
from .skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS  # noqa: F401
