"""Stereo: epipolar rectification, matching, triangulation, rasterization and DSM fusion."""
