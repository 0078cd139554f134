"""mano_jax: a standalone, pure-JAX MANO hand layer.

Depends only on jax and numpy (scipy is not needed, even for the official ``.pkl`` files).

- ``ManoModel``: the model arrays as a pytree (side and kinematic tree static).
- ``load(path)`` / ``save_npz(model, path)``: official MANO ``.pkl`` (no chumpy needed) or ``.npz``.
- ``synthetic(side, seed)``: a procedural stand-in hand with MANO's exact array shapes.
- ``forward(model, pose, betas, trans=None, *, ncomps, use_pca, flat_hand_mean, center_idx)``:
  manopth ``ManoLayer`` semantics, output in metres.
- rotations (``geometry``): ``rodrigues``, ``matrix_to_axis_angle``, ``slerp_axis_angle`` (geodesic
  interpolation), ``rotation_6d_to_matrix`` / ``matrix_to_rotation_6d`` (continuous 6-D
  representation), ``geodesic_angle``, ``chordal_mean_axis_angle`` / ``nearest_rotation`` (mean rotation);
- pieces: ``blend_shapes``, ``pose_features``,
  ``kinematic_chain``, ``skin``, ``pca_to_axis_angle``, ``axis_angle_to_pca``.
"""

from mano_jax.constants import (
    JOINT_NAMES,
    MANO_JOINT_NAMES,
    MANOPTH_JOINT_ORDER,
    NUM_BETAS,
    NUM_FACES,
    NUM_JOINTS,
    NUM_VERTS,
    OUT_PARENTS,
    PARENTS,
    TIP_VERTEX_IDS,
)
from mano_jax.geometry import (
    chordal_mean_axis_angle,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    nearest_rotation,
    quaternion_to_axis_angle,
    rodrigues,
    rotation_6d_to_matrix,
    slerp_axis_angle,
)
from mano_jax.io import load, read_official_pickle, save_npz
from mano_jax.layer import (
    axis_angle_to_pca,
    blend_shapes,
    forward,
    full_pose,
    kinematic_chain,
    pca_to_axis_angle,
    pose_blend_shapes,
    pose_features,
    regress_joints,
    skin,
)
from mano_jax.model import ARRAY_SHAPES, ManoFileError, ManoModel, make_model
from mano_jax.synthetic_hand import synthetic, synthetic_pose_std

__all__ = [
    "ARRAY_SHAPES", "JOINT_NAMES", "MANO_JOINT_NAMES", "MANOPTH_JOINT_ORDER", "NUM_BETAS",
    "NUM_FACES", "NUM_JOINTS", "NUM_VERTS", "OUT_PARENTS", "PARENTS", "TIP_VERTEX_IDS",
    "ManoFileError", "ManoModel", "axis_angle_to_pca", "blend_shapes", "chordal_mean_axis_angle",
    "forward", "full_pose", "geodesic_angle", "matrix_to_rotation_6d", "rotation_6d_to_matrix",
    "kinematic_chain", "load", "make_model", "matrix_to_axis_angle", "matrix_to_quaternion",
    "nearest_rotation", "pca_to_axis_angle", "pose_blend_shapes", "pose_features", "quaternion_to_axis_angle",
    "read_official_pickle", "regress_joints", "rodrigues", "save_npz", "skin",
    "slerp_axis_angle", "synthetic", "synthetic_pose_std",
]
