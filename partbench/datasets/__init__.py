"""Data sets: part patches from keypoints (CUB, COCO), segmentation sets, synthetic twins."""

# --- part patch exports (owner: part-patch datasets) ---

# --- segmentation exports (owner: segmentation datasets) ---
