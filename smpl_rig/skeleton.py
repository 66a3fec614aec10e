"""The SMPL kinematic tree: 24 joint names and parents, the one place they are written down.

Order and parents follow ``shared/docs/conventions.md``; ``PARENTS[i] < i`` for every joint but the root,
so a single forward sweep visits parents before children.
"""

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
NUM_JOINTS = 24

JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

# Children in joint order; the first child is the one a bone points at (spine3 → neck, pelvis → spine1).
_FIRST_CHILD_OVERRIDE = {0: 3, 9: 12}
CHILDREN = tuple(tuple(j for j, p in enumerate(PARENTS) if p == i) for i in range(NUM_JOINTS))

# Left/right partners, for mirroring poses (a joint without a partner maps to itself).
MIRROR = tuple(
    JOINT_INDEX[n.replace("left_", "right_")] if n.startswith("left_")
    else JOINT_INDEX[n.replace("right_", "left_")] if n.startswith("right_")
    else i
    for i, n in enumerate(JOINT_NAMES)
)


def primary_child(joint: int) -> int | None:
    """The child a bone of ``joint`` points to, or ``None`` for a leaf (head, feet, hands)."""
    if joint in _FIRST_CHILD_OVERRIDE:
        return _FIRST_CHILD_OVERRIDE[joint]
    children = CHILDREN[joint]
    return children[0] if children else None


def joint_index(name: str) -> int:
    """Index of a joint by its SMPL name; a clear ``KeyError`` for an unknown name."""
    try:
        return JOINT_INDEX[name]
    except KeyError:
        raise KeyError(f"unknown SMPL joint name {name!r}; expected one of {', '.join(JOINT_NAMES)}") from None


assert len(JOINT_NAMES) == len(PARENTS) == NUM_JOINTS
assert all(PARENTS[i] < i for i in range(1, NUM_JOINTS))
