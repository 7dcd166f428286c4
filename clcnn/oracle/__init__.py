"""The NumPy reference for every op, forward and backward: plain, float64-capable, obviously
right. Imports nothing else of clcnn. Tests check each kernel against it and check its
backward against central finite differences."""
