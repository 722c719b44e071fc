"""The mask store: ``masks/*.png`` + ``index.jsonl`` + ``manifest.json`` (docs/store-format.md)."""
from occon_plugin.store.format import (SCHEMA_VERSION, STATUS_OK, StoreEntry, find_mask_collisions, mask_from_u8,
                                       mask_png_problem, mask_relpath, mask_to_u8)
from occon_plugin.store.reader import Store, StoreError, UnverifiableStoreError, store_identity
from occon_plugin.store.validate import POLICIES, StoreMismatchError, ValidationReport, validate_store
from occon_plugin.store.writer import (ImageChangedError, StoreFolderError, StoreSettingsMismatchError,
                                       StoreSourceMismatchError, StoreWriter)

__all__ = ["SCHEMA_VERSION", "STATUS_OK", "StoreEntry", "find_mask_collisions", "mask_from_u8", "mask_relpath",
           "mask_to_u8", "mask_png_problem", "Store", "StoreError", "UnverifiableStoreError", "store_identity", "POLICIES", "StoreMismatchError", "ValidationReport",
           "validate_store", "ImageChangedError", "StoreFolderError", "StoreSettingsMismatchError", "StoreSourceMismatchError", "StoreWriter"]
