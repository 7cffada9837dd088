"""Validate a large generated JSONL file and report peak memory and throughput.

    python benchmarks/validate_memory.py --size-mb 1024

The target (issue 2): a 1 GB file validates with peak memory under 1 GB. The file is written once
to a temp folder (or --path), then `tuneloop data validate` runs in a child process so its peak
RSS is measured on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_file(path: Path, size_bytes: int) -> int:
    rng = random.Random(0)
    words = "order refund parcel router password invoice screen charger delivery account label".split()
    lines = 0
    with path.open("w") as f:
        while f.tell() < size_bytes:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
            row = {"messages": [{"role": "user", "content": f"{lines} {text}"},
                                {"role": "assistant", "content": rng.choice(words)}]}
            if lines % 10007 == 0:
                row = "{broken json"  # a few errors to report
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
            lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--path", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    path = args.path or folder / "big.jsonl"
    if not path.exists():
        started = time.perf_counter()
        lines = write_file(path, args.size_mb * 1024 * 1024)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB, {lines} lines) in "
              f"{time.perf_counter() - started:.0f}s")
    exe = Path(sys.executable).with_name("tuneloop")
    started = time.perf_counter()
    proc = subprocess.run([str(exe), "data", "validate", str(path), "--json"], capture_output=True, text=True,
                          env={**os.environ, "TUNELOOP_HOME": str(folder / "home")})
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads(proc.stdout)
    size_mib = path.stat().st_size / 2**20
    print(f"validated {report['rows']} rows ({size_mib:.0f} MiB) in {seconds:.0f}s = {size_mib / seconds:.1f} MiB/s; "
          f"errors {report['errors']}, warnings {report['warnings']}")
    print(f"peak RSS of the validating process: {peak_mib:.0f} MiB "
          f"({peak_mib / size_mib:.2f}x the file size; target < 1024 MiB)")


if __name__ == "__main__":
    main()
