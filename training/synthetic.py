"""A tiny synthetic dataset in the REAL public layouts (PoseScript release + AMASS npz, HMR-style npz with
images, LLaVA mix JSON, SPG/RPE JSONL), so the whole pipeline runs offline without licensed data: smoke
runs (training/configs/smoke_tiny.yaml) and tests. Random poses, captions built from a small word list.

    python -m training.synthetic --out runs/synthetic-data --text 32 --images 16 --instructions 8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from smpl_rig.rotations import rotmat_to_rotvec

from .data.amass import canonical_text_target, smplh_to_smpl_rotmat

WORDS = ("the person raises left right arm leg knee bends forward backward head turns torso leans "
         "sits stands kneels crouches walks runs jumps waves hand elbow wrist hip shoulder up down "
         "high low side wide crossed straight slightly fully twisted").split()


def _caption(rng: np.random.Generator, words: tuple[int, int] = (6, 10)) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(*words)))).capitalize() + "."


def write_synthetic_dataset(out: str | Path, *, text: int = 32, images: int = 16, instructions: int = 8,
                            seed: int = 0, pose_scale: float = 0.4, image_size: int = 48,
                            caption_words: tuple[int, int] = (6, 10)) -> dict:
    """Write the files; returns the config paths ({"posescript_dir", "amass_dir", "hmr_npz", ...})."""
    from PIL import Image

    out = Path(out)
    rng = np.random.default_rng(seed)
    release, amass = out / "posescript_release", out / "amass"
    release.mkdir(parents=True, exist_ok=True)
    seq = "SYN/seq_00_poses.npz"
    (amass / seq).parent.mkdir(parents=True, exist_ok=True)
    frames = text + 8
    poses = rng.normal(scale=pose_scale, size=(frames, 156))
    np.savez(amass / seq, poses=poses, trans=np.zeros((frames, 3)), betas=np.zeros(16),
             gender=np.array("neutral"), mocap_framerate=np.array(30.0))
    ids = list(range(frames))
    (release / "ids_2_dataset_sequence_and_frame_index_100k.json").write_text(
        json.dumps({str(i): ["AMASS", seq, i] for i in ids}))
    captions = {str(i): _caption(rng, caption_words) for i in ids}
    human = {k: v for k, v in captions.items() if int(k) % 2 == 0}
    auto = {k: [v, v.lower()] for k, v in captions.items() if int(k) % 2 == 1}
    (release / "posescript_human_6293.json").write_text(json.dumps(human))
    (release / "posescript_auto_100k.json").write_text(json.dumps(auto))
    (release / "train_ids_100k.json").write_text(json.dumps(ids[:text]))
    (release / "val_ids_100k.json").write_text(json.dumps(ids[text:text + 4]))
    (release / "test_ids_100k.json").write_text(json.dumps(ids[text + 4:]))

    image_dir = out / "images"
    image_dir.mkdir(exist_ok=True)
    names = []
    for i in range(max(images, 1)):
        pixels = rng.integers(0, 255, size=(image_size, image_size + 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{i:05d}.png")
        names.append(f"images/{i:05d}.png")
    hmr_pose = rng.normal(scale=pose_scale, size=(images, 72))
    np.savez(out / "hmr_train.npz", imgname=np.array(names[:images]),
             center=np.full((images, 2), [image_size / 2 + 8, image_size / 2]),
             scale=np.full(images, image_size / 200.0), pose=hmr_pose, betas=np.zeros((images, 10)))

    chats = []
    for i in range(instructions):
        entry = {"id": str(i), "conversations": [
            {"from": "human", "value": ("<image>\n" if i % 2 == 0 else "") + "What do you see here?"},
            {"from": "gpt", "value": _caption(rng)}]}
        if i % 2 == 0:
            entry["image"] = names[i % len(names)]
        chats.append(entry)

    test_targets = canonical_text_target(smplh_to_smpl_rotmat(poses[text + 4:]))
    with open(out / "spg.jsonl", "w") as f:
        for k, target in enumerate(test_targets):
            f.write(json.dumps({"id": f"spg-{k}", "question": "Someone is " + _caption(rng).lower(),
                                "pose": rotmat_to_rotvec(target).tolist()}) + "\n")
    with open(out / "rpe.jsonl", "w") as f:
        for k in range(min(images, 4)):
            f.write(json.dumps({"id": f"rpe-{k}", "image": names[k], "description": "The person in the middle.",
                                "pose": hmr_pose[k].tolist()}) + "\n")
    # The LLaVA file is written last on purpose: train.use_synthetic_data takes it as "the set is complete".
    (out / "llava_mix.json").write_text(json.dumps(chats))
    return synthetic_paths(out)


def synthetic_paths(out: str | Path) -> dict:
    """Config paths of a synthetic dataset folder (data.* and eval.* keys)."""
    out = Path(out)
    return {"posescript_dir": str(out / "posescript_release"), "amass_dir": str(out / "amass"),
            "hmr_npz": [str(out / "hmr_train.npz")], "hmr_image_root": str(out),
            "llava_json": str(out / "llava_mix.json"), "llava_image_root": str(out),
            "spg_jsonl": str(out / "spg.jsonl"), "rpe_jsonl": str(out / "rpe.jsonl"), "rpe_image_root": str(out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny synthetic dataset in the real layouts.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--text", type=int, default=32)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--instructions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_synthetic_dataset(args.out, text=args.text, images=args.images, instructions=args.instructions,
                                    seed=args.seed)
    print(json.dumps(paths, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
