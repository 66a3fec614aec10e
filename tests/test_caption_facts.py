"""demo/caption_facts.py: the error of a predictor told exactly which facts each test caption states."""
from __future__ import annotations

import numpy as np
import pytest

from demo.caption_facts import facts_oracle, summary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from training.corpus.build import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, n=300, seed=4, images=0, body="capsules", workers=1)
    return out


def test_the_facts_predictor_is_the_mean_of_the_poses_that_share_the_facts(corpus):
    oracle = facts_oracle(corpus, extra=60)
    n = len(oracle["prompts"])
    assert n > 0 and oracle["pred_rotmat"].shape == (n, 24, 3, 3) and oracle["references"] > 60
    figures = summary(oracle)
    # knowing what a caption says beats knowing nothing
    assert figures["explicit_facts_oracle_mpjre_deg"] < figures["explicit_mean_pose_mpjre_deg"]
    # a caption nothing matches gets the overall mean; one that matches gets a mean of real poses, not the overall one
    lonely = oracle["matches"] == 0
    np.testing.assert_allclose(oracle["pred_rotmat"][lonely], np.broadcast_to(oracle["mean_rotmat"], oracle["pred_rotmat"][lonely].shape))
    assert not np.allclose(oracle["pred_rotmat"][~lonely], oracle["mean_rotmat"])
    # more reference poses: every caption still finds at least the poses it found before
    assert (facts_oracle(corpus, extra=120)["matches"] >= oracle["matches"]).all()
