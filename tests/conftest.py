"""Fixtures shared across test files."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one BLAS thread is several times faster than two fighting a busy shared CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bodies(tmp_path_factory):
    """Both body sources, loaded the way a user would: a synthetic SMPL-layout file and the mannequin."""
    from smpl_fixtures import write_synthetic_smpl
    from smpl_rig import body as smpl_body

    path = tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.npz"
    write_synthetic_smpl(path, fmt="npz", seed=3)
    return {"synthetic_smpl": smpl_body.load(str(path)), "mannequin": smpl_body.load("mannequin")}


@pytest.fixture
def fresh_scene():
    """An empty Blender scene for each test (bpy tests: ``pytest.mark.usefixtures("fresh_scene")``)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield
