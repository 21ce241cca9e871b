"""Data layer: sensors and bands, scenes, labels, tile store, splits, synthetic scenes."""
