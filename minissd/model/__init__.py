"""The SSD network: base network and extra layers (backbone.py), prediction heads (heads.py),
and the ``SSD`` module that ties them to their default boxes (ssd.py)."""

from .ssd import (CONFIGS, MODELS, SSD, SSD300_CONFIG, TINY_CONFIG, SSDConfig, build_model,
                  model_config, ssd300_vgg16, ssd_tiny, tiny_config, with_aspect_ratios,
                  with_prior_scales, with_source_maps)

__all__ = ["SSD", "SSDConfig", "SSD300_CONFIG", "TINY_CONFIG", "ssd300_vgg16", "ssd_tiny",
           "build_model", "model_config", "tiny_config", "with_aspect_ratios", "with_source_maps",
           "with_prior_scales", "MODELS", "CONFIGS"]
