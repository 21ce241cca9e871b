"""Encoders (timm), self-supervised methods, segmentation, encoder export/import."""

from rts_ssl.models.export import export_encoder, load_encoder

__all__ = ["export_encoder", "load_encoder"]
