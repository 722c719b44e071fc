"""Listing datasets as relative image paths and loading images robustly."""
from occon_plugin.images.listing import IMAGE_EXTENSIONS, ImageList, list_images
from occon_plugin.images.loading import BadImageError, image_size, load_image

__all__ = ["IMAGE_EXTENSIONS", "ImageList", "list_images", "BadImageError", "image_size", "load_image"]
