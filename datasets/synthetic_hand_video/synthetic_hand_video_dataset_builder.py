"""synthetic_hand_video: rendered synthetic hand videos (see ``handprop_jax.data.synthetic``).

Build it with ``handprop data build synthetic_hand_video --data-dir DIR [--config CFG]`` (the config
file's ``data.synth_videos``, ``data.synth_frames``, ``data.image_size`` and ``data.synth_seed`` set
the generation ``SynthSpec``), or in Python::

    from handprop_datasets.synthetic_hand_video import Builder
    Builder(spec=SynthSpec(...), data_dir=DIR).download_and_prepare()

The builder has no builder configs: whatever the spec, the files go to DIR/synthetic_hand_video/1.0.0
(so that ``tfds.data_source("synthetic_hand_video", data_dir=DIR, split=...)`` reads whatever was
built in DIR); the spec is stored in the dataset metadata (``metadata.json``) and
``handprop_jax.data.build.build`` rebuilds when it differs from the requested one. The image feature
leaves the side unspecified for the same reason (every image of one build has the spec's side).

Records are written without shuffling, grouped by video and in frame order. One example = one frame
with the features of ``handprop_jax.data.features.frame_features``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from handprop_jax.data.features import encode_png, frame_features
from handprop_jax.data.synthetic import SPLITS, SynthSpec, iterate_split, spec_from_config


class Builder(tfds.core.GeneratorBasedBuilder):
    """Rendered synthetic hand videos with full MANO annotations on every frame."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # tfds locates a builder's code with importlib_resources, which tfds does not install; the
    # module path is all it needs.
    code_path = epath.Path(__file__)

    def __init__(self, *, spec: SynthSpec | None = None, **kwargs):
        """Args: spec: what to generate (default: the demo's 40/6/10 videos x 128 frames at 64 px);
        other arguments as tfds (``data_dir``, ``file_format`` — array_record by default)."""
        kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
        self.spec = SynthSpec() if spec is None else spec
        super().__init__(**kwargs)

    @classmethod
    def builder_kwargs_from_data(cls, data_config, builder_config: str | None = None) -> dict:
        """Hook of ``handprop_jax.data.build``: builder arguments for a ``DataConfig``."""
        if builder_config:
            raise ValueError(f"synthetic_hand_video has no builder configs (got {builder_config!r}); "
                             "set data.synth_videos / synth_frames / image_size / synth_seed instead")
        return {"spec": spec_from_config(data_config)}

    def stored_spec(self) -> dict | None:
        """The SynthSpec (as a dict) of the files prepared in ``data_dir``, or None."""
        path = epath.Path(self.data_path) / "metadata.json"
        if not path.exists():
            return None
        return json.loads(path.read_text()).get("spec")

    def stale_reason(self) -> str | None:
        """Hook of ``handprop_jax.data.build``: why the prepared files differ from this config."""
        stored = self.stored_spec()
        wanted = json.loads(json.dumps(dataclasses.asdict(self.spec)))
        if stored is None or stored == wanted:
            return None
        diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
        return "spec differs (stored, requested): " + ", ".join(f"{k}={a}->{b}" for k, (a, b) in diff.items())

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.spec
        return self.dataset_info_from_configs(
            features=frame_features(None),
            disable_shuffling=True,  # records stay grouped by video, in frame order
            description="Rendered MANO hand videos with smooth random motion (handprop).",
            metadata=tfds.core.MetadataDict(spec=dataclasses.asdict(spec)),
        )

    def _split_generators(self, dl_manager):
        spec = self.spec
        return {split: self._generate_examples(split) for split in SPLITS if spec.num_videos(split) > 0}

    def _generate_examples(self, split: str):
        spec = self.spec
        for video in iterate_split(spec, split):
            for t in range(spec.frames):
                example = {k: (v if isinstance(v, str) else v[t]) for k, v in video.items()}
                example["image"] = encode_png(example["image"])
                example["video_id"] = np.int32(example["video_id"])
                yield f"{int(example['video_id']):05d}_{t:06d}", example
