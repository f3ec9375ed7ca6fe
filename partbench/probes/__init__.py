"""Probes on frozen features: retrieval, classification, segmentation, layer-wise curves."""
