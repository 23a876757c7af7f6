"""Scoring: per-image metrics, evaluating a model on labelled pairs, scoring folders of masks, reports."""
