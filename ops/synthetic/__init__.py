"""Synthetic pushbroom scenes with exact ground truth: terrain, rendering, defects."""
