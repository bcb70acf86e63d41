"""Orthorectification: the tile plan, the height model and the resampling kernel."""
