"""Data sets: part patches from keypoints (CUB, COCO), segmentation sets, synthetic twins."""

# --- part patch exports (owner: part-patch datasets) ---
from partbench.datasets.check import check_all as check_all
from partbench.datasets.check import check_dataset as check_dataset
from partbench.datasets.check import check_parts as check_parts
from partbench.datasets.crops import PartItem as PartItem
from partbench.datasets.parts import PART_DATASETS as PART_DATASETS
from partbench.datasets.parts import PartDatasetSpec as PartDatasetSpec
from partbench.datasets.parts import part_images_dir as part_images_dir
from partbench.datasets.parts import part_patches as part_patches
from partbench.datasets.parts import resolve_data_root as resolve_data_root
from partbench.datasets.patch_loader import PatchImageDataset as PatchImageDataset
from partbench.datasets.patch_loader import collate_patch_groups as collate_patch_groups
from partbench.datasets.registry import dataset_info as dataset_info
from partbench.datasets.registry import dataset_present as dataset_present
from partbench.datasets.registry import list_datasets as list_datasets
from partbench.datasets.synth import write_synthetic as write_synthetic

# isort: split

# --- segmentation exports (owner: segmentation datasets) ---
from partbench.datasets.segmentation import SEG_DATASETS as SEG_DATASETS
from partbench.datasets.segmentation import SegDatasetSpec as SegDatasetSpec
from partbench.datasets.segmentation import SegmentationDataset as SegmentationDataset
from partbench.datasets.segmentation import SegSample as SegSample
from partbench.datasets.segmentation import check_segmentation as check_segmentation
from partbench.datasets.segmentation import load_label as load_label
from partbench.datasets.segmentation import seg_samples as seg_samples
from partbench.datasets.synth_seg import write_segmentation_sets as write_segmentation_sets
