"""Inference helpers around a U-Net: sliding-window inference with Gaussian blending, image reading and
writing, and loading a model from weights + a JSON config."""
