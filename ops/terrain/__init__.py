"""Terrain: DEM access and filling, the geoid and vertical references."""
