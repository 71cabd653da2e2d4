"""Converters from third-party checkpoint formats to `tron_pipelines` models (used by `conversion_scripts/`)."""
