"""Class names of the segmentation sets, where they are known (after `reduce_zero_label`).

ADE20K-150: the standard ADEChallenge 2016 list (as mmseg orders it). LIP: its 19 part labels.
Pascal-Object: the study's 16 VOC classes (VOC-20 without boat, chair, diningtable, sofa). The
study's lists for ADE20K-Part, Pascal-Part and ADE20K-Object are placeholders (its own comment says
"class name is not right"), so those sets get generated names (`part_000`, `object_000`, ...).
"""

from __future__ import annotations

ADE20K_150_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
    "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet",
    "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle",
    "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip

LIP_CLASSES: tuple[str, ...] = (
    "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants",
    "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg",
    "Left-shoe", "Right-shoe",
)  # fmt: skip

PASCAL_OBJECT_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "bottle", "bus", "car", "cat", "cow", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "train", "tvmonitor",
)  # fmt: skip


def generated_names(prefix: str, count: int) -> tuple[str, ...]:
    """Placeholder names `prefix_000`, `prefix_001`, ... for sets without a verified list."""
    return tuple(f"{prefix}_{i:03d}" for i in range(count))
