"""Reuse cost: fingerprint time for 20k small files (cold = hash every file, warm = stat memo), and
the wall time of a miss (a real run) vs a hit (served from the cache). Run: PYTHONPATH=. python bench/reuse_cost.py"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from prs_nb import Input, Output, RunFunction, parallel_run_function
from prs_nb.cache import CACHE_DIR, fingerprint

SCRIPT = "import os\ndef run(mini_batch):\n    return [os.path.getsize(p) for p in mini_batch]\n"


def main(n_files: int = 20000) -> None:
    root = tempfile.mkdtemp(prefix="prs_reuse_")
    try:
        data = os.path.join(root, "data")
        for d in range(20):
            os.makedirs(os.path.join(data, f"d{d:02d}"))
        for i in range(n_files):
            with open(os.path.join(data, f"d{i % 20:02d}", f"{i:06d}.txt"), "w") as fh:
                fh.write(f"row {i}\n" * 8)
        os.makedirs(os.path.join(root, "src"))
        with open(os.path.join(root, "src", "score.py"), "w") as fh:
            fh.write(SCRIPT)
        job = parallel_run_function(
            name="bench", inputs={"data": Input(type="uri_folder")}, outputs={"o": Output()},
            input_data="${{inputs.data}}", mini_batch_size="100",
            task=RunFunction(code=os.path.join(root, "src"), entry_script="score.py", append_row_to="${{outputs.o}}"))
        bound = job(data=Input(type="uri_folder", path=data))
        runs = os.path.join(root, "runs")

        def fp() -> float:
            t = time.perf_counter()
            fingerprint(bound.spec, base_dir=root, code_dir=os.path.join(root, "src"), functions_blob=None, argv=[],
                        run_dir="x", runs_root=runs)
            return time.perf_counter() - t

        cold = fp()
        warm = min(fp() for _ in range(3))
        shutil.rmtree(os.path.join(runs, CACHE_DIR))
        t = time.perf_counter()
        miss = bound.run(progress=False, runs_root=runs)
        t_miss = time.perf_counter() - t
        t = time.perf_counter()
        hit = bound.run(progress=False, runs_root=runs)
        t_hit = time.perf_counter() - t
        t = time.perf_counter()
        off = bound.run(progress=False, runs_root=runs, is_deterministic=False)
        t_off = time.perf_counter() - t
        assert not miss.reused and hit.reused and not off.reused
        print(f"{n_files} files: fingerprint cold {cold:.2f} s, warm (stat memo) {warm:.2f} s")
        print(f"job on {n_files} files, local backend: miss (run + store) {t_miss:.2f} s, hit {t_hit:.2f} s, "
              f"reuse off {t_off:.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
