"""MANO constants: kinematic tree, joint names and orders, fingertip vertices, array shapes."""

from __future__ import annotations

NUM_VERTS: int = 778
NUM_FACES: int = 1538
NUM_JOINTS: int = 16          # MANO skeleton joints (wrist + 5 fingers x 3)
NUM_OUT_JOINTS: int = 21      # skeleton joints + 5 fingertip vertices (manopth output)
NUM_BETAS: int = 10
NUM_POSE_FEATS: int = 135     # 15 non-root joints x 9 (R - I)

#: Parent of each of the 16 MANO joints (-1 for the wrist). MANO joint order:
#: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

#: Names of the 16 MANO skeleton joints, in MANO order.
MANO_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)

#: Fingertip vertex indices (thumb, index, middle, ring, pinky), per side.
TIP_VERTEX_IDS: dict[str, tuple[int, ...]] = {
    "right": (745, 317, 444, 556, 673),
    "left": (745, 317, 445, 556, 673),
}

#: Output joint i of ``forward`` is row MANOPTH_JOINT_ORDER[i] of
#: concat(16 skeleton joints in MANO order, 5 tips in thumb/index/middle/ring/pinky order).
MANOPTH_JOINT_ORDER: tuple[int, ...] = (
    0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

#: Names of the 21 output joints of ``forward`` (manopth order).
JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb1", "thumb2", "thumb3", "thumb_tip",
    "index1", "index2", "index3", "index_tip",
    "middle1", "middle2", "middle3", "middle_tip",
    "ring1", "ring2", "ring3", "ring_tip",
    "pinky1", "pinky2", "pinky3", "pinky_tip",
)

#: Parent of each of the 21 output joints (manopth order), for drawing skeletons.
OUT_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
