"""The mapping data (TOML files), installed with the package as ckptkit.mappings and read
through ckptkit.mapdata; this file only makes the folder an importable resource package."""
