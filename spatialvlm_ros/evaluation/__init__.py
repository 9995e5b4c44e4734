"""Scoring distance estimates against ground truth, and the plots and summaries of a run.

* :mod:`~spatialvlm_ros.evaluation.metrics`: MAE, Spearman, ratio bands, latency;
* :mod:`~spatialvlm_ros.evaluation.report`: plots and summaries shared by the demo and bag replay;
* :mod:`~spatialvlm_ros.evaluation.vlm_benchmark`: a spatial VLM scored with the paper's metrics on
  held-out spatial VQA and along approach trajectories (``spatialvlm evaluate``).
"""
