"""Prediction with no prompt: pre/post-processing, the one batched predictor, file outputs, export."""
