"""ctest: ochre-native runs packages on the device they were compiled for, and refuses others.

    python native/ctest_device.py BINARY FIXTURE
The fixture's CPU packages, relabelled as CUDA packages (shapes.txt's `device cuda` line, as
`ochre export --format aoti --device cuda` writes it): where no CUDA GPU is, the binary must stop
with exit 2 and a line that names the folder and the fix, not crash inside the loader; a device
it does not know is refused the same way. Exits 77 (skipped) where a GPU is present: there the
relabelled CPU packages would be handed CUDA tensors, which proves nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    binary, fixture = (argv or sys.argv[1:])[:2]
    import torch

    if torch.cuda.is_available():
        print("a CUDA GPU is present: the refusal is for machines without one")
        return 77
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for device, says in (("cuda", "compiled for CUDA"), ("tpu", "expected cpu or cuda")):
            pkg = Path(tmp) / device
            shutil.copytree(Path(fixture) / "packages", pkg)
            with open(pkg / "shapes.txt", "a") as f:
                f.write(f"device {device}\n")
            r = subprocess.run([binary, "--packages", str(pkg), "--steps", "2"], capture_output=True, text=True)
            if r.returncode != 2 or says not in r.stderr or "re-export" not in r.stderr:
                failures.append(f"device {device}: exit {r.returncode}, stderr {r.stderr[-500:]!r}")
    print("\n".join(failures) or "refused CUDA packages without a GPU, and an unknown device, in one line each")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
