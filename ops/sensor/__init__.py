"""Sensor models: RPCs (evaluation, fitting, formats, sidecars, checks), acquisition metadata and footprints."""
