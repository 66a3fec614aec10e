"""Small, fast numpy renders of a posed body: z-buffered flat-shaded triangles, no GPU, no Blender.

The body is the mannequin mesh (``smpl_rig.body.load("mannequin")``, skinned by ``Body.pose``) when that
model is installed, else a capsule figure built around the forward-kinematics joints (``capsule_mesh``) —
the fallback stays so the corpus can be built with nothing but numpy and Pillow.

Camera convention (conventions page): camera frame +X right, +Y down, +Z forward into the scene. A point
``p`` in the SMPL frame lands at ``W @ p + t`` in the camera frame and at pixel
``(fx · x / z + cx, fy · y / z + cy)``. The image→pose target for joint 0 is ``W @ R0_smpl``: a body upright
and facing the camera gives diag(1, −1, −1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smpl_rig.kinematics import forward_kinematics
from smpl_rig.skeleton import JOINT_INDEX as J

from .generator import REST_JOINTS

IMAGE_SIZE = 96
CAMERA_DISTANCE = 4.0       # metres from the body's centre
FILL = 0.85                 # fraction of the image the body's larger extent fills
BACKGROUND = (235, 235, 230)
LIGHT_DIR = np.array([-0.35, -0.55, -0.75])  # camera frame, pointing from the surface toward the light

# Colours by body region: the body's left limbs warm, right limbs cool, so an image tells the sides apart.
COLOURS = {"torso": (200, 200, 195), "head": (215, 205, 190), "nose": (180, 90, 70),
           "left": (215, 140, 80), "right": (90, 135, 205), "centre": (200, 200, 195)}

# Capsule figure: (start joint, end joint, radius m, colour key, extension past the end joint as a fraction).
BONES = (
    ("pelvis", "spine1", 0.115, "torso", 0.0), ("spine1", "spine2", 0.12, "torso", 0.0),
    ("spine2", "spine3", 0.125, "torso", 0.0), ("spine3", "neck", 0.11, "torso", 0.0),
    ("left_hip", "right_hip", 0.095, "torso", 0.0), ("left_collar", "right_collar", 0.07, "torso", 0.0),
    ("left_collar", "left_shoulder", 0.06, "torso", 0.0), ("right_collar", "right_shoulder", 0.06, "torso", 0.0),
    ("neck", "head", 0.055, "head", 0.0),
    ("left_shoulder", "left_elbow", 0.05, "left", 0.0), ("right_shoulder", "right_elbow", 0.05, "right", 0.0),
    ("left_elbow", "left_wrist", 0.042, "left", 0.0), ("right_elbow", "right_wrist", 0.042, "right", 0.0),
    ("left_wrist", "left_hand", 0.036, "left", 0.7), ("right_wrist", "right_hand", 0.036, "right", 0.7),
    ("left_hip", "left_knee", 0.075, "left", 0.0), ("right_hip", "right_knee", 0.075, "right", 0.0),
    ("left_knee", "left_ankle", 0.055, "left", 0.0), ("right_knee", "right_ankle", 0.055, "right", 0.0),
    ("left_ankle", "left_foot", 0.045, "left", 0.5), ("right_ankle", "right_foot", 0.045, "right", 0.5),
)


def _unit_capsule(n_lat: int = 7, n_lon: int = 10):
    """A unit-radius sphere split at the equator (odd ring count, so the band across the equator becomes the
    cylinder when the upper half is moved up): vertices (V, 3), faces (F, 3), upper-half mask (V,)."""
    lat = np.linspace(0, math.pi, n_lat + 2)[1:-1]          # rings, poles excluded
    lon = np.linspace(0, 2 * math.pi, n_lon, endpoint=False)
    ring = np.stack([np.outer(np.sin(lat), np.cos(lon)), np.outer(np.sin(lat), np.sin(lon)),
                     np.repeat(np.cos(lat)[:, None], n_lon, 1)], -1).reshape(-1, 3)
    verts = np.concatenate([ring, [[0, 0, 1], [0, 0, -1]]])
    top, bottom = len(ring), len(ring) + 1
    faces = []
    for i in range(n_lat - 1):
        for k in range(n_lon):
            a, b = i * n_lon + k, i * n_lon + (k + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [(a, c, b), (b, c, d)]
    for k in range(n_lon):
        faces.append((top, k, (k + 1) % n_lon))
        last = (n_lat - 1) * n_lon
        faces.append((bottom, last + (k + 1) % n_lon, last + k))
    return verts, np.array(faces, dtype=np.int64), verts[:, 2] > 0


_CAPSULE_VERTS, _CAPSULE_FACES, _CAPSULE_UPPER = _unit_capsule()


def _capsules(p: np.ndarray, q: np.ndarray, radius: np.ndarray):
    """Capsule meshes between points p and q (B, 3) with radii (B,): vertices (B·V, 3), faces (B·F, 3),
    outward winding (counter-clockwise seen from outside)."""
    axis = q - p
    length = np.linalg.norm(axis, axis=1)
    z = np.where(length[:, None] > 1e-9, axis / np.maximum(length, 1e-9)[:, None], [0.0, 1.0, 0.0])
    helper = np.where(np.abs(z[:, :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    local = _CAPSULE_VERTS[None] * radius[:, None, None]                      # (B, V, 3)
    local[..., 2] += np.where(_CAPSULE_UPPER, 1.0, 0.0)[None] * length[:, None]
    frame = np.stack([x, y, z], 1)                                           # (B, 3, 3) rows
    verts = p[:, None, :] + local @ frame                                   # (B, V, 3)
    nv = len(_CAPSULE_VERTS)
    faces = _CAPSULE_FACES[None] + (np.arange(len(p)) * nv)[:, None, None]
    return verts.reshape(-1, 3), faces.reshape(-1, 3)


def capsule_mesh(joints: np.ndarray):
    """A capsule figure around posed joints (24, 3): vertices (V, 3), faces (F, 3), face colours (F, 3)."""
    starts = np.array([joints[J[a]] for a, *_ in BONES])
    ends = np.array([joints[J[b]] for _, b, *_ in BONES])
    ext = np.array([e for *_, e in BONES])[:, None]
    ends = ends + ext * (ends - starts)
    radius = np.array([r for _, _, r, _, _ in BONES])
    keys = [c for _, _, _, c, _ in BONES]
    # Head: a sphere above the head joint, along the neck direction.
    up = joints[J["head"]] - joints[J["neck"]]
    centre = joints[J["head"]] + 0.05 * up / (np.linalg.norm(up) + 1e-12)
    starts, ends = np.vstack([starts, centre]), np.vstack([ends, centre])
    radius, keys = np.append(radius, 0.105), keys + ["head"]
    verts, faces = _capsules(starts, ends, radius)
    colours = np.repeat(np.array([COLOURS[k] for k in keys], dtype=np.float64), len(_CAPSULE_FACES), axis=0)
    return verts, faces, colours


def add_nose(verts, faces, colours, head_rotation: np.ndarray, head_joint: np.ndarray, neck_joint: np.ndarray):
    """Append a small nose sphere in front of the face (the head's world +Z), so images show which way the
    head faces."""
    up = head_joint - neck_joint
    up /= np.linalg.norm(up) + 1e-12
    tip = head_joint + 0.04 * up + 0.095 * head_rotation[:, 2]
    v, f = _capsules(tip[None], tip[None], np.array([0.03]))
    return (np.concatenate([verts, v]), np.concatenate([faces, f + len(verts)]),
            np.concatenate([colours, np.tile(COLOURS["nose"], (len(f), 1))]))


# --- camera ---------------------------------------------------------------------------------------------

@dataclass
class Camera:
    """Pinhole camera. world_to_camera: (3, 3) rotation W; translation: (3,) t (camera = W·p + t);
    fx, fy, cx, cy: pixels; size: image side in pixels."""
    world_to_camera: np.ndarray
    translation: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    size: int

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) SMPL-frame points → camera frame."""
        return points @ self.world_to_camera.T + self.translation

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) SMPL-frame points → (..., 2) pixel coordinates (x right, y down)."""
        c = self.to_camera(points)
        return np.stack([self.fx * c[..., 0] / c[..., 2] + self.cx, self.fy * c[..., 1] / c[..., 2] + self.cy], -1)


def look_at_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """World→camera rotation (3, 3) of a camera on a sphere around the body: yaw about +Y from the front
    (+Z side, where the body faces), pitch > 0 looking down from above. Yaw 0, pitch 0 gives diag(1, −1, −1)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    position = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    forward = -position                                   # camera +Z looks at the body
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def framing_camera(world_to_camera: np.ndarray, centre: np.ndarray, points: np.ndarray,
                   size: int = IMAGE_SIZE) -> Camera:
    """A camera at ``CAMERA_DISTANCE`` from ``centre`` with rotation W, its focal length and principal point
    chosen so ``points`` (N, 3) fill ``FILL`` of a ``size``-pixel square image, centred (a person crop)."""
    t = np.array([0.0, 0.0, CAMERA_DISTANCE]) - world_to_camera @ centre
    c = points @ world_to_camera.T + t
    xy = c[:, :2] / c[:, 2:3]
    lo, hi = xy.min(0), xy.max(0)
    f = FILL * size / max(float((hi - lo).max()), 1e-6)
    cx, cy = size / 2 - f * (lo[0] + hi[0]) / 2, size / 2 - f * (lo[1] + hi[1]) / 2
    return Camera(world_to_camera, t, f, f, cx, cy, size)


# --- rasteriser -----------------------------------------------------------------------------------------

def rasterize(verts_cam: np.ndarray, faces: np.ndarray, colours: np.ndarray, camera: Camera,
              background=BACKGROUND, cull_back_faces: bool = True):
    """Z-buffered, flat-shaded triangles. verts_cam: (V, 3) camera-frame vertices (z > 0); faces: (F, 3)
    wound counter-clockwise seen from outside (needed only for ``cull_back_faces``, which skips the faces
    turned away from the camera: half the work for a closed mesh); colours: (F, 3) 0–255.
    Returns (rgb (H, W, 3) uint8, depth (H, W) float with inf for background)."""
    size = camera.size
    corner = verts_cam[faces]                                               # (F, 3, 3)
    normal = np.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])
    if cull_back_faces:
        front = (normal * corner[:, 0]).sum(1) < 0
        faces, colours, corner, normal = faces[front], colours[front], corner[front], normal[front]
    uv = np.stack([camera.fx * verts_cam[:, 0] / verts_cam[:, 2] + camera.cx,
                   camera.fy * verts_cam[:, 1] / verts_cam[:, 2] + camera.cy], -1)
    tri_uv, tri_z = uv[faces], verts_cam[faces][..., 2]                    # (F, 3, 2), (F, 3)

    # Flat shading from the face normal, turned toward the camera.
    normal = normal / (np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12)
    centroid = corner.mean(1)
    normal *= np.where((normal * centroid).sum(1) > 0, -1.0, 1.0)[:, None]
    light = -LIGHT_DIR / np.linalg.norm(LIGHT_DIR)
    shade = 0.35 + 0.65 * np.clip(normal @ light, 0, 1)
    face_rgb = np.clip(colours * shade[:, None], 0, 255)

    # Per face, the barycentric coordinates l0, l1 and the depth as planes over the pixel: a·x + b·y + c.
    a, b, c = tri_uv[:, 0], tri_uv[:, 1], tri_uv[:, 2]                      # (F, 2) each
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = (np.abs(area) > 1e-9) & (tri_z.min(1) > 1e-3)
    keep &= (tri_uv.max(1) >= 0).all(1) & (tri_uv.min(1) <= size).all(1)
    a, b, c, area, tri_uv, tri_z, face_rgb = (x[keep] for x in (a, b, c, area, tri_uv, tri_z, face_rgb))
    l0 = np.stack([b[:, 1] - c[:, 1], c[:, 0] - b[:, 0], b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0]], 1) / area[:, None]
    l1 = np.stack([c[:, 1] - a[:, 1], a[:, 0] - c[:, 0], c[:, 0] * a[:, 1] - c[:, 1] * a[:, 0]], 1) / area[:, None]
    l2 = np.array([0.0, 0.0, 1.0]) - l0 - l1
    depth_plane = l0 * tri_z[:, :1] + l1 * tri_z[:, 1:2] + l2 * tri_z[:, 2:]
    planes = np.concatenate([l0, l1, l2, depth_plane], 1)                   # (F, 12)

    # Candidate pixels: the pixel centres (px + 0.5) inside each face's bounding box; a sub-pixel face that
    # covers no centre gets none (a closed mesh leaves no gap: its neighbours cover every centre).
    lo = np.clip(np.ceil(tri_uv.min(1) - 0.5), 0, size).astype(np.int64)
    hi = np.clip(np.floor(tri_uv.max(1) - 0.5), -1, size - 1).astype(np.int64)
    w, h = np.maximum(hi - lo + 1, 0)[:, 0], np.maximum(hi - lo + 1, 0)[:, 1]
    counts = w * h
    face_of = np.repeat(np.arange(len(planes)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    wf = np.maximum(w[face_of], 1)
    px = lo[face_of, 0] + k % wf
    py = lo[face_of, 1] + k // wf
    q = planes[face_of]                                                     # (N, 12)
    x, y = px + 0.5, py + 0.5
    bary0 = q[:, 0] * x + q[:, 1] * y + q[:, 2]
    bary1 = q[:, 3] * x + q[:, 4] * y + q[:, 5]
    bary2 = q[:, 6] * x + q[:, 7] * y + q[:, 8]
    inside = (bary0 >= 0) & (bary1 >= 0) & (bary2 >= 0)
    z = (q[:, 9] * x + q[:, 10] * y + q[:, 11])[inside]
    pix, face_of = (py * size + px)[inside], face_of[inside]

    # Z-buffer: the nearest fragment per pixel.
    order = np.lexsort((z, pix))
    pix, z, face_of = pix[order], z[order], face_of[order]
    first = np.flatnonzero(np.diff(pix, prepend=-1))
    rgb = np.empty((size * size, 3), dtype=np.uint8)
    rgb[:] = background
    depth = np.full(size * size, np.inf)
    rgb[pix[first]] = face_rgb[face_of[first]].astype(np.uint8)
    depth[pix[first]] = z[first]
    return rgb.reshape(size, size, 3), depth.reshape(size, size)


# --- posed bodies ---------------------------------------------------------------------------------------

def load_default_body():
    """The mannequin ``Body`` when ``smpl_rig.body.load("mannequin")`` works here, else None (capsules)."""
    try:
        from smpl_rig import body as body_module
        return body_module.load("mannequin")
    except Exception:  # not installed yet or unavailable: the capsule figure stands in
        return None


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume of a closed mesh: positive when faces wind counter-clockwise seen from outside."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float((a * np.cross(b, c)).sum() / 6)


def _mesh_colours(body, faces: np.ndarray) -> np.ndarray:
    """Face colours for a skinned body from each face's dominant joint (left warm, right cool)."""
    from smpl_rig.skeleton import JOINT_NAMES
    part = body.weights.argmax(1)[faces[:, 0]]
    trunk = {J["left_hip"], J["right_hip"], J["left_collar"], J["right_collar"]}  # coloured with the torso

    def region(j: int) -> str:
        name = JOINT_NAMES[j]
        if j in trunk:
            return "torso"
        return "left" if name.startswith("left_") else "right" if name.startswith("right_") else \
            "head" if j == J["head"] else "torso"

    keys = np.array([region(j) for j in range(24)])
    return np.array([COLOURS[k] for k in keys[part]], dtype=np.float64)


_BODY_FACES: dict = {}


def _body_faces(body):
    """Faces wound outward and their colours for a body, computed once per body object."""
    key = id(body)
    if key not in _BODY_FACES or _BODY_FACES[key][0] is not body:
        faces = np.asarray(body.faces, dtype=np.int64)
        if _signed_volume(np.asarray(body.vertices, dtype=np.float64), faces) < 0:
            faces = faces[:, ::-1].copy()
        _BODY_FACES[key] = (body, faces, _mesh_colours(body, faces))
    return _BODY_FACES[key][1], _BODY_FACES[key][2]


def posed_mesh(rotmats: np.ndarray, body=None):
    """Mesh of a pose (24, 3, 3) in the SMPL frame: (vertices (V, 3), faces (F, 3), colours (F, 3),
    joints (24, 3)). Uses ``body`` (a ``smpl_rig.body.Body``) when given, else capsules on ``REST_JOINTS``."""
    if body is not None:
        verts, joints = body.pose(rotmats)
        faces, colours = _body_faces(body)
    else:
        joints = forward_kinematics(REST_JOINTS, rotmats).joints
        verts, faces, colours = capsule_mesh(joints)
    world_rot = forward_kinematics(REST_JOINTS if body is None else body.rest_joints, rotmats).rotations
    verts, faces, colours = add_nose(verts, faces, colours, world_rot[J["head"]], joints[J["head"]], joints[J["neck"]])
    return np.asarray(verts, dtype=np.float64), faces, colours, np.asarray(joints, dtype=np.float64)


@dataclass
class Render:
    """One rendered view. image: (H, W, 3) uint8; mask: (H, W) bool silhouette; camera: the ``Camera``;
    joints_2d: (24, 2) projected joints; global_orient_camera: (3, 3) W·R0, the image→pose target for joint 0;
    view_yaw_deg / view_pitch_deg: the viewpoint."""
    image: np.ndarray
    mask: np.ndarray
    camera: Camera
    joints_2d: np.ndarray
    global_orient_camera: np.ndarray
    view_yaw_deg: float
    view_pitch_deg: float


def render_pose(rotmats: np.ndarray, view_yaw_deg: float = 0.0, view_pitch_deg: float = 0.0,
                size: int = IMAGE_SIZE, body=None) -> Render:
    """Render a pose (24, 3, 3), SMPL frame, from a camera at the given yaw/pitch around the body."""
    rotmats = np.asarray(rotmats, dtype=np.float64)
    if rotmats.shape != (24, 3, 3):
        raise ValueError(f"expected rotation matrices (24, 3, 3), got shape {rotmats.shape}")
    verts, faces, colours, joints = posed_mesh(rotmats, body)
    w = look_at_rotation(view_yaw_deg, view_pitch_deg)
    centre = 0.5 * (verts.min(0) + verts.max(0))
    camera = framing_camera(w, centre, verts, size)
    image, depth = rasterize(camera.to_camera(verts), faces, colours, camera)
    return Render(image=image, mask=np.isfinite(depth), camera=camera, joints_2d=camera.project(joints),
                  global_orient_camera=w @ rotmats[0], view_yaw_deg=view_yaw_deg, view_pitch_deg=view_pitch_deg)


def random_view(rng) -> tuple[float, float]:
    """A viewpoint: yaw within ±60°, a slight pitch (−5° … 20°, mostly looking a little down)."""
    return float(rng.uniform(-60, 60)), float(rng.uniform(-5, 20))


def save_png(image: np.ndarray, path) -> None:
    from PIL import Image
    Image.fromarray(image).save(path, optimize=False)
