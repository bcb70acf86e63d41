"""Raster I/O: windowed reads, Cloud-Optimized GeoTIFF writing, /vsis3/, CRSs."""
