"""Load and validate mappings/ and site overlays."""
