"""Per-language text rules shipped with lowres (TOML files, see ``lowres.data.text.load_rules``)."""
