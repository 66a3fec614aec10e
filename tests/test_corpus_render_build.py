"""Renderer (silhouette vs projected joints, camera-frame target, z-buffer), splits, and the corpus
writer/reader round trip."""
import json

import numpy as np
import pytest
from PIL import Image

from smpl_rig import rotations as rot
from smpl_rig.skeleton import JOINT_INDEX as J
from training.corpus import build, render
from training.corpus import generator as g
from training.corpus.splits import assign_splits, split_id

UPRIGHT_CAMERA = np.diag([1.0, -1.0, -1.0])


def bbox(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silhouette_bounding_box_matches_the_projected_joints(seed):
    gen, rng = g.PoseGenerator(seed), np.random.default_rng(seed)
    for _ in range(4):
        pose = gen.sample()
        yaw, pitch = render.random_view(rng)
        view = render.render_pose(pose.rotmat, yaw, pitch, size=96)
        assert view.image.shape == (96, 96, 3) and view.image.dtype == np.uint8
        assert 0.05 < view.mask.mean() < 0.6
        x0, y0, x1, y1 = bbox(view.mask)
        jx0, jy0 = view.joints_2d.min(0)
        jx1, jy1 = view.joints_2d.max(0)
        assert x0 - 1 <= jx0 and jx1 <= x1 + 1 and y0 - 1 <= jy0 and jy1 <= y1 + 1   # joints inside
        margin = 0.3 * view.camera.fx / (render.CAMERA_DISTANCE - 0.6) + 2           # limb radius, head, toes
        assert jx0 - margin <= x0 and x1 <= jx1 + margin and jy0 - margin <= y0 and y1 <= jy1 + margin
        # Every mask pixel is drawn in a body colour, every other pixel is background.
        assert (view.image[~view.mask] == render.BACKGROUND).all()


def test_front_view_of_the_rest_pose_follows_the_camera_convention():
    view = render.render_pose(np.broadcast_to(np.eye(3), (24, 3, 3)).copy(), 0.0, 0.0, size=96)
    np.testing.assert_allclose(view.global_orient_camera, UPRIGHT_CAMERA, atol=1e-12)
    np.testing.assert_allclose(render.look_at_rotation(0, 0), UPRIGHT_CAMERA, atol=1e-12)
    j = view.joints_2d
    assert j[J["left_hand"], 0] > j[J["right_hand"], 0] + 40      # the body's left on the image's right
    assert j[J["head"], 1] < j[J["left_ankle"], 1] - 40             # +Y down: the head is higher up
    np.testing.assert_allclose(j[J["pelvis"], 0], 48, atol=6)       # centred crop


def test_image_target_is_the_view_rotation_times_the_global_orientation():
    pose = g.PoseGenerator(3).sample()
    view = render.render_pose(pose.rotmat, 40.0, 10.0)
    w = view.camera.world_to_camera
    np.testing.assert_allclose(w @ w.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(view.global_orient_camera, w @ pose.rotmat[0], atol=1e-12)
    # A camera 90° to the body's left sees the body face the image's left (−X).
    side = render.look_at_rotation(90, 0)
    np.testing.assert_allclose(side @ [0, 0, 1], [-1, 0, 0], atol=1e-12)


def test_rendering_is_deterministic_and_rejects_bad_shapes():
    pose = g.PoseGenerator(4).sample()
    a, b = render.render_pose(pose.rotmat, 10, 5), render.render_pose(pose.rotmat, 10, 5)
    np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(ValueError):
        render.render_pose(np.zeros((23, 3, 3)))


def test_z_buffer_keeps_the_nearest_triangle_whatever_the_order():
    cam = render.Camera(np.eye(3), np.zeros(3), 40.0, 40.0, 16.0, 16.0, 32)
    near = np.array([[-1, -1, 4], [1, -1, 4], [0, 1, 4]], dtype=np.float64)
    far = near * [1.5, 1.5, 1] + [0, 0, 2]
    verts = np.vstack([near, far])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    colours = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.float64)
    for order in ([0, 1], [1, 0]):
        rgb, depth = render.rasterize(verts, faces[order], colours[order], cam, cull_back_faces=False)
        assert rgb[16, 16, 0] > 0 and rgb[16, 16, 2] == 0           # the red, nearer triangle
        np.testing.assert_allclose(depth[16, 16], 4.0, atol=1e-9)
        assert np.isinf(depth[0, 0])


def test_capsule_figure_is_closed_and_wound_outward():
    verts, faces, colours = render.capsule_mesh(g.REST_JOINTS)
    assert render._signed_volume(verts, faces) > 0
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()                                       # every edge shared by two faces
    assert colours.shape == (len(faces), 3)


def test_mannequin_body_renders_when_available():
    body = render.load_default_body()
    if body is None:
        pytest.skip("smpl_rig.body.load('mannequin') is not available here")
    pose = g.PoseGenerator(5).sample()
    view = render.render_pose(pose.rotmat, 0.0, 0.0, body=body)
    assert 0.05 < view.mask.mean() < 0.6
    x0, y0, x1, y1 = bbox(view.mask)
    assert x0 - 2 <= view.joints_2d[:, 0].min() and view.joints_2d[:, 0].max() <= x1 + 2


# --- splits -------------------------------------------------------------------------------------------

def test_splits_are_disjoint_complete_and_deterministic():
    a, b, other = assign_splits(1000, 0), assign_splits(1000, 0), assign_splits(1000, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other)
    assert [(a == k).sum() for k in range(3)] == [900, 50, 50]
    assert set(np.unique(a)) == {0, 1, 2}
    assert split_id("test") == 2 and split_id("val") == 1
    with pytest.raises(ValueError):
        assign_splits(10, 0, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        split_id("holdout")


# --- writer and reader ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build.build_corpus(out, n=60, seed=3, images=6, size=64, body="capsules")
    return out


def test_corpus_files_and_manifest(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["format"] == build.FORMAT and manifest["n"] == 60 and manifest["images"] == 6
    assert sum(manifest["splits"].values()) == 60 and sum(manifest["kinds"].values()) == 60
    assert manifest["kinds"]["speculative"] > 0
    with np.load(corpus / "poses.npz", allow_pickle=False) as z:
        assert z["rotvec"].shape == (60, 24, 3) and z["rotvec"].dtype == np.float32
        assert z["global_orient_camera"].shape == (60, 3, 3)
    lines = (corpus / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 60 and all(len(json.loads(x)["captions"]) == 6 for x in lines)
    assert (corpus / "README.md").is_file()


def test_load_corpus_splits_partition_the_samples(corpus):
    parts = {s: build.load_corpus(corpus, s) for s in ("train", "validation", "test")}
    indices = [s.index for part in parts.values() for s in part]
    assert sorted(indices) == list(range(60))
    assert {s.split for s in parts["test"]} == {"test"}
    assert len(build.load_corpus(corpus, "all")) == 60
    spec = build.load_corpus(corpus, "all", kind="speculative")
    assert spec and all(s.captions == s.prompts and s.situation for s in spec)
    assert all(s.captions == s.explicit_captions for s in build.load_corpus(corpus, "all", kind="explicit"))


def test_samples_carry_consistent_targets_and_images(corpus):
    samples = build.load_corpus(corpus, "all")
    for s in samples:
        target = s.text_target_rotmat()
        assert target.shape == (24, 3, 3) and target.dtype == np.float32
        np.testing.assert_allclose(target[0], s.global_orient_camera, atol=1e-6)
        np.testing.assert_allclose(target[1:], rot.rotvec_to_rotmat(s.rotvec)[1:], atol=1e-6)
        np.testing.assert_allclose(rot.rotvec_to_rotmat(s.rotvec)[0], s.global_orient_smpl, atol=1e-5)
    with_images = [s for s in samples if s.image_path is not None]
    assert [s.index for s in with_images] == list(range(6))
    for s in with_images:
        assert Image.open(s.image_path).size == (64, 64)
        assert s.image_target_rotmat().shape == (24, 3, 3)
    with pytest.raises(ValueError):
        next(s for s in samples if s.image_path is None).image_target_rotmat()


def test_corpus_is_deterministic_and_prefix_stable(corpus, tmp_path):
    build.build_corpus(tmp_path / "a", n=20, seed=3, images=0, body="capsules")
    small = build.load_corpus(tmp_path / "a", "all")
    large = build.load_corpus(corpus, "all")[:20]
    for a, b in zip(small, large):
        np.testing.assert_array_equal(a.rotvec, b.rotvec)
        assert a.explicit_captions == b.explicit_captions and a.prompts == b.prompts and a.kind == b.kind


def test_load_corpus_reports_a_missing_or_foreign_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pose corpus"):
        build.load_corpus(tmp_path, "train")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="unsupported corpus format"):
        build.load_corpus(tmp_path, "train")


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        build.build_corpus(tmp_path, n=0)
    with pytest.raises(ValueError):
        build.build_corpus(tmp_path, n=5, images=6)


def test_mannequin_renders_carry_its_licence_notice(tmp_path):
    if render.load_default_body() is None:
        pytest.skip("smpl_rig.body.load('mannequin') is not available here")
    manifest = build.build_corpus(tmp_path, n=3, seed=0, images=1, size=48, body="mannequin")
    assert manifest["body"] == "mannequin"
    assert "Apache" in (tmp_path / manifest["files"]["licence"]).read_text()


def test_a_parallel_build_writes_the_same_corpus(tmp_path):
    one = build.build_corpus(tmp_path / "one", n=24, seed=5, images=3, size=32, body="capsules", workers=1)
    two = build.build_corpus(tmp_path / "two", n=24, seed=5, images=3, size=32, body="capsules", workers=2)
    assert one["workers"] == 1 and two["workers"] == 2
    assert (tmp_path / "one" / "captions.jsonl").read_text() == (tmp_path / "two" / "captions.jsonl").read_text()
    for name in ("poses.npz", "images.npz"):
        with np.load(tmp_path / "one" / name) as a, np.load(tmp_path / "two" / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k])
    for i in range(3):
        png = f"images/{i:06d}.png"
        assert (tmp_path / "one" / png).read_bytes() == (tmp_path / "two" / png).read_bytes()
