"""The study layer: experiment files expanded into cells, run as dask tasks, and reported.

- `spec`: an ``experiments/<name>.toml`` file, validated, expanded into cells (one config each);
- `cells`: each cell's stage keys, the shared upstream stages, and its state (done, running, ...);
- `execute`: shared stages once in this process, then the cells concurrently on a dask client;
- `report`: learning curves and tables from the cells' cached logs.
"""
