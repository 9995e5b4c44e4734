"""Scoring distance estimates against ground truth, and the plots and summaries of a run."""
