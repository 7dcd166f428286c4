"""Host wrappers, one per kernel: check shapes and dtypes, choose launch geometry, enqueue.

Every function takes a `clcnn.device.Device` first and pyopencl arrays (float32, NCHW,
contiguous, offset 0) and returns new arrays from the device's memory pool.
"""
