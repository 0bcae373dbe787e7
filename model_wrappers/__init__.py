"""lmms-eval model classes: thin adapters over :mod:`lmms_futuremask`."""
