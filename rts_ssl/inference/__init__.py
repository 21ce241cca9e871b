"""Scene-scale prediction: sliding windows, probability rasters, slump polygons."""
