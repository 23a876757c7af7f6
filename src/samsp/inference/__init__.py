"""Prediction with no prompt: pre/post-processing, the one batched predictor, file outputs, export (safetensors or
ONNX) and the torch-free ONNX Runtime engine."""
