"""The batched scorer (app/usecases/scoring.py) over a real runtime and a real event loop."""

from __future__ import annotations

import asyncio

import numpy as np

from app.serving.runtime import RuntimeOptions, load_runtime
from app.usecases.scoring import Scorer


def test_scorer_prepares_each_panel_once_and_matches_the_runtime(small_bundle, tmp_path, real_windows) -> None:
    runtime = load_runtime(small_bundle, RuntimeOptions(provider="cpu", optimized_model_dir=tmp_path / "opt"))
    rng = np.random.default_rng(5)
    panels = {"enc:v1": rng.standard_normal((7, 768)).astype(np.float32),
              "enc:v2": rng.standard_normal((3, 768)).astype(np.float32)}

    async def main():
        scorer = Scorer(runtime, max_batch_size=8, max_wait_s=0.0, prepared_panels=1)
        scorer.start()
        try:
            out = []
            for key in ("enc:v1", "enc:v1", "enc:v2", "enc:v1"):
                out.append((key, await scorer.score(key, real_windows[:2], panels[key])))
                if key == "enc:v1" and len(out) == 2:
                    assert scorer._prepared.keys() == ["enc:v1"]  # prepared once, reused
            return out, scorer._prepared.keys()
        finally:
            await scorer.stop()

    results, kept = asyncio.run(asyncio.wait_for(main(), 60))
    assert kept == ["enc:v1"]  # bounded: the least recently used panel was dropped
    for key, scored in results:
        probs, attention = runtime.score(real_windows[:2], panels[key])
        assert np.abs(scored.probabilities - probs).max() <= 1e-6
        assert np.abs(scored.attention - attention).max() <= 1e-6
        assert scored.inference_s > 0 and scored.queue_s >= 0
