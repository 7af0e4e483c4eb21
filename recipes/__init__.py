"""Shipped recipes (TOML files; this file only makes the folder an importable package, so that
``importlib.resources`` finds the recipes when lowres is installed from a wheel)."""
