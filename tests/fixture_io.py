"""Writes golden-value fixtures in the text format tests/fixture.h reads.
Used by the gen_*.py scripts, which run under Debian's /usr/bin/python3 with python3-torch."""
import numpy as np


def write(path, tensors, comment=""):
    """tensors: dict name -> array-like (torch tensors are converted); written in order."""
    with open(path, "w") as f:
        for line in comment.splitlines():
            f.write(f"# {line}\n")
        for name, t in tensors.items():
            if hasattr(t, "detach"):
                t = t.detach().cpu().numpy()
            a = np.asarray(t, dtype=np.float64)
            f.write(f"tensor {name} {a.ndim} {' '.join(str(d) for d in a.shape)}\n")
            f.write(" ".join(f"{v:.9g}" for v in a.reshape(-1)) + "\n")
