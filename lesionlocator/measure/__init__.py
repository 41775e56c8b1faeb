"""Measure: per-lesion volume, RECIST diameters, centroid and intensity; RECIST 1.1 and volumetric
response."""
