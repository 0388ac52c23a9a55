"""Image and video I/O: decode, encode, convert and resize, list, grids, atomic writes, PyAV clips."""
