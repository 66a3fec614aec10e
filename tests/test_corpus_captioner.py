"""Captioner and speculative prompts: captions agree with the generator's label and with FK geometry,
vary in wording, name the body's own left and right; the situation table is complete."""
import re

import numpy as np
import pytest

from smpl_rig.skeleton import JOINT_INDEX as J
from training.corpus import captioner as c
from training.corpus import generator as g
from training.corpus import speculative as sp

# Which generator recipes (per arm) or leg configurations may legitimately show each fact.
ARM_FACT_RECIPES = {
    "arm_up": {"up", "v_up", "reaching"}, "arm_v_up": {"v_up", "up"}, "arm_forward": {"forward", "pointing", "reaching"},
    "arm_sideways": {"sideways", "v_up"}, "arm_reach": {"reaching", "up", "forward", "pointing"},
    "arm_on_hip": {"on_hip"}, "arm_crossed": {"crossed", "crossed_low"}, "arm_hands_together": {"praying"},
    "arm_behind_head": {"behind_head"}, "arm_to_face": {"to_face"}, "arm_behind_back": {"behind_back"},
    "arm_forearm_up": {"waving", "flexing"}, "arm_front_bent": {"front_bent", "praying", "crossed", "crossed_low", "forward"},
    "arm_down": {"down", "behind_back", "on_hip"},
}


def fact_agrees(fact, label) -> bool:
    """Does a stated fact agree with the configuration the generator chose?"""
    k, side = fact.key, fact.side
    if k in ARM_FACT_RECIPES:
        sides = ("left", "right") if side == "both" else (side,)
        return all(label[f"{s}_arm"] in ARM_FACT_RECIPES[k] for s in sides)
    legs = label["legs"]
    if k == "kneel":
        return legs == "kneeling_both" if side == "both" else legs in (f"kneeling_{side}", "kneeling_both")
    if k in ("sit", "squat", "wide_stance", "crouch"):
        return legs == {"sit": "sitting", "squat": "squatting", "wide_stance": "wide_stance", "crouch": "crouching"}[k]
    if k in ("lunge", "raise"):
        return legs == f"{k}_{side}"
    if k == "step":
        return legs in (f"step_{side}", f"lunge_{side}")
    if k == "stand":
        return legs in ("standing", "wide_stance")
    side_lean = label["torso_side_deg"] - label["roll_deg"]
    if k == "lean_forward":
        return label["torso_pitch_deg"] > 8
    if k == "lean_back":
        return label["torso_pitch_deg"] < -4
    if k == "lean_side":
        return side_lean > 4 if side == "left" else side_lean < -4
    if k == "twist":
        return label["torso_twist_deg"] > 10 if side == "left" else label["torso_twist_deg"] < -10
    if k == "head_turn":
        return label["head_turn_deg"] > 15 if side == "left" else label["head_turn_deg"] < -15
    if k == "head_down":
        return label["head_nod_deg"] > 10
    if k == "head_up":
        return label["head_nod_deg"] < -10
    if k == "head_tilt":
        return label["head_tilt_deg"] > 6 if side == "left" else label["head_tilt_deg"] < -6
    raise AssertionError(f"no label rule for fact {k}")


@pytest.fixture(scope="module")
def captioned():
    gen, rng = g.PoseGenerator(21), np.random.default_rng(21)
    out = []
    for _ in range(500):
        p = gen.sample()
        out.append((p, c.caption(p.rotmat, rng)))
    return out


def test_caption_facts_agree_with_the_label_on_at_least_95_percent(captioned):
    agree = [all(fact_agrees(f, p.label) for f in cap.facts) for p, cap in captioned]
    assert np.mean(agree) >= 0.95, np.mean(agree)


def test_every_fact_of_a_full_description_agrees_often(captioned):
    facts = [(f, p.label) for p, _ in captioned for f in c.extract_facts(c.measure(p.rotmat))]
    assert np.mean([fact_agrees(f, lab) for f, lab in facts]) >= 0.95


def test_the_configuration_is_recognised_from_the_joints(captioned):
    """Recall: the caption's leg fact names the leg configuration the generator chose."""
    leg_fact = {"standing": "stand", "wide_stance": "wide_stance", "sitting": "sit", "squatting": "squat",
                "kneeling_both": "kneel", "crouching": "crouch"}
    hits = []
    for p, _ in captioned:
        facts = [f for f in c.extract_facts(c.measure(p.rotmat)) if f.part == "legs"]
        name = p.label["legs"]
        expected = leg_fact.get(name, name.rsplit("_", 1)[0].replace("kneeling", "kneel"))
        hits.append(bool(facts) and facts[0].key == expected)
    assert np.mean(hits) >= 0.9


def test_stated_facts_hold_in_forward_kinematics(captioned):
    """What a caption says is true of the posed joints (upright bodies, world coordinates)."""
    checked = 0
    for p, cap in captioned:
        j = p.joints
        for f in cap.facts:
            sides = ("left", "right") if f.side == "both" else (f.side,)
            if f.key == "arm_up" and abs(p.label["torso_pitch_deg"]) < 10 and p.label["roll_deg"] == 0:
                assert all(j[J[f"{s}_wrist"], 1] > j[J["head"], 1] for s in sides)
                checked += 1
            if f.key == "kneel":
                assert all(j[J[f"{s}_knee"], 1] < 0.15 for s in sides)
                checked += 1
            if f.key == "arm_hands_together":
                assert np.linalg.norm(j[J["left_wrist"]] - j[J["right_wrist"]]) < 0.15
                checked += 1
            if f.key in ("sit", "squat"):
                assert all(p.label[f"{s}_knee_deg"] > 50 for s in ("left", "right"))
                checked += 1
    assert checked >= 30


def test_captions_have_one_to_four_facts_and_vary_in_wording(captioned):
    assert all(1 <= len(cap.facts) <= 4 for _, cap in captioned)
    texts = [cap.text for _, cap in captioned]
    assert len(set(texts)) >= 480
    openings = {" ".join(t.split()[:2]) for t in texts}
    assert len(openings) >= 15
    assert all(t[0].isupper() and t.endswith(".") and "{" not in t and "  " not in t for t in texts)


def test_some_extra_captions_read_as_a_follow_up_turn_but_never_the_first():
    gen, rng = g.PoseGenerator(12), np.random.default_rng(12)
    sets = [[x.text for x in c.captions(gen.sample().rotmat, rng, 3)] for _ in range(100)]
    assert not any(texts[0].startswith("Now ") for texts in sets)
    follow = [t for texts in sets for t in texts[1:] if t.startswith("Now ")]
    assert 10 <= len(follow) <= 60
    assert all(t.split()[1][0].islower() for t in follow)


def test_captioning_is_deterministic_by_seed():
    p = g.PoseGenerator(2).sample()
    a = [x.text for x in c.captions(p.rotmat, np.random.default_rng(5), 3)]
    b = [x.text for x in c.captions(p.rotmat, np.random.default_rng(5), 3)]
    assert a == b and len(set(a)) == 3


def test_left_and_right_are_the_body_own_sides():
    family = g.PoseFamily(lean=("none",), twist_deg=(0, 0), head_nod=(0, 0), head_turn=(0, 0), head_tilt=(0, 0))
    pose = g.PoseGenerator(4).sample(family=family, arms="one_up_left", legs="kneeling_right")
    for view_yaw in (0.0, 180.0):                 # the global heading must not change the words
        a = pose.angles_deg.copy()
        a[0, 1] = view_yaw
        rotmat = g.pose_from_angles(a).rotmat
        facts = {(f.key, f.side) for f in c.extract_facts(c.measure(rotmat))}
        assert ("arm_up", "left") in facts and ("kneel", "right") in facts
    mirrored = g.mirror(pose)
    facts = {(f.key, f.side) for f in c.extract_facts(c.measure(mirrored.rotmat))}
    assert ("arm_up", "right") in facts and ("kneel", "left") in facts
    text = c.caption(pose.rotmat, np.random.default_rng(0), max_facts=2).text
    assert re.search(r"\bleft\b", text) and re.search(r"\bright\b", text)


def test_measure_rejects_bad_shapes():
    with pytest.raises(ValueError):
        c.measure(np.zeros((23, 3, 3)))


def test_speculative_table_covers_twenty_situations_with_three_phrasings_each():
    assert len(sp.SITUATIONS) >= 20
    for name, situation in sp.SITUATIONS.items():
        assert len(set(situation.phrasings)) >= 3, name
    for must in ("surrendering", "tired_after_run", "proposing", "celebrating_goal", "praying", "thinking_hard",
                 "morning_stretch", "desk_work"):
        assert must in sp.SITUATIONS


def test_speculative_prompts_fill_every_placeholder_and_vary():
    rng = np.random.default_rng(0)
    for name in sp.SITUATIONS:
        texts = sp.prompts(name, rng, 3)
        assert len(set(texts)) == 3
        assert all("{" not in t and t[0].isupper() for t in texts)
    with pytest.raises(KeyError):
        sp.prompt("juggling", rng)


def test_every_situation_family_generates_its_poses():
    gen, rng = g.PoseGenerator(8), np.random.default_rng(8)
    for name, situation in sp.SITUATIONS.items():
        got, pose = sp.sample(gen, rng, name)
        assert got == name and pose.label["situation"] == name
        fam = situation.family
        assert fam.arms is None or pose.label["arms"] in fam.arms
        assert fam.legs is None or pose.label["legs"] in fam.legs


def test_speculative_poses_show_their_situation():
    """A surrendering body has both hands above its head; a proposal kneels on one knee; a prayer joins
    the hands — checked on the joints, by the captioner's facts."""
    gen, rng = g.PoseGenerator(9), np.random.default_rng(9)
    expected = {"surrendering": {("arm_up", "both")}, "praying": {("arm_hands_together", "both")},
                "proposing": {("kneel", "left"), ("kneel", "right")}, "bowing": {("lean_forward", None)},
                "sitting_at_desk": None}
    for name, wanted in expected.items():
        if wanted is None:
            continue
        for _ in range(5):
            _, pose = sp.sample(gen, rng, name)
            facts = {(f.key, f.side) for f in c.extract_facts(c.measure(pose.rotmat))}
            assert facts & wanted, (name, facts)


def test_the_first_caption_states_the_legs_and_arms():
    gen, rng = g.PoseGenerator(30), np.random.default_rng(30)
    for _ in range(60):
        p = gen.sample()
        facts = c.extract_facts(c.measure(p.rotmat))
        limbs = {(f.key, f.side) for f in facts if f.part in ("legs", "arms")}
        first = c.captions(p.rotmat, rng, 3)[0]
        stated = {(f.key, f.side) for f in first.facts}
        assert limbs <= stated or len(first.facts) == 4
        assert 1 <= len(first.facts) <= 4


def test_everyday_voice_covers_every_fact_in_its_own_words():
    from training.corpus import captioner_everyday as ev

    assert set(ev.EVERYDAY) == set(c.PHRASES)
    first_voice = {t.replace("{be} ", "").replace("{have} ", "") for p, w in c.PHRASES.values() for t in p + w}
    for key, (clauses, tags) in ev.EVERYDAY.items():
        assert clauses and tags and not set(clauses) & first_voice, key
        assert all(1 <= len(t.split()) <= 5 for t in tags), key          # short prompts, as people type them


def test_everyday_captions_state_facts_that_hold_with_the_bodys_sides():
    from training.corpus import captioner_everyday as ev

    shapes = set()
    for i, pose in enumerate(g.generate(40, seed=11)):
        facts = {(f.key, f.side) for f in c.extract_facts(c.measure(pose.rotmat))}
        caps = ev.captions(pose.rotmat, np.random.default_rng([11, i, 2]), 3)
        assert len(caps) == 3 and len({x.text for x in caps}) == 3
        assert len(caps[0].text.split()) <= 15 and not caps[0].text.endswith(".")   # the first: a short tag list
        for cap in caps:
            assert {(f.key, f.side) for f in cap.facts} <= facts
            sides = {f.side for f in cap.facts if f.side in ("left", "right")}
            for word in ("left", "right"):
                if re.search(rf"\b{word}\b", cap.text):
                    assert word in sides or any(f.key == "raise" for f in cap.facts), cap.text  # raise: "{other} leg"
            shapes.add("tags" if not cap.text.endswith((".", "?")) else "sentence")
    assert shapes == {"tags", "sentence"}
    again = ev.captions(pose.rotmat, np.random.default_rng([11, 39, 2]), 3)
    assert [x.text for x in again] == [x.text for x in caps]


def test_corpus_samples_carry_both_voices_first_voice_first(tmp_path):
    # The first voice's captions (the test split is prompted with the first) are what they were before the
    # second voice came: same stream, same place.
    from training.corpus import build

    build.build_corpus(tmp_path, n=8, seed=2, body="capsules")
    for s in build.load_corpus(tmp_path, "all", kind="explicit"):
        assert len(s.explicit_captions) == build.CAPTIONS_PER_POSE + build.EVERYDAY_CAPTIONS_PER_POSE
        rng = np.random.default_rng([2, s.index, 1])
        rng.random()                                  # the explicit/speculative draw
        first_voice = c.captions(g.PoseGenerator([2, s.index, 0]).sample().rotmat, rng, build.CAPTIONS_PER_POSE)
        assert s.explicit_captions[:3] == [x.text for x in first_voice]


def test_every_situation_has_everyday_prompts_filled_in():
    assert set(sp.EVERYDAY) == set(sp.SITUATIONS)
    rng = np.random.default_rng(0)
    for name, phrasings in sp.EVERYDAY.items():
        assert len(phrasings) >= 3 and any(len(p.split()) <= 5 for p in phrasings), name
        texts = sp.everyday_prompts(name, rng, 4)
        assert len(set(texts)) == 4 and not any("{" in t or "}" in t for t in texts), texts
