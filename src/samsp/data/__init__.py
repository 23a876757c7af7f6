"""Data loading: readers, pairing, splits, checks, named datasets and augmentation (each imported on first use)."""

from samsp.lazy import lazy_exports

_PUBLIC = {
    **dict.fromkeys(("CheckReport", "Problem", "check_pairs"), "checks"),
    **dict.fromkeys(("decode_image", "load_pil", "read_image", "read_mask", "read_pair", "require_same_size"), "io"),
    **dict.fromkeys(("DATASETS", "default_cache_dir", "fetch", "pranet_split"), "named"),
    **dict.fromkeys(("IMAGE_EXTENSIONS", "Pair", "find_images", "find_pairs", "is_image_file"), "pairs"),
    **dict.fromkeys(("random_split", "read_csv_pairs", "read_id_list", "select", "write_split"), "splits"),
    **dict.fromkeys(("DEFAULT_AUGMENT", "Augment", "build_augment"), "transforms"),
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
