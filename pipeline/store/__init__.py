"""Storage: the only package that imports h5py (episodes) and zarr (features)."""
