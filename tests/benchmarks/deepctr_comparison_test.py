"""Quick-mode run of the DeepCTR side-by-side benchmark, so the script cannot rot.

The first run creates `.venv-deepctr/` and installs DeepCTR 0.9.4 from the package index.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "deepctr_comparison.py"


@pytest.mark.skipif(
    os.environ.get("TF_USE_LEGACY_KERAS") == "1",
    reason="The benchmark runs in Keras 3 mode and starts its own tf_keras worker.",
)
def test_quick_mode_compares_both_libraries(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", f"--output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        # A safety net only: the quick run uses about 30-50 s of CPU time, and far more
        # wall time when other jobs share the cores.
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    libraries = sorted({r["library"] for r in results})
    assert libraries == ["deepctr_tf_keras", "mtl_layers", "mtl_layers_preprocessed"]
    for result in results:
        assert 0.0 <= result["auc"]["never_married"] <= 1.0
        assert result["examples_per_second"] > 0
        assert result["examples_per_cpu_second"] > 0
        assert result["latency_ms"] > 0
    ours = [r for r in results if r["library"].startswith("mtl_layers")]
    deepctr = [r for r in results if r["library"] == "deepctr_tf_keras"]
    # DeepCTR 0.9.4 seeds every expert alike, so its experts start as copies.
    assert all(r["expert_similarity_init"] > 0.999 for r in deepctr)
    assert all(abs(r["expert_similarity_init"]) < 0.2 for r in ours)
    # Both of this library's paths start from the same weights for the same seed.
    for seed in (0, 1):
        raw, preprocessed = (
            next(r for r in ours if r["library"] == library and r["seed"] == seed)
            for library in ("mtl_layers", "mtl_layers_preprocessed")
        )
        assert raw["expert_similarity_init"] == pytest.approx(preprocessed["expert_similarity_init"], abs=1e-6)
    assert "## DeepCTR 0.9.4 side by side" in completed.stdout
