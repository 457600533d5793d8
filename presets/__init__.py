"""Training presets (TOML data) and their loader."""
