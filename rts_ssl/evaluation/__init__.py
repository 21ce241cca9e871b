"""Pixel and object metrics, label-efficiency aggregation and plots."""
