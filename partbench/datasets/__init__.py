"""Data sets: part patches from keypoints (CUB, COCO), segmentation sets, synthetic twins."""

# --- part patch exports (owner: part-patch datasets) ---

# --- segmentation exports (owner: segmentation datasets) ---
from partbench.datasets.segmentation import SEG_DATASETS as SEG_DATASETS
from partbench.datasets.segmentation import SegDatasetSpec as SegDatasetSpec
from partbench.datasets.segmentation import SegmentationDataset as SegmentationDataset
from partbench.datasets.segmentation import SegSample as SegSample
from partbench.datasets.segmentation import check_segmentation as check_segmentation
from partbench.datasets.segmentation import load_label as load_label
from partbench.datasets.segmentation import seg_samples as seg_samples
from partbench.datasets.synth_seg import write_segmentation_sets as write_segmentation_sets
