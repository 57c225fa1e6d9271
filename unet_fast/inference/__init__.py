"""Inference around a trained U-Net, on the engine or the reference model: image reading (headers first,
memory check, orientation) and writing (image_io, memory), the model card (model_card), the head's mask
rule and legend (masks, legend), sliding-window inference with Gaussian blending (sliding_window), one
image (segmenter.Segmenter) and many files, one bad file never stopping the rest (batch)."""
