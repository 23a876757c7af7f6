"""Data loading: readers, pairing, splits, checks, named datasets and augmentation."""

from samsp.data.checks import CheckReport, Problem, check_pairs
from samsp.data.io import decode_image, load_pil, read_image, read_mask, read_pair, require_same_size
from samsp.data.named import DATASETS, default_cache_dir, fetch, pranet_split
from samsp.data.pairs import IMAGE_EXTENSIONS, Pair, find_images, find_pairs, is_image_file
from samsp.data.splits import random_split, read_csv_pairs, read_id_list, select, write_split
from samsp.data.transforms import DEFAULT_AUGMENT, Augment, build_augment

__all__ = [
    "DATASETS",
    "DEFAULT_AUGMENT",
    "IMAGE_EXTENSIONS",
    "Augment",
    "CheckReport",
    "Pair",
    "Problem",
    "build_augment",
    "check_pairs",
    "decode_image",
    "default_cache_dir",
    "fetch",
    "find_images",
    "find_pairs",
    "is_image_file",
    "load_pil",
    "pranet_split",
    "random_split",
    "read_csv_pairs",
    "read_id_list",
    "read_image",
    "read_mask",
    "read_pair",
    "require_same_size",
    "select",
    "write_split",
]
