"""Writes .npy files with NumPy itself into tests/fixtures/data/, so test_data.c proves that
px_npy_read reads what np.save writes (versions 1.0, 2.0 and 3.0, several dtypes, and a
Fortran-order array it must refuse). Run with /usr/bin/python3 (Debian's python3-numpy)."""
import os

import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "data")
os.makedirs(out, exist_ok=True)

a = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5) / 4  # exact in float32
np.save(os.path.join(out, "np_f4_2x3x4.npy"), a)
np.save(os.path.join(out, "np_f8_3.npy"), np.array([0.5, -1e-3, 3e38], dtype=np.float64))
np.save(os.path.join(out, "np_i8_lengths.npy"), np.array([3, 1, 2, 4], dtype=np.int64))
np.save(os.path.join(out, "np_u1_2x2.npy"), np.array([[0, 255], [7, 128]], dtype=np.uint8))
np.save(os.path.join(out, "np_fortran.npy"), np.asfortranarray(a[0]))
with open(os.path.join(out, "np_v2_i2.npy"), "wb") as f:
    np.lib.format.write_array(f, np.array([-3, 0, 32767], dtype=np.int16), version=(2, 0))
with open(os.path.join(out, "np_v3_f4.npy"), "wb") as f:
    np.lib.format.write_array(f, np.array([[1.25]], dtype=np.float32), version=(3, 0))
