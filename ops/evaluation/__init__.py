"""Accuracy of products against references: DSM statistics, ortho quality, GDAL's RPC warper."""
