"""Device-parameter sweeps: ``xbar sweep`` and ``xbar report``.

``config``  the sweep file (TOML), checked in full before any work
``run``     one point of the grid, and the whole sweep over a pool
``pool``    a local process pool or a Dask cluster
``store``   the resumable Zarr store, written point by point
``report``  the table, figures and CSV of a store
``cli``     the two commands
"""
