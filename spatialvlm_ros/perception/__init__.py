"""Perception experts behind small interfaces, serving the geometric estimator and the data engine.

* :mod:`~spatialvlm_ros.perception.experts`: the protocols (detect, segment, caption, ground, depth,
  filter, objects, embed) and the records they pass;
* :mod:`~spatialvlm_ros.perception.registry`: the experts configs choose by name, registered in one place;
* :mod:`~spatialvlm_ros.perception.grounding`: the offline grounders (colour prompt, simulator segmentation);
* :mod:`~spatialvlm_ros.perception.offline`: the other offline experts (no filter, simulator oracle,
  sensor depth, character n-gram embedder);
* :mod:`~spatialvlm_ros.perception.open_vocab`: the open-vocabulary grounder and objects expert;
* :mod:`~spatialvlm_ros.perception.hf`: the transformers models (OWLv2, SAM, BLIP, CLIP, Depth Anything).
"""
