"""Image → pose records from 4D-Humans (HMR 2.0) webdataset tar shards, read with ``tarfile``.

Layout: each sample is a group of tar members sharing a key (the name up to the first dot of the file
name): ``{key}.jpg`` (the image) and ``{key}.data.pyd`` (a pickled list with one dict per person:
``center`` (2,), ``scale`` (2,) or (), ``body_pose`` (72,) axis-angle with the global orientation first,
camera frame, ``betas`` (10,), ``has_body_pose``, keypoints ...). A ``{key}.data.json`` member with the
same list is accepted as a pickle-free alternative.

``.pyd`` members are unpickled with an allow-list: only numpy arrays, numpy scalars and Python built-in
containers can be rebuilt; anything else in the stream raises instead of running (the project never
unpickles third-party files freely).
"""
from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np

from smpl_rig.rotations import rotvec_to_rotmat

from .hmr import box_side, crop_person
from .records import PoseRecord, check_rotmat

IMAGE_EXTS = ("jpg", "jpeg", "png")

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("collections", "OrderedDict"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .pyd member "
                                     "(only numpy arrays and plain containers are accepted)")


def load_pyd(payload: bytes):
    """Unpickle a 4D-Humans ``.data.pyd`` member with the numpy-only allow-list."""
    return _ArraysOnlyUnpickler(io.BytesIO(payload)).load()


def split_member_name(name: str) -> tuple[str, str]:
    """webdataset's key/extension split: the extension starts at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


class FourDHumansTars:
    """Every person with a body pose in a set of 4D-Humans tar shards. ``self[i]`` → ``PoseRecord``.

    The shards are indexed once; images are read lazily. The index keeps per person only what a sample
    needs, in flat arrays (the pose as 72 float32, the box, the image's place in its shard: ≈ 0.35 KB),
    not the annotation dicts with their keypoints (≈ 4.3 KB a person, 4.3 GB per million people).
    """

    def __init__(self, tar_paths, *, crop_size: int | None = None, limit: int = 0):
        self.tar_paths = [Path(p) for p in tar_paths]
        self.crop_size = crop_size
        self.members: list[str] = []          # image member names, one per image (people share them)
        rows: list[tuple] = []                # (shard, member index, offset, size, pose (72,), center (2,), side)
        for shard, path in enumerate(self.tar_paths):
            self._index(shard, path, rows)
            if limit and len(rows) >= limit:
                del rows[limit:]
                break
        self.shard = np.array([r[0] for r in rows], dtype=np.int32)
        self.member = np.array([r[1] for r in rows], dtype=np.int64)
        self.offset = np.array([r[2] for r in rows], dtype=np.int64)
        self.size = np.array([r[3] for r in rows], dtype=np.int64)
        self.pose = np.array([r[4] for r in rows], dtype=np.float32).reshape(-1, 72)
        self.center = np.array([r[5] for r in rows], dtype=np.float32).reshape(-1, 2)
        self.side = np.array([r[6] for r in rows], dtype=np.float32)

    def _index(self, shard: int, path: Path, rows: list) -> None:
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    key, ext = split_member_name(member.name)
                    groups.setdefault(key, {})[ext] = member
            for key, members in groups.items():
                image = next((members[e] for e in IMAGE_EXTS if e in members), None)
                if image is None:
                    continue
                if "data.pyd" in members:
                    people = load_pyd(tar.extractfile(members["data.pyd"]).read())
                elif "data.json" in members:
                    people = json.loads(tar.extractfile(members["data.json"]).read())
                else:
                    continue
                if isinstance(people, dict):
                    people = [people]
                member_index = None
                for person in people:
                    if "body_pose" not in person or not bool(np.asarray(person.get("has_body_pose", 1)).any()):
                        continue
                    if member_index is None:
                        member_index = len(self.members)
                        self.members.append(image.name)
                    pose = np.asarray(person["body_pose"], dtype=np.float64).reshape(-1)
                    if pose.size == 69 and "global_orient" in person:     # split storage: body joints only
                        pose = np.concatenate([np.asarray(person["global_orient"], dtype=np.float64).reshape(3), pose])
                    if pose.size != 72:
                        raise ValueError(f"{path}:{image.name}: body_pose has {pose.size} numbers, expected 72")
                    rows.append((shard, member_index, image.offset_data, image.size, pose,
                                 np.asarray(person["center"], dtype=np.float64).reshape(2),
                                 box_side(person["scale"])))      # 4D-Humans' own crop: (w, h) widened to 192 : 256

    def __len__(self) -> int:
        return len(self.pose)

    def __getitem__(self, index: int) -> PoseRecord:
        from PIL import Image

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        shard, member = int(self.shard[index]), self.members[int(self.member[index])]
        offset, size = int(self.offset[index]), int(self.size[index])
        pose = self.pose[index].astype(np.float64)
        center, side = self.center[index].astype(np.float64), float(self.side[index])
        tar_path = self.tar_paths[shard]

        def load_image():
            if tar_path.suffix == ".tar":     # uncompressed shard: seek straight to the member's bytes
                with open(tar_path, "rb") as f:
                    f.seek(offset)
                    payload = f.read(size)
            else:
                with tarfile.open(tar_path) as tar:
                    payload = tar.extractfile(member).read()
            with Image.open(io.BytesIO(payload)) as im:
                return crop_person(im, center, side, self.crop_size)

        rotmat = check_rotmat(rotvec_to_rotmat(pose.reshape(24, 3)), f"{tar_path.name}:{member}")
        return PoseRecord(kind="image", pose_rotmat=rotmat, load_image=load_image,
                          meta={"source": tar_path.stem, "member": member})
