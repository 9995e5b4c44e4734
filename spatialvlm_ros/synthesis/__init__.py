"""The SpatialVLM data engine: images -> 3D scene records -> spatial VQA rows with metric truth.

Flow, one image at a time (each stage one module):

1. :mod:`~spatialvlm_ros.synthesis.sources`: samples from ``sim:N`` scenes, an image folder or a rosbag2 file;
2. :mod:`~spatialvlm_ros.synthesis.extract`: filter, objects expert, depth, then
   :mod:`~spatialvlm_ros.synthesis.lifting` (canonical frame from support pixels, every masked pixel
   snapped to depth edges and cleaned, upright boxes with exact extents) and
   :mod:`~spatialvlm_ros.synthesis.ambiguity` (background out, near-duplicates told apart);
3. :mod:`~spatialvlm_ros.synthesis.questions`: the 43 question types, phrased from
   :mod:`~spatialvlm_ros.vlm.templates`, rounded by :mod:`~spatialvlm_ros.synthesis.rounding`;
   :mod:`~spatialvlm_ros.synthesis.judge` drops (or flags) objects and answers the measurements cannot
   back, and gives every answer its uncertainty;
4. :mod:`~spatialvlm_ros.synthesis.writer`: the streaming, resumable dataset folder (its card counts what
   the judge dropped, by reason);
   :mod:`~spatialvlm_ros.synthesis.engine` drives it, :mod:`~spatialvlm_ros.cli.synthesize` is the door.

The experts come from :mod:`spatialvlm_ros.perception` (protocols in
:mod:`~spatialvlm_ros.perception.experts`, registered by name in :mod:`~spatialvlm_ros.perception.registry`,
selected in ``config/synthesis.yaml`` under ``experts``): an image filter (``none``, CLIP ``clip``), an
objects expert (``sim_oracle``; ``open_vocab``: OWLv2 + SAM + BLIP, with the floor / table mask), a depth
source (``sensor``; ``monocular``: Depth Anything) and a caption embedder (``char_ngram``; ``clip_text``).
A new expert implements the protocol and is registered there; nothing here changes.
"""
