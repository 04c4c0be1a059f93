"""Model configs (files, folders, the built-in catalog) and the fused-MoE shapes derived from them."""

from tuner.models.config import CatalogEntry, ModelConfig, list_catalog, load_model_config
from tuner.models.shapes import derive_moe_shape, dtype_label

__all__ = [
    "CatalogEntry",
    "ModelConfig",
    "derive_moe_shape",
    "dtype_label",
    "list_catalog",
    "load_model_config",
]
