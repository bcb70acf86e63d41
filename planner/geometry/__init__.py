"""Geometry, the planner's bottom layer: windows, geoboxes, tile grids and the one UTM rule (all that ops takes from the planner)."""
