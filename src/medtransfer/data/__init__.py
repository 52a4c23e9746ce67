"""Data layer: NIfTI I/O, orientation, resampling, dataset layouts, validation, splits, cache, samplers."""
