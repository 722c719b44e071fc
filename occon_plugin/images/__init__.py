"""Listing datasets as relative image paths (ImageFolder conventions) and loading images by one
decode rule (bad files are reported, not fatal)."""
from occon_plugin.images.check import CheckReport, check_images, examples, fingerprints
from occon_plugin.images.listing import (IMAGE_EXTENSIONS, SKIP_KINDS, DatasetError, DatasetNotFoundError, ImageList,
                                         is_listable_file, is_store_dir, list_images)
from occon_plugin.images.loading import (BadImageError, ImageInfo, ReadImage, bytes_fingerprint, file_fingerprint,
                                         image_size, inspect_image, load_image, load_pil_image, read_image)

__all__ = ["IMAGE_EXTENSIONS", "SKIP_KINDS", "DatasetError", "DatasetNotFoundError", "ImageList", "is_listable_file", "is_store_dir",
           "list_images", "BadImageError", "ImageInfo", "ReadImage", "bytes_fingerprint", "file_fingerprint", "image_size", "inspect_image",
           "load_image", "load_pil_image", "read_image", "CheckReport", "check_images", "examples", "fingerprints"]
