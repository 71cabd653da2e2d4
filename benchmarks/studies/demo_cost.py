"""How well the cost line of ``tron demo`` (`tron_pipelines.commands.demo_app.request_units`) predicts a request's time.

Times requests of the page's handler (`TronDemo.generate_text` / `generate_class`, in-process, no server) on each
embedded pipeline at 4 images: candidates only, then Langevin steps without augmented copies, with 4 and with 16.
Prints, per setting, the measured seconds, the seconds of one candidate, and what a Langevin step costs in candidates
against the cost line's 2 + 0.5 x augmentations.

    OMP_NUM_THREADS=1 python benchmarks/studies/demo_cost.py
"""

import json
import statistics
import time

from tron_pipelines.commands.demo_app import (
    AUGMENTATION_UNITS,
    DEFAULT_PIPELINES,
    STEP_UNITS,
    TronDemo,
    load_pipelines,
)


IMAGES, CANDIDATES, STEPS, REPEATS = 4, 16, 10, 3


def seconds_of(demo: TronDemo, name: str, **settings) -> float:
    """The median seconds of ``REPEATS`` requests on the pipeline's first tab, after one untimed."""
    handler, values = demo.warm_up_request(name)
    values = {**values, "num_images": IMAGES, **settings}
    times = []
    for _ in range(REPEATS + 1):
        started = time.perf_counter()
        getattr(demo, handler)(**values)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    demo = TronDemo(load_pipelines(DEFAULT_PIPELINES), max_steps=STEPS)
    rows = []
    for name in demo.pipelines:
        candidates = seconds_of(demo, name, num_candidates=CANDIDATES, num_inference_steps=0)
        per_candidate = candidates / (IMAGES * CANDIDATES)
        for augmentations in (0, 4, 16):
            seconds = seconds_of(
                demo, name, num_candidates=1, num_inference_steps=STEPS, num_augmentations=augmentations
            )
            step = (seconds / IMAGES - per_candidate) / STEPS
            rows.append(
                {
                    "pipeline": name,
                    "augmentations": augmentations,
                    "seconds": round(seconds, 3),
                    "candidate_ms": round(per_candidate * 1000, 2),
                    "step_in_candidates": round(step / per_candidate, 2),
                    "cost_line_step_units": STEP_UNITS + AUGMENTATION_UNITS * augmentations,
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
