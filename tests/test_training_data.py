"""Training data adapters on tiny synthetic files in each real public layout, templates and the mix sampler."""
from __future__ import annotations

import io
import json
import math
import pickle
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from smpl_rig.rotations import rotmat_x, rotmat_y, rotvec_to_rotmat
from training.data.amass import canonical_text_target, smplh_to_smpl_rotmat
from training.data.benchmarks import load_rpe, load_spg
from training.data.hmr import HMRNpz, crop_person
from training.data.llava_instruct import LlavaInstruct
from training.data.posescript import PoseScript
from training.data.webdataset_4dhumans import FourDHumansTars, load_pyd
from training.sampler import MixSampler
from training.chat_turns import IMAGE_QUESTIONS, POSE_ANSWERS, TEXT_QUESTIONS, pose_turns
from training.data.records import PoseRecord

UPRIGHT_CAMERA = np.diag([1.0, -1.0, -1.0])


def _rotvec_of(rotmat):
    from smpl_rig.rotations import rotmat_to_rotvec
    return rotmat_to_rotvec(rotmat)


# --- AMASS -----------------------------------------------------------------------------------------------

def test_smplh_hands_are_identity_and_body_joints_are_copied():
    rng = np.random.default_rng(0)
    poses = rng.normal(scale=0.4, size=(5, 156))
    out = smplh_to_smpl_rotmat(poses)
    assert out.shape == (5, 24, 3, 3)
    np.testing.assert_allclose(out[:, :22], rotvec_to_rotmat(poses[:, :66].reshape(5, 22, 3)), atol=1e-12)
    # SMPL-H joints 22/23 are fingers (non-zero here); SMPL's hand joints must NOT take them.
    np.testing.assert_allclose(out[:, 22:], np.broadcast_to(np.eye(3), (5, 2, 3, 3)), atol=0)
    with pytest.raises(ValueError, match="156"):
        smplh_to_smpl_rotmat(np.zeros((2, 72)))


@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.5, math.pi])
def test_canonical_target_removes_yaw_and_keeps_lean(yaw):
    lean = rotmat_x(0.3)
    pose = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    # Upright in AMASS's Z-up world = Rx(+90°) away from the SMPL frame, then some heading and a lean.
    pose[0] = rotmat_x(math.pi / 2) @ rotmat_y(yaw) @ lean
    target = canonical_text_target(pose)
    np.testing.assert_allclose(target[0], UPRIGHT_CAMERA @ lean, atol=1e-9)
    np.testing.assert_allclose(target[1:], pose[1:], atol=0)


# --- PoseScript ----------------------------------------------------------------------------------------

def _write_amass(root, relpath, frames=6, seed=0):
    rng = np.random.default_rng(seed)
    poses = rng.normal(scale=0.3, size=(frames, 156))
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, poses=poses, trans=np.zeros((frames, 3)), betas=np.zeros(16), gender=np.array("neutral"),
             mocap_framerate=np.array(120.0))
    return poses


def _write_posescript(tmp_path, v1=False):
    release, amass = tmp_path / "posescript_release", tmp_path / "amass"
    release.mkdir()
    poses = _write_amass(amass, "CMU/01/01_01_poses.npz")
    info = {str(i): ["AMASS", "CMU/01/01_01_poses.npz", i] for i in range(5)}
    human = {"0": "The person kneels on the left knee.", "2": ["Arms raised above the head."]}
    auto = {"0": ["auto zero a", "auto zero b"], "1": ["auto one a", "auto one b", "auto one c"], "2": ["auto two"],
            "4": ["auto four"]}
    suffix = "" if v1 else "_100k"
    (release / f"ids_2_dataset_sequence_and_frame_index{suffix}.json").write_text(json.dumps(info))
    if v1:
        (release / "human3893.json").write_text(json.dumps({k: v if isinstance(v, str) else v[0] for k, v in human.items()}))
        (release / "automatic_A.json").write_text(json.dumps({k: v[0] for k, v in auto.items()}))
        (release / "automatic_B.json").write_text(json.dumps({k: v[-1] for k, v in auto.items()}))
    else:
        (release / "posescript_human_6293.json").write_text(json.dumps(human))
        (release / "posescript_auto_100k.json").write_text(json.dumps(auto))
    for split, ids in (("train", [0, 1, 2, 3]), ("val", [4]), ("test", [])):
        (release / f"{split}_ids{suffix}.json").write_text(json.dumps(ids))
    return release, amass, poses


@pytest.mark.parametrize("v1", [False, True])
def test_posescript_prefers_human_captions_and_reads_amass_frames(tmp_path, v1):
    release, amass, poses = _write_posescript(tmp_path, v1=v1)
    data = PoseScript(release, amass, "train", seed=3)
    assert data.ids == ["0", "1", "2"]          # id 3 has no caption at all: skipped
    by_id = {data[i].meta["id"]: data[i] for i in range(len(data))}
    assert by_id["0"].caption == "The person kneels on the left knee." and by_id["0"].meta["caption_kind"] == "human"
    assert by_id["2"].caption == "Arms raised above the head."
    assert by_id["1"].meta["caption_kind"] == "auto" and by_id["1"].caption.startswith("auto one")
    for pose_id, record in by_id.items():
        expected = canonical_text_target(smplh_to_smpl_rotmat(poses[int(pose_id)]))
        np.testing.assert_allclose(record.pose_rotmat, expected, atol=1e-6)
        np.testing.assert_allclose(record.pose_rotmat[22:], np.broadcast_to(np.eye(3), (2, 3, 3)), atol=0)
    assert data[1].caption == data[1].caption       # same caption for the same index: reproducible
    assert len(PoseScript(release, amass, "val")) == 1


def test_posescript_automatic_captions_are_redrawn_each_time_a_pose_is_drawn(tmp_path):
    from training.sources import MixedSamples

    release, amass, _ = _write_posescript(tmp_path)
    data = PoseScript(release, amass, "train", seed=3)
    index = data.ids.index("1")
    assert data[index].meta["caption_choices"] == ["auto one a", "auto one b", "auto one c"]
    assert "caption_choices" not in data[data.ids.index("0")].meta          # human captions win, always

    class Captions:                                   # stands in for the chat encoder: returns the caption
        def encode(self, record, rng, earlier):
            return record.caption

    samples = MixedSamples({"text": data}, Captions(), seed=0)
    drawn = [samples[("text", index, batch_no, 0)] for batch_no in range(30)]
    assert set(drawn) == {"auto one a", "auto one b", "auto one c"}
    assert drawn == [samples[("text", index, batch_no, 0)] for batch_no in range(30)]   # a resumed run draws alike


def test_text_targets_follow_posescripts_normalisation_for_leaning_poses():
    from training.data.amass import posescript_normalize
    from smpl_rig.frames import amass_to_smpl_orient, canonical_camera_orient

    def rz(a):
        return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])

    # PoseScript: orientation = Rz(θz)·Ry(θy)·Rx(θx) in AMASS's Z-up frame; θz (the heading) is dropped.
    for heading, side, forward in [(0.4, 0.2, 1.9), (-2.0, 0.6, 1.2), (2.9, -0.5, 2.4)]:
        orient = rz(heading) @ rotmat_y(side) @ rotmat_x(forward)
        np.testing.assert_allclose(posescript_normalize(orient), rotmat_y(side) @ rotmat_x(forward), atol=1e-12)
        pose = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
        pose[0] = orient
        expected = rotmat_x(math.pi) @ rotmat_x(-math.pi / 2) @ rotmat_y(side) @ rotmat_x(forward)
        np.testing.assert_allclose(canonical_text_target(pose)[0], expected, atol=1e-12)
    # The conventions page's heading removal agrees for upright bodies, not for a body leaning sideways.
    leaning = rz(0.4) @ rotmat_y(0.6) @ rotmat_x(1.2)
    other = canonical_camera_orient(amass_to_smpl_orient(leaning))
    ours = canonical_text_target(np.broadcast_to(leaning, (24, 3, 3)).copy())[0]
    assert np.degrees(np.arccos((np.trace(other @ ours.T) - 1) / 2)) > 1.0


def test_posescript_missing_sequence_is_a_clear_error(tmp_path):
    release, amass, _ = _write_posescript(tmp_path)
    (amass / "CMU/01/01_01_poses.npz").unlink()
    data = PoseScript(release, amass, "train")
    with pytest.raises(FileNotFoundError, match="01_01_poses"):
        data[0]


# --- HMR npz -------------------------------------------------------------------------------------------

def _gradient_image(w=120, h=90):
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)
    return Image.fromarray(arr)


def test_crop_person_centres_the_box_and_pads_black():
    image = _gradient_image()
    crop = crop_person(image, center=(100, 20), box_size=60)
    arr, src = np.asarray(crop), np.asarray(image)
    assert crop.size == (60, 60)
    np.testing.assert_array_equal(arr[30, 30], src[20, 100])            # box centre ↔ centre pixel
    np.testing.assert_array_equal(arr[0, 0], [0, 0, 0])                 # above the image: padding
    np.testing.assert_array_equal(arr[30, 59], [0, 0, 0])               # right of the image: padding
    assert crop_person(image, (60, 45), 50, out_size=32).size == (32, 32)


@pytest.mark.parametrize("layout", ["center_scale", "bbox"])
def test_hmr_npz_reads_rows_crops_and_poses(tmp_path, layout):
    (tmp_path / "images").mkdir()
    _gradient_image().save(tmp_path / "images" / "a.png")
    rng = np.random.default_rng(1)
    pose = rng.normal(scale=0.3, size=(3, 72))
    fields = {"imgname": np.array(["images/a.png"] * 3), "pose": pose, "betas": np.zeros((3, 10)),
              "has_smpl": np.array([1, 0, 1])}
    if layout == "center_scale":
        fields |= {"center": np.array([[60, 45]] * 3, float), "scale": np.array([0.25] * 3)}
    else:
        fields |= {"bbox": np.array([[35, 20, 85, 70]] * 3, float)}
    np.savez(tmp_path / "h36m_train.npz", **fields)
    data = HMRNpz(tmp_path / "h36m_train.npz", tmp_path, crop_size=40)
    assert len(data) == 2                           # the row without SMPL is skipped
    record = data[1]
    assert record.kind == "image" and record.meta["row"] == 2
    np.testing.assert_allclose(record.pose_rotmat, rotvec_to_rotmat(pose[2].reshape(24, 3)), atol=1e-6)
    crop = record.load_image()
    assert crop.size == (40, 40)
    expected = crop_person(_gradient_image(), (60, 45), 50, 40)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(expected))


def test_hmr_npz_rejects_wrong_pose_width(tmp_path):
    np.savez(tmp_path / "bad.npz", imgname=np.array(["a.png"]), pose=np.zeros((1, 69)),
             center=np.zeros((1, 2)), scale=np.ones(1))
    with pytest.raises(ValueError, match="72"):
        HMRNpz(tmp_path / "bad.npz", tmp_path)


# --- 4D-Humans tars ------------------------------------------------------------------------------------

def _add(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def test_4dhumans_tar_reads_every_person_and_crops(tmp_path):
    rng = np.random.default_rng(2)
    people = [{"center": np.array([60.0, 45.0]), "scale": np.array([0.25, 0.2]),
               "body_pose": rng.normal(scale=0.3, size=72).astype(np.float32), "betas": np.zeros(10, np.float32),
               "has_body_pose": np.array(1.0, np.float32), "keypoints_2d": np.zeros((44, 3), np.float32)},
              {"center": np.array([30.0, 30.0]), "scale": np.array([0.1, 0.1]),
               "body_pose": rng.normal(scale=0.3, size=72), "betas": np.zeros(10),
               "has_body_pose": np.array(0.0)}]          # no pose: skipped
    png = io.BytesIO()
    _gradient_image().save(png, format="PNG")
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        _add(tar, "coco/000017.png", png.getvalue())
        _add(tar, "coco/000017.data.pyd", pickle.dumps(people))
        _add(tar, "coco/000018.png", png.getvalue())
        _add(tar, "coco/000018.data.json", json.dumps([{"center": [40, 40], "scale": 0.3,
                                                         "body_pose": [0.1] * 72}]).encode())
    data = FourDHumansTars([tmp_path / "shard-000000.tar"], crop_size=40)
    assert len(data) == 2
    # The index holds flat arrays (pose, box, place in the shard), not the annotation dicts and keypoints.
    assert data.pose.shape == (2, 72) and data.pose.dtype == np.float32 and data.members == ["coco/000017.png", "coco/000018.png"]
    first = data[0]
    np.testing.assert_allclose(first.pose_rotmat, rotvec_to_rotmat(people[0]["body_pose"].reshape(24, 3).astype(np.float64)), atol=1e-6)
    # A wide 50 × 40 px box: 4D-Humans widens it to its 192 : 256 aspect first, so the square is 50 × 256 / 192.
    expected = crop_person(_gradient_image(), (60, 45), 50 * 256 / 192, 40)
    np.testing.assert_array_equal(np.asarray(first.load_image()), np.asarray(expected))
    assert data[1].load_image().size == (40, 40)


def test_box_side_is_4d_humans_crop():
    from training.data.hmr import box_side

    assert box_side(1.5) == pytest.approx(300.0)                     # SPIN: one scale, side = 200 × scale
    assert box_side([1.44, 1.0]) == pytest.approx(384.0)              # wide 288 × 200 px: 288 × 256 / 192
    assert box_side([0.75, 1.5]) == pytest.approx(300.0)              # tall 150 × 300 px: already narrower
    assert box_side([1.2, 1.6]) == pytest.approx(320.0)               # exactly 192 : 256


def test_hmr_npz_reads_4d_humans_names_and_never_unpickles(tmp_path):
    rng = np.random.default_rng(4)
    _gradient_image().save(tmp_path / "a.png")
    pose = rng.normal(scale=0.3, size=(3, 72))
    extra = np.empty(3, dtype=object)
    extra[:] = [{"note": "pickled"}] * 3                               # 4D-Humans' extra_info: an object array
    np.savez(tmp_path / "hmr2.npz", imgname=np.array(["a.png"] * 3), center=np.full((3, 2), 50.0),
             scale=np.array([[0.5, 0.4]] * 3), body_pose=pose, has_body_pose=np.array([1.0, 0.0, 1.0]),
             betas=np.zeros((3, 10)), extra_info=extra)
    data = HMRNpz(tmp_path / "hmr2.npz", tmp_path)
    assert len(data) == 2                                              # the row without a body pose is left out
    np.testing.assert_allclose(data[1].pose_rotmat, rotvec_to_rotmat(pose[2].reshape(24, 3)), atol=1e-6)
    assert data[0].load_image().size == (round(100 * 256 / 192),) * 2
    np.savez(tmp_path / "split.npz", imgname=np.array(["a.png"]), center=np.full((1, 2), 50.0), scale=np.ones(1),
             global_orient=pose[:1, :3], body_pose=pose[:1, 3:])
    np.testing.assert_allclose(HMRNpz(tmp_path / "split.npz", tmp_path)[0].pose_rotmat,
                               rotvec_to_rotmat(pose[0].reshape(24, 3)), atol=1e-6)


def test_hmr_npz_without_smpl_says_why(tmp_path):
    np.savez(tmp_path / "h36m_train.npz", imgname=np.array(["a.png"]), center=np.zeros((1, 2)), scale=np.ones(1),
             S=np.zeros((1, 24, 4)), part=np.zeros((1, 24, 3)))
    with pytest.raises(ValueError, match="h36m_train.npz"):
        HMRNpz(tmp_path / "h36m_train.npz", tmp_path)


def test_eft_json_reads_rotation_matrices_and_boxes(tmp_path):
    from training.data.eft import EFTJson

    rng = np.random.default_rng(6)
    (tmp_path / "train2014").mkdir()
    _gradient_image().save(tmp_path / "train2014" / "COCO_train2014_000000000036.jpg")
    rotmats = rotvec_to_rotmat(rng.normal(scale=0.4, size=(2, 24, 3)))
    fits = [{"imageName": "COCO_train2014_000000000036.jpg", "bbox_center": [60.0, 45.0], "bbox_scale": 0.3,
             "parm_pose": r.tolist(), "parm_shape": [0.0] * 10, "parm_cam": [1.0, 0.0, 0.0]} for r in rotmats]
    fits.append({"imageName": "COCO_train2014_000000000036.jpg", "bbox_center": [1, 1], "bbox_scale": 1})
    (tmp_path / "COCO2014-All-ver01.json").write_text(json.dumps({"ver": 0.1, "data": fits}))
    data = EFTJson(tmp_path / "COCO2014-All-ver01.json", tmp_path / "train2014")
    assert len(data) == 2                                              # the fit without parm_pose is skipped
    np.testing.assert_allclose(data[1].pose_rotmat, rotmats[1], atol=1e-6)
    with Image.open(tmp_path / "train2014" / "COCO_train2014_000000000036.jpg") as saved:
        expected = crop_person(saved, (60, 45), 60)                    # bbox_scale × 200 around bbox_center
    np.testing.assert_array_equal(np.asarray(data[0].load_image()), np.asarray(expected))


def test_pyd_loader_refuses_anything_but_arrays():
    assert load_pyd(pickle.dumps([{"a": np.arange(3)}]))[0]["a"].tolist() == [0, 1, 2]
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_pyd(pickle.dumps(Counter("abc")))


# --- LLaVA instructions ----------------------------------------------------------------------------------

def test_llava_instruct_reads_the_mix_layout(tmp_path):
    (tmp_path / "coco").mkdir()
    _gradient_image().save(tmp_path / "coco" / "1.jpg")
    entries = [
        {"id": "1", "image": "coco/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A gradient."},
            {"from": "human", "value": "Which colours?"}, {"from": "gpt", "value": "Red and green."}]},
        {"id": "2", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "Hi!"}]},
        {"id": "3", "conversations": [{"from": "gpt", "value": "answer first"}, {"from": "human", "value": "?"}]},
        {"id": "4", "image": "coco/1.jpg", "conversations": [
            {"from": "human", "value": "No placeholder here"}, {"from": "gpt", "value": "ok"}]},
        {"id": "5", "image": "coco/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nLook <image> here"}, {"from": "gpt", "value": "An <image> tag"},
            {"from": "human", "value": "<image> again"}, {"from": "gpt", "value": "ok"}]},
    ]
    (tmp_path / "mix.json").write_text(json.dumps(entries))
    data = LlavaInstruct(tmp_path / "mix.json", tmp_path)
    assert len(data) == 4                                        # the malformed chat is dropped
    first = data[0]
    assert first.turns == [("user", "<image>\nWhat is shown?"), ("assistant", "A gradient."),
                           ("user", "Which colours?"), ("assistant", "Red and green.")]
    assert first.load_image().size == (120, 90)
    assert data[1].load_image is None and data[1].turns[0] == ("user", "Say hi")
    assert data[2].turns[0][1].startswith("<image>\n")         # placeholder added in front when missing
    many = data[3].turns                                         # one image: exactly one placeholder kept
    assert sum(t.count("<image>") for _, t in many) == 1 and many[0][1].startswith("<image>\n")
    assert many[1] == ("assistant", "An image tag")
    assert many[0][1] == "<image>\nLook  here"                       # moved to the front, as LLaVA does
    assert many[2] == ("user", "again")


def test_llava_instruct_from_its_line_index_reads_the_same_chats_without_holding_the_file(tmp_path, monkeypatch):
    (tmp_path / "coco").mkdir()
    _gradient_image().save(tmp_path / "coco" / "1.jpg")
    entries = [{"id": str(i), **({"image": "coco/1.jpg"} if i % 2 else {}), "conversations": [
                   {"from": "human", "value": ("<image>\n" if i % 2 else "") + f"Question {i} é?"},
                   {"from": "gpt", "value": f"Answer {i}."}]} for i in range(7)]
    entries.insert(3, {"id": "bad", "conversations": [{"from": "gpt", "value": "answer first"}]})
    (tmp_path / "mix.json").write_text(json.dumps(entries))
    plain = LlavaInstruct(tmp_path / "mix.json", tmp_path)
    indexed = LlavaInstruct(tmp_path / "mix.json", tmp_path, cache_dir=tmp_path / "cache")
    assert indexed.entries is None and len(indexed) == len(plain) == 7
    for a, b in zip(plain, indexed):
        assert a.turns == b.turns and a.meta == b.meta and (a.load_image is None) == (b.load_image is None)
    # A second reader (another process, a resumed run) uses the index: the JSON is not parsed again.
    monkeypatch.setattr(json, "load", lambda *a, **k: pytest.fail("the JSON was parsed again"))
    again = LlavaInstruct(tmp_path / "mix.json", tmp_path, cache_dir=tmp_path / "cache", limit=5)
    assert [r.meta["id"] for r in again] == ["0", "1", "2", "3", "4"]
    assert again.keep_text_only() == (5, 3) and [r.meta["id"] for r in again] == ["0", "2", "4"]
    assert len(list((tmp_path / "cache").iterdir())) == 2                # the lines and their index, no temp files


# --- benchmarks ----------------------------------------------------------------------------------------

def test_benchmark_jsonl_files(tmp_path):
    rng = np.random.default_rng(3)
    pose = rng.normal(scale=0.3, size=(24, 3))
    (tmp_path / "spg.jsonl").write_text(json.dumps({"id": "s1", "question": "He is exhausted.", "pose": pose.tolist(),
                                                    "source_id": "7"}) + "\n\n")
    spg = load_spg(tmp_path / "spg.jsonl")
    assert spg[0].caption == "He is exhausted." and spg[0].meta["source_id"] == "7"
    np.testing.assert_allclose(spg[0].pose_rotmat, rotvec_to_rotmat(pose), atol=1e-6)
    _gradient_image().save(tmp_path / "scene.png")
    (tmp_path / "rpe.jsonl").write_text(json.dumps({"id": "r1", "image": "scene.png", "description": "the man on the left",
                                                    "pose": pose.reshape(-1).tolist()}) + "\n")
    rpe = load_rpe(tmp_path / "rpe.jsonl", tmp_path)
    assert rpe[0].kind == "image" and rpe[0].caption == "the man on the left"
    assert rpe[0].load_image().size == (120, 90)                 # the whole scene, not a crop
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "x", "question": "?"}) + "\n")
    with pytest.raises(ValueError, match="pose"):
        load_spg(tmp_path / "bad.jsonl")


# --- templates -----------------------------------------------------------------------------------------

def test_templates_counts_and_pose_token():
    assert len(IMAGE_QUESTIONS) >= 5 and len(TEXT_QUESTIONS) >= 9 and len(POSE_ANSWERS) >= 8
    assert all(a.count("<POSE>") == 1 for a in POSE_ANSWERS)
    assert all("{description}" in q for q in TEXT_QUESTIONS)
    rng = random.Random(0)
    text = pose_turns(PoseRecord(kind="text", pose_rotmat=np.zeros((24, 3, 3)), caption="arms up"), rng)
    assert "arms up." in text[0][1] and text[1][1].count("<POSE>") == 1
    image = pose_turns(PoseRecord(kind="image", pose_rotmat=np.zeros((24, 3, 3))), rng)
    assert image[0][1].startswith("<image>\n") and image[0][1][len("<image>\n"):] in IMAGE_QUESTIONS


# --- sampler -------------------------------------------------------------------------------------------

def test_sampler_holds_the_2_1_1_mix_in_every_batch():
    sampler = MixSampler({"image": 50, "text": 30, "instruction": 7}, {"image": 2, "text": 1, "instruction": 1},
                         batch_size=16, seed=0)
    for _ in range(1000):
        counts = Counter(name for name, _ in sampler.next_batch())
        assert counts == {"image": 8, "text": 4, "instruction": 4}


def test_sampler_ratio_holds_on_average_when_the_batch_does_not_divide():
    sampler = MixSampler({"image": 50, "text": 30, "instruction": 7}, {"image": 2, "text": 1, "instruction": 1},
                         batch_size=3, seed=1)
    counts = Counter(name for _ in range(1000) for name, _ in sampler.next_batch())
    total = sum(counts.values())
    assert total == 3000
    assert abs(counts["image"] / total - 0.5) < 0.03
    assert abs(counts["text"] / total - 0.25) < 0.03 and abs(counts["instruction"] / total - 0.25) < 0.03


def test_sampler_visits_every_sample_each_epoch_and_drops_missing_sources(caplog):
    sampler = MixSampler({"text": 12, "image": 0}, {"image": 2, "text": 1, "instruction": 1}, batch_size=4, seed=0)
    assert "dropped" in caplog.text
    seen = [i for _ in range(3) for _, i in sampler.next_batch()]
    assert sorted(seen) == list(range(12))


def test_sampler_state_round_trip_continues_identically():
    make = lambda: MixSampler({"image": 9, "text": 5, "instruction": 4}, {"image": 2, "text": 1, "instruction": 1},  # noqa: E731
                              batch_size=6, seed=5)
    a = make()
    for _ in range(7):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))      # must survive JSON (stored in checkpoints)
    b = make()
    b.load_state_dict(state)
    assert [a.next_batch() for _ in range(20)] == [b.next_batch() for _ in range(20)]


# --- the project's own corpus --------------------------------------------------------------------------

def test_corpus_records_give_text_and_image_targets(tmp_path):
    from training.corpus.build import build_corpus, load_corpus
    from training.data.corpus import CorpusRecords

    build_corpus(tmp_path / "corpus", n=24, seed=0, images=6, body="capsules")
    samples = {s.index: s for s in load_corpus(tmp_path / "corpus", "all")}
    text = CorpusRecords(tmp_path / "corpus", "train", "text")
    assert len(text) > 0
    for i in range(len(text)):
        record = text[i]
        sample = samples[record.meta["index"]]
        assert record.caption in sample.captions
        np.testing.assert_allclose(record.pose_rotmat, sample.text_target_rotmat(), atol=1e-6)
    images = CorpusRecords(tmp_path / "corpus", "train", "image")
    for i in range(len(images)):
        record = images[i]
        np.testing.assert_allclose(record.pose_rotmat, samples[record.meta["index"]].image_target_rotmat(), atol=1e-6)
        assert record.load_image().mode == "RGB"
    with pytest.raises(ValueError, match="split"):
        CorpusRecords(tmp_path / "corpus", "dev", "text")
    with pytest.raises(ValueError, match="captions"):
        CorpusRecords(tmp_path / "corpus", "train", "text", captions="some")


def test_corpus_text_records_cover_every_caption(tmp_path):
    # "all": each (pose, caption) pair once, so no description or phrasing is left out of training;
    # "first": the complete description of each pose; "one": one caption per pose, fixed by the seed.
    from training.corpus.build import build_corpus, load_corpus
    from training.data.corpus import CorpusRecords

    build_corpus(tmp_path / "corpus", n=24, seed=0, images=0, body="capsules")
    train = [s for s in load_corpus(tmp_path / "corpus", "train") if s.captions]
    every = CorpusRecords(tmp_path / "corpus", "train", "text")
    seen = sorted((every[i].meta["index"], every[i].caption) for i in range(len(every)))
    assert seen == sorted((s.index, c) for s in train for c in s.captions)
    first = CorpusRecords(tmp_path / "corpus", "train", "text", captions="first")
    assert [first[i].caption for i in range(len(first))] == [s.captions[0] for s in train]
    one = CorpusRecords(tmp_path / "corpus", "train", "text", captions="one", seed=3)
    assert len(one) == len(train)
    assert [one[i].caption for i in range(len(one))] == [
        CorpusRecords(tmp_path / "corpus", "train", "text", captions="one", seed=3)[i].caption for i in range(len(one))]
