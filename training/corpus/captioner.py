"""Describe a pose in words from what its joints do — never from the generator's label.

Three stages:
1. ``measure(rotmats)``: forward kinematics on the reference skeleton, then positions in a body frame
   (``lat`` toward the body's left, ``up`` along world +Y, ``fwd`` the horizontal direction the hips face)
   and joint angles (elbow and knee flexion, head turn/nod/tilt relative to the chest, torso lean).
2. ``extract_facts(measures)``: the geometric facts that hold (an arm above the head, a knee on the floor,
   the torso leaning forward …), each with a side and a salience.
3. ``caption(rotmats, rng)``: 1–4 facts, the most salient always among them, written with one of several
   phrasings each and joined in varied sentence shapes; left and right are the body's own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from smpl_rig.kinematics import forward_kinematics
from smpl_rig.skeleton import JOINT_INDEX as J

from .generator import REST_JOINTS, floor_height

SIDES = ("left", "right")


# --- 1. measurements ------------------------------------------------------------------------------------

def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    c = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@dataclass
class Measures:
    """Body-frame positions (metres, relative to the pelvis: lat = body's left, up, fwd) and angles."""
    pos: dict                 # joint name → (3,) (lat, up, fwd)
    chest: dict               # joint name → (3,) relative to the pelvis in the chest's frame (arms are read here)
    floor: float              # floor height in the same frame (up coordinate)
    elbow_flexion: dict       # side → degrees
    knee_flexion: dict        # side → degrees
    thigh_pitch: dict         # side → degrees the thigh swings forward of straight down (negative: back)
    torso_pitch: float        # degrees the pelvis→neck line leans forward of vertical (negative: back)
    torso_side: float         # degrees it leans toward the body's left (negative: right)
    torso_twist: float        # degrees the shoulder line turns left relative to the hip line
    head_turn: float          # degrees, + to the left, relative to the chest
    head_nod: float           # degrees, + looking down
    head_tilt: float          # degrees, + toward the left shoulder
    joints: np.ndarray = field(repr=False, default=None)  # (24, 3) world positions


def measure(rotmats: np.ndarray) -> Measures:
    """Measure a pose given as local rotations (24, 3, 3), SMPL frame."""
    rotmats = np.asarray(rotmats, dtype=np.float64)
    if rotmats.shape != (24, 3, 3):
        raise ValueError(f"expected rotation matrices (24, 3, 3), got shape {rotmats.shape}")
    fk = forward_kinematics(REST_JOINTS, rotmats)
    joints, world = fk.joints, fk.rotations
    up = np.array([0.0, 1.0, 0.0])
    facing = world[J["pelvis"]][:, 2] - (world[J["pelvis"]][:, 2] @ up) * up
    if np.linalg.norm(facing) < 1e-3:       # hips facing straight up or down: use the chest instead
        facing = world[J["spine3"]][:, 2] - (world[J["spine3"]][:, 2] @ up) * up
    fwd = facing / np.linalg.norm(facing)
    left = np.cross(up, fwd)
    basis = np.stack([left, up, fwd])      # rows: lat, up, fwd
    rel = (joints - joints[J["pelvis"]]) @ basis.T
    pos = {name: rel[i] for name, i in J.items()}
    # Arms hang from the chest, so their states are read in the chest's own frame (a body bent forward
    # with its arms along its sides still has them "at the sides").
    chest_rel = (joints - joints[J["pelvis"]]) @ world[J["spine3"]]
    chest = {name: chest_rel[i] for name, i in J.items()}
    floor = float(floor_height(joints) - joints[J["pelvis"], 1])

    def flexion(a, b, c):
        return _angle_deg(pos[b] - pos[a], pos[c] - pos[b])

    elbow = {s: flexion(f"{s}_shoulder", f"{s}_elbow", f"{s}_wrist") for s in SIDES}
    knee = {s: flexion(f"{s}_hip", f"{s}_knee", f"{s}_ankle") for s in SIDES}
    thigh = {}
    for s in SIDES:
        t = pos[f"{s}_knee"] - pos[f"{s}_hip"]
        thigh[s] = math.degrees(math.atan2(t[2], -t[1]))

    torso = pos["neck"] - pos["pelvis"]
    torso_pitch = math.degrees(math.atan2(torso[2], torso[1]))
    torso_side = math.degrees(math.atan2(torso[0], torso[1]))
    shoulders = pos["left_shoulder"] - pos["right_shoulder"]
    hips = pos["left_hip"] - pos["right_hip"]
    # Turning left moves the left shoulder backward (−fwd): angle of the lines in the lat–fwd plane.
    twist = math.degrees(math.atan2(hips[2], hips[0]) - math.atan2(shoulders[2], shoulders[0]))
    twist = (twist + 180) % 360 - 180

    chest_to_head = world[J["spine3"]].T @ world[J["head"]]
    face, top = chest_to_head[:, 2], chest_to_head[:, 1]
    head_turn = math.degrees(math.atan2(face[0], face[2]))
    head_nod = math.degrees(math.asin(max(-1.0, min(1.0, -face[1]))))
    head_tilt = math.degrees(math.atan2(top[0], top[1]))
    return Measures(pos=pos, chest=chest, floor=floor, elbow_flexion=elbow, knee_flexion=knee, thigh_pitch=thigh,
                    torso_pitch=torso_pitch, torso_side=torso_side, torso_twist=twist, head_turn=head_turn,
                    head_nod=head_nod, head_tilt=head_tilt, joints=joints)


# --- 2. facts -------------------------------------------------------------------------------------------

@dataclass
class Fact:
    """One thing the pose does. key: e.g. "arm_up", "kneel", "lean_forward"; side: "left" | "right" |
    "both" | None; salience: how much a caption should want it; degrees: the measured angle, if any."""
    key: str
    side: str | None
    salience: float
    degrees: float | None = None
    part: str = ""            # "arms" | "legs" | "torso" | "head"


def _arm_state(m: Measures, s: str) -> str | None:
    """What one arm does, judged from its joints (first match wins)."""
    p = m.chest
    out = 1.0 if s == "left" else -1.0           # lateral sign: outward from the body on this side
    sh, el, wr = p[f"{s}_shoulder"], p[f"{s}_elbow"], p[f"{s}_wrist"]
    head, pelvis = p["head"], p["pelvis"]
    flex = m.elbow_flexion[s]
    face = head + np.array([0.0, -0.03, 0.09])
    if np.linalg.norm(wr - head) < 0.2 and wr[1] > sh[1] + 0.05 and el[1] > sh[1] - 0.05 and wr[2] < head[2] + 0.03:
        return "behind_head"
    if np.linalg.norm(p[f"{s}_hand"] - face) < 0.13 and flex > 90:
        return "to_face"
    if out * wr[0] < -0.03 and pelvis[1] + 0.1 < wr[1] < sh[1] and flex > 80 and wr[2] > 0.05:
        return "crossed"
    hip = p[f"{s}_hip"]
    if (hip[1] - 0.05 < wr[1] < pelvis[1] + 0.2 and 0.06 < out * wr[0] < 0.26 and abs(wr[2]) < 0.15
            and out * el[0] > out * wr[0] + 0.08 and flex > 70):
        return "on_hip"
    if wr[2] < -0.08 and out * wr[0] < 0.17 and pelvis[1] - 0.3 < wr[1] < pelvis[1] + 0.25:
        return "behind_back"
    if wr[1] > el[1] + 0.12 and el[1] < sh[1] + 0.15 and wr[1] > sh[1] and flex > 45:
        return "forearm_up"
    if wr[2] > sh[2] + 0.25 and wr[1] > sh[1] + 0.15 and flex < 35:
        return "reach"
    if wr[1] > head[1] + 0.1 and flex < 45:
        return "up" if out * (wr[0] - sh[0]) < 0.25 else "v_up"
    if wr[2] > sh[2] + 0.35 and abs(wr[1] - sh[1]) < 0.2 and flex < 35:
        return "forward"
    if out * (wr[0] - sh[0]) > 0.35 and abs(wr[1] - sh[1]) < 0.18 and flex < 35:
        return "sideways"
    if wr[2] > 0.2 and pelvis[1] < wr[1] < sh[1] and flex > 45:
        return "front_bent"
    if wr[1] < pelvis[1] + 0.12 and abs(wr[2]) < 0.25:
        return "down"
    return None


ARM_SALIENCE = {"down": 0.7, "up": 3.0, "v_up": 3.0, "forward": 2.8, "sideways": 2.6, "reach": 2.6,
                "on_hip": 3.0, "crossed": 3.2, "hands_together": 3.2, "behind_head": 3.0, "to_face": 3.0,
                "behind_back": 2.6, "forearm_up": 2.8, "front_bent": 2.2}


def _leg_facts(m: Measures) -> list[Fact]:
    p, knee, thigh = m.pos, m.knee_flexion, m.thigh_pitch
    on_floor = {s: p[f"{s}_knee"][1] - m.floor < 0.12 and knee[s] > 60 for s in SIDES}
    if on_floor["left"] and on_floor["right"]:
        return [Fact("kneel", "both", 3.5, None, "legs")]
    for s, o in (("left", "right"), ("right", "left")):
        if on_floor[s]:
            return [Fact("kneel", s, 3.5, knee[o], "legs")]     # degrees: the front (other) knee
    if all(thigh[s] > 55 for s in SIDES):
        if all(knee[s] >= 105 for s in SIDES):
            return [Fact("squat", "both", 3.5, min(knee.values()), "legs")]
        if all(55 < knee[s] < 105 for s in SIDES):
            return [Fact("sit", "both", 3.5, float(np.mean(list(knee.values()))), "legs")]
    if all(35 < knee[s] < 110 and 15 < thigh[s] <= 55 for s in SIDES):
        return [Fact("crouch", "both", 3.0, float(np.mean(list(knee.values()))), "legs")]
    for s, o in (("left", "right"), ("right", "left")):
        behind = p[f"{o}_knee"][2] < p[f"{o}_hip"][2] - 0.05
        if thigh[s] > 50 and 55 < knee[s] < 115 and behind and knee[o] < 45:
            return [Fact("lunge", s, 3.3, knee[s], "legs")]
    for s, o in (("left", "right"), ("right", "left")):
        if p[f"{s}_ankle"][1] > p[f"{o}_ankle"][1] + 0.2 and thigh[s] > 40 and knee[o] < 25:
            return [Fact("raise", s, 3.2, thigh[s], "legs")]
    straight = all(knee[s] < 35 for s in SIDES)
    ahead = p["left_ankle"][2] - p["right_ankle"][2]
    if straight and abs(ahead) > 0.2:
        return [Fact("step", "left" if ahead > 0 else "right", 2.4, None, "legs")]
    if straight and all(abs(thigh[s]) < 20 for s in SIDES):
        if p["left_ankle"][0] - p["right_ankle"][0] > 0.5:
            return [Fact("wide_stance", "both", 1.8, None, "legs")]
        return [Fact("stand", "both", 0.8, None, "legs")]
    return []


def extract_facts(m: Measures) -> list[Fact]:
    """Every fact that holds for a measured pose."""
    facts: list[Fact] = []
    states = {s: _arm_state(m, s) for s in SIDES}
    wl, wr = m.chest["left_wrist"], m.chest["right_wrist"]
    crossed_over = wl[0] < -0.03 and wr[0] > 0.03
    together = (np.linalg.norm(wl - wr) < 0.15 and min(wl[2], wr[2]) > 0.1 and not crossed_over
                and m.chest["pelvis"][1] + 0.1 < 0.5 * (wl[1] + wr[1]) < m.chest["neck"][1] + 0.05)
    if together:
        facts.append(Fact("arm_hands_together", "both", ARM_SALIENCE["hands_together"], None, "arms"))
    elif states["left"] == states["right"] == "crossed":
        facts.append(Fact("arm_crossed", "both", ARM_SALIENCE["crossed"], None, "arms"))
    elif states["left"] is not None and states["left"] == states["right"]:
        deg = 0.5 * (m.elbow_flexion["left"] + m.elbow_flexion["right"])
        facts.append(Fact(f"arm_{states['left']}", "both", ARM_SALIENCE[states["left"]] + 0.3, deg, "arms"))
    else:
        for s in SIDES:
            if states[s] is not None and states[s] != "crossed":
                facts.append(Fact(f"arm_{states[s]}", s, ARM_SALIENCE[states[s]], m.elbow_flexion[s], "arms"))
    facts += _leg_facts(m)

    if m.torso_pitch > 15:
        facts.append(Fact("lean_forward", None, 2.0 + (m.torso_pitch > 35), m.torso_pitch, "torso"))
    elif m.torso_pitch < -10:
        facts.append(Fact("lean_back", None, 2.0, -m.torso_pitch, "torso"))
    if abs(m.torso_side) > 10:
        facts.append(Fact("lean_side", "left" if m.torso_side > 0 else "right", 1.8, abs(m.torso_side), "torso"))
    if abs(m.torso_twist) > 20:
        facts.append(Fact("twist", "left" if m.torso_twist > 0 else "right", 1.3, abs(m.torso_twist), "torso"))
    if abs(m.head_turn) > 25:
        facts.append(Fact("head_turn", "left" if m.head_turn > 0 else "right", 1.5, abs(m.head_turn), "head"))
    if m.head_nod > 20:
        facts.append(Fact("head_down", None, 1.4, m.head_nod, "head"))
    elif m.head_nod < -18:
        facts.append(Fact("head_up", None, 1.4, -m.head_nod, "head"))
    if abs(m.head_tilt) > 14:
        facts.append(Fact("head_tilt", "left" if m.head_tilt > 0 else "right", 1.1, abs(m.head_tilt), "head"))
    return facts


# --- 3. words -------------------------------------------------------------------------------------------

# Phrasings per fact: predicates ("{be} kneeling …") and with-phrases ("with …"). Placeholders: {be}
# is/are, {have} has/have, {poss} his/her/their, {side} left/right, {other} the other side, {deg} how far
# a joint bends, {lean} how far the body leans (words or degrees), {by} " by about N degrees" or nothing.
# Keys ending in ":both" are the two-sided forms.
PHRASES = {
    "arm_up": (
        ["{be} raising {poss} {side} arm above {poss} head", "{have} {poss} {side} hand up in the air",
         "{be} holding {poss} {side} arm straight up"],
        ["with {poss} {side} arm raised above {poss} head", "with the {side} hand high above the head"]),
    "arm_up:both": (
        ["{be} raising both arms above {poss} head", "{have} both hands up in the air",
         "{be} stretching both arms straight up overhead"],
        ["with both arms raised above {poss} head", "with {poss} hands high above the head"]),
    "arm_v_up": (
        ["{be} raising {poss} {side} arm up and out to the side", "{have} {poss} {side} arm lifted diagonally upward"],
        ["with the {side} arm raised diagonally up and out"]),
    "arm_v_up:both": (
        ["{be} throwing both arms up and out in a V", "{have} both arms raised in a wide V above {poss} shoulders",
         "{be} lifting both arms diagonally upward"],
        ["with both arms spread up in a V", "with {poss} arms raised wide above {poss} shoulders"]),
    "arm_forward": (
        ["{be} pointing {poss} {side} arm straight ahead", "{be} stretching {poss} {side} arm out in front",
         "{have} {poss} {side} arm extended forward at shoulder height"],
        ["with the {side} arm pointing forward", "with {poss} {side} arm held straight out in front"]),
    "arm_forward:both": (
        ["{be} holding both arms straight out in front", "{have} both arms extended forward at shoulder height",
         "{be} stretching {poss} arms out ahead like a sleepwalker"],
        ["with both arms stretched out in front", "with {poss} arms reaching straight ahead"]),
    "arm_sideways": (
        ["{be} holding {poss} {side} arm out to the side",
         "{have} {poss} {side} arm stretched out sideways at shoulder height"],
        ["with the {side} arm extended to the side", "with {poss} {side} arm out level with the shoulder"]),
    "arm_sideways:both": (
        ["{be} holding both arms out to the sides in a T", "{have} {poss} arms spread wide at shoulder height",
         "{be} holding {poss} arms outstretched like the letter T"],
        ["with both arms stretched out sideways", "with {poss} arms spread wide"]),
    "arm_reach": (
        ["{be} reaching forward and up with {poss} {side} arm",
         "{have} {poss} {side} arm raised in front, reaching upward"],
        ["with the {side} arm reaching up and forward"]),
    "arm_reach:both": (
        ["{be} reaching forward and upward with both arms", "{have} both arms raised in front, reaching up"],
        ["with both arms reaching up and forward"]),
    "arm_on_hip": (
        ["{be} resting {poss} {side} hand on {poss} hip", "{have} {poss} {side} hand on {poss} hip"],
        ["with the {side} hand on the hip", "with {poss} {side} fist planted on {poss} hip"]),
    "arm_on_hip:both": (
        ["{be} resting both hands on {poss} hips", "{have} {poss} hands on {poss} hips, elbows out",
         "{be} resting both fists on {poss} hips"],
        ["with both hands on the hips", "with {poss} hands on {poss} hips and elbows out"]),
    "arm_crossed:both": (
        ["{be} crossing {poss} arms over {poss} chest", "{have} {poss} arms folded across the chest",
         "{be} holding {poss} arms crossed in front of {poss} body"],
        ["with arms crossed over the chest", "with {poss} arms folded"]),
    "arm_hands_together:both": (
        ["{be} pressing {poss} palms together in front of {poss} chest",
         "{have} both hands joined in front of the chest", "{be} holding {poss} hands together at chest height"],
        ["with the hands pressed together in front of the chest", "with {poss} palms joined"]),
    "arm_behind_head": (
        ["{be} putting {poss} {side} hand behind {poss} head", "{have} {poss} {side} hand at the back of {poss} head"],
        ["with the {side} hand behind the head"]),
    "arm_behind_head:both": (
        ["{be} clasping both hands behind {poss} head", "{have} {poss} hands behind {poss} head, elbows out",
         "{be} resting {poss} head in {poss} hands from behind"],
        ["with both hands behind the head", "with {poss} hands laced behind {poss} head"]),
    "arm_to_face": (
        ["{be} raising {poss} {side} hand to {poss} chin", "{have} {poss} {side} hand at {poss} face",
         "{be} touching {poss} face with {poss} {side} hand"],
        ["with the {side} hand at the chin", "with {poss} {side} hand up to {poss} face"]),
    "arm_to_face:both": (
        ["{be} holding both hands to {poss} face", "{have} both hands at {poss} chin"],
        ["with both hands at the face"]),
    "arm_behind_back": (
        ["{be} holding {poss} {side} hand behind {poss} back", "{have} {poss} {side} arm tucked behind {poss} back"],
        ["with the {side} hand behind the back"]),
    "arm_behind_back:both": (
        ["{be} holding both hands behind {poss} back", "{have} {poss} hands clasped behind {poss} back"],
        ["with both hands behind the back", "with {poss} arms behind {poss} back"]),
    "arm_forearm_up": (
        ["{be} raising {poss} {side} hand with the elbow bent, as if waving",
         "{have} {poss} {side} elbow bent {deg} with the hand up",
         "{have} {poss} {side} forearm up and the hand at head height", "{be} waving with {poss} {side} hand"],
        ["with the {side} forearm raised and the elbow bent", "with {poss} {side} hand up as if waving"]),
    "arm_forearm_up:both": (
        ["{be} flexing both arms with the fists up by {poss} head", "{have} both elbows bent and both hands raised",
         "{be} holding both forearms upright like a bodybuilder"],
        ["with both forearms raised and the elbows bent", "with {poss} fists up beside {poss} head"]),
    "arm_front_bent": (
        ["{be} holding {poss} {side} forearm out in front with the elbow bent",
         "{have} {poss} {side} elbow bent {deg} with the forearm forward",
         "{have} {poss} {side} elbow bent and the hand in front of {poss} body"],
        ["with the {side} forearm held forward"]),
    "arm_front_bent:both": (
        ["{be} holding both forearms out in front as if typing", "{have} both elbows bent with the hands in front",
         "{be} holding {poss} hands in front of {poss} waist"],
        ["with both forearms held forward", "with {poss} hands out in front, elbows bent"]),
    "arm_down": (
        ["{be} letting {poss} {side} arm hang at {poss} side", "{have} {poss} {side} arm down by {poss} side"],
        ["with the {side} arm relaxed at the side"]),
    "arm_down:both": (
        ["{be} keeping both arms at {poss} sides", "{have} {poss} arms hanging relaxed",
         "{be} keeping {poss} arms down by {poss} sides"],
        ["with both arms at the sides", "with {poss} arms hanging down"]),
    "kneel": (
        ["{be} kneeling on {poss} {side} knee",
         "{be} kneeling on {poss} {side} knee with the {other} knee bent {deg}", "{be} down on {poss} {side} knee",
         "{have} {poss} {side} knee on the ground and the other foot planted in front"],
        ["with the {side} knee on the floor", "with {poss} {side} knee resting on the ground"]),
    "kneel:both": (
        ["{be} kneeling on both knees", "{be} down on {poss} knees", "{be} kneeling upright"],
        ["with both knees on the floor", "kneeling on both knees"]),
    "sit:both": (
        ["{be} sitting as if on a chair", "{be} seated with {poss} knees bent {deg}", "{be} sitting down"],
        ["in a seated position", "seated with the thighs level"]),
    "squat:both": (
        ["{be} squatting", "{be} crouching down in a deep squat", "{be} squatting low with {poss} knees bent {deg}"],
        ["in a deep squat", "crouched low on {poss} heels"]),
    "crouch:both": (
        ["{be} crouching with {poss} knees bent {deg}", "{be} standing with bent knees",
         "{have} {poss} knees bent in a half squat"],
        ["with the knees bent", "in a half crouch"]),
    "lunge": (
        ["{be} lunging forward on {poss} {side} leg", "{be} in a lunge with the {side} knee bent {deg}",
         "{have} {poss} {side} leg forward in a deep lunge"],
        ["with the {side} leg forward in a lunge", "in a lunge, {side} foot forward"]),
    "raise": (
        ["{be} lifting {poss} {side} knee", "{be} standing on one leg with the {side} knee raised",
         "{be} balancing on the {other} leg with the {side} leg up"],
        ["with the {side} knee lifted", "on one leg, the {side} knee raised"]),
    "step": (
        ["{be} stepping forward with {poss} {side} foot", "{have} {poss} {side} foot in front of the other",
         "{be} taking a step with the {side} leg"],
        ["with the {side} foot forward", "mid-step with the {side} foot in front"]),
    "wide_stance:both": (
        ["{be} standing with {poss} feet wide apart", "{be} standing in a wide stance",
         "{have} {poss} legs spread apart"],
        ["with the feet wide apart", "in a wide stance"]),
    "stand:both": (
        ["{be} standing straight", "{be} standing upright", "{be} standing on both feet"],
        ["standing upright", "with both feet on the ground"]),
    "lean_forward": (
        ["{be} leaning forward {lean}", "{be} bending forward at the waist",
         "{have} {poss} upper body tilted forward"],
        ["with the torso leaning forward", "bent forward at the waist"]),
    "lean_back": (
        ["{be} leaning back {lean}", "{be} arching {poss} back", "{have} {poss} upper body tilted backward"],
        ["with the torso leaning back", "leaning backward slightly"]),
    "lean_side": (
        ["{be} leaning to {poss} {side} {lean}", "{be} bending sideways to the {side}",
         "{have} {poss} torso tilted to the {side}"],
        ["with the torso leaning to the {side}", "bent sideways toward the {side}"]),
    "twist": (
        ["{be} twisting {poss} upper body to the {side}{by}", "{have} {poss} chest turned to the {side}",
         "{be} rotating {poss} torso toward {poss} {side}"],
        ["with the torso twisted to the {side}", "with {poss} shoulders turned to the {side}"]),
    "head_turn": (
        ["{be} looking to {poss} {side}", "{have} {poss} head turned to the {side}{by}",
         "{be} turning {poss} head to the {side}", "{have} {poss} head turned toward the {side}"],
        ["with the head turned to the {side}", "looking over to the {side}"]),
    "head_down": (
        ["{be} looking down", "{be} bowing {poss} head", "{have} {poss} chin tucked down"],
        ["with the head bowed", "looking downward"]),
    "head_up": (
        ["{be} looking up", "{be} tilting {poss} head back", "{have} {poss} face turned upward"],
        ["with the head tipped back", "gazing upward"]),
    "head_tilt": (
        ["{be} tilting {poss} head to the {side}", "{have} {poss} head cocked toward {poss} {side} shoulder"],
        ["with the head tilted to the {side}"]),
}

SUBJECTS = (("The person", "is", "has", "their"), ("A person", "is", "has", "their"), ("Someone", "is", "has", "their"),
            ("The figure", "is", "has", "its"), ("He", "is", "has", "his"), ("She", "is", "has", "her"),
            ("They", "are", "have", "their"), ("The man", "is", "has", "his"), ("The woman", "is", "has", "her"))
PRONOUN = {"their": "They", "his": "He", "her": "She", "its": "It"}
PLURAL = {"They": ("are", "have")}


def _bend_phrase(deg: float | None, numeric: bool) -> str:
    """How far a joint is bent: words, or "to about N degrees" rounded to 15°."""
    if deg is None:
        return ""
    if numeric:
        return f"to about {int(round(deg / 15) * 15)} degrees"
    if deg < 20:
        return "slightly"
    if deg < 60:
        return "partway"
    if deg < 110:
        return "to about a right angle" if deg > 75 else "halfway"
    return "sharply"


def _lean_phrase(deg: float | None, numeric: bool) -> str:
    """How far the torso leans: words, or "by about N degrees" rounded to 5°."""
    if deg is None:
        return ""
    if numeric:
        return f"by about {int(round(deg / 5) * 5)} degrees"
    return "slightly" if deg < 20 else "noticeably" if deg < 35 else "deeply"


def _fill(template: str, fact: Fact, be: str, have: str, poss: str, numeric: bool = False) -> str:
    side = fact.side if fact.side in SIDES else ""
    other = {"left": "right", "right": "left"}.get(side, "")
    by = f" by about {int(round(fact.degrees / 5) * 5)} degrees" if numeric and fact.degrees else ""
    text = template.format(be=be, have=have, poss=poss, side=side, other=other, by=by,
                           deg=_bend_phrase(fact.degrees, numeric), lean=_lean_phrase(fact.degrees, numeric))
    return " ".join(text.split())


def phrase_key(fact: Fact) -> str:
    return f"{fact.key}:both" if fact.side == "both" else fact.key


_PART_RANK = {"legs": 0, "arms": 1, "torso": 2, "head": 3}
SHUFFLED_ORDER_SHARE = 0.4


def _reading_order(facts: list[Fact]) -> list[Fact]:
    return sorted(facts, key=lambda f: (_PART_RANK.get(f.part, 4), SIDES.index(f.side) if f.side in SIDES else 2))


def choose_facts(facts: list[Fact], rng, max_facts: int | None = None, complete: bool = False) -> list[Fact]:
    """1–4 facts, in reading order (legs, arms, torso, head) or, for some incomplete captions, shuffled.

    complete=False: the most salient fact always, the others drawn by salience.
    complete=True: the legs and arms first (they carry most of the pose), then the most salient of the
    rest, up to ``max_facts`` (4 by default) — the description a benchmark prompt should be.
    """
    if not facts:
        return []
    k = int(max_facts if max_facts is not None else (4 if complete else rng.choice([1, 2, 2, 3, 3, 3, 4, 4])))
    if complete:
        order = sorted(facts, key=lambda f: (f.part not in ("legs", "arms"), -f.salience))
        return _reading_order(order[:k])
    order = sorted(facts, key=lambda f: -f.salience)
    chosen = [order[0]]
    rest = order[1:]
    while rest and len(chosen) < k:
        w = np.array([f.salience for f in rest]) ** 2
        i = int(rng.choice(len(rest), p=w / w.sum()))
        chosen.append(rest.pop(i))
    if rng.random() < SHUFFLED_ORDER_SHARE:       # people do not always describe the legs first
        return [chosen[i] for i in rng.permutation(len(chosen))]
    return _reading_order(chosen)


def compose(facts: list[Fact], rng, follow_up: bool = False) -> str:
    """Write chosen facts as one or two sentences with a random subject and phrasing; ``follow_up`` starts
    it the way a later turn of a chat would ("Now she is …")."""
    if not facts:
        return "The person is holding a neutral pose."
    subject, be, have, poss = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    preds = [PHRASES[phrase_key(f)][0] for f in facts]
    withs = [PHRASES[phrase_key(f)][1] for f in facts]
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    numeric = bool(rng.random() < 0.3)                # some captions give angles in degrees
    fill = lambda template, fact, b=be, h=have: _fill(template, fact, b, h, poss, numeric)  # noqa: E731
    first = fill(pick(preds[0]), facts[0])
    style = int(rng.integers(4))
    if len(facts) == 1:
        text = f"{subject} {first}."
    elif style == 0:   # one sentence, the rest as with-phrases
        rest = [fill(pick(w), f) for w, f in zip(withs[1:], facts[1:])]
        text = f"{subject} {first}, " + (", ".join(rest[:-1]) + " and " if len(rest) > 1 else "") + rest[-1] + "."
    elif style == 1:   # predicates joined by "and", or "while" before an "-ing" predicate
        parts = [first] + [fill(pick(p), f) for p, f in zip(preds[1:], facts[1:])]
        verb, _, rest_of_second = parts[1].partition(" ")
        if len(parts) == 2 and verb == be and rng.random() < 0.5:
            body = f"{parts[0]} while {rest_of_second}"
        else:
            body = ", ".join(parts[:-1]) + " and " + parts[-1]
        text = f"{subject} {body}."
    elif style == 2:   # two sentences, the second with a pronoun
        pron = PRONOUN[poss] if subject not in ("They",) else "They"
        be2, have2 = PLURAL.get(pron, ("is", "has"))
        rest = [fill(pick(p), f, be2, have2) for p, f in zip(preds[1:], facts[1:])]
        tail = ", ".join(rest[:-1]) + " and " + rest[-1] if len(rest) > 1 else rest[0]
        text = f"{subject} {first}. {pron} {tail}."
    else:              # a with-phrase first, then the subject
        lead = fill(pick(withs[0]), facts[0])
        rest = [fill(pick(p), f) for p, f in zip(preds[1:], facts[1:])]
        tail = ", ".join(rest[:-1]) + " and " + rest[-1] if len(rest) > 1 else rest[0]
        text = f"{lead[0].upper()}{lead[1:]}, {subject[0].lower()}{subject[1:]} {tail}."
    if follow_up and text.startswith(subject + " "):
        text = f"Now {subject[0].lower()}{subject[1:]}{text[len(subject):]}"
    return text


FOLLOW_UP_SHARE = 0.15  # share of the extra captions phrased as a later chat turn ("Now he is …")


@dataclass
class Caption:
    """A caption and the facts it states (for checking against the pose)."""
    text: str
    facts: list


def caption(rotmats: np.ndarray, rng, max_facts: int | None = None) -> Caption:
    """Describe a pose (24, 3, 3) in one random phrasing; ``rng`` is a ``numpy.random.Generator``."""
    chosen = choose_facts(extract_facts(measure(rotmats)), rng, max_facts)
    return Caption(text=compose(chosen, rng), facts=chosen)


def captions(rotmats: np.ndarray, rng, count: int = 3) -> list[Caption]:
    """``count`` different captions of one pose; the first is the complete one (legs and arms first, up to
    four facts), the others state 1–4 facts drawn by salience."""
    facts = extract_facts(measure(rotmats))

    def draw(i: int) -> Caption:
        chosen = choose_facts(facts, rng, complete=i == 0)
        return Caption(text=compose(chosen, rng, follow_up=i > 0 and rng.random() < FOLLOW_UP_SHARE), facts=chosen)

    return distinct(draw, count)


def distinct(draw, count: int) -> list[Caption]:
    """Up to ``count`` captions with different texts from ``draw(i)`` (i = 0, 1, …), giving up after
    3 × ``count`` draws (a pose with one fact has few ways to be said)."""
    out, seen = [], set()
    for i in range(count * 3):
        caption = draw(i)
        if caption.text not in seen:
            seen.add(caption.text)
            out.append(caption)
        if len(out) == count:
            break
    return out
