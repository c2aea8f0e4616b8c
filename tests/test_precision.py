"""The classifier's arithmetic: bfloat16 where the CPU has it natively, float32 elsewhere and for training."""

from __future__ import annotations

import numpy as np
import pytest

from ferbatch.config import ScoreSettings
from ferbatch.scoring import Components, KerasClassifier, _classifier, _components
from ferbatch.scoring._classifier import cpu_flags, resolve_precision

REWRITE = "auto_mixed_precision_onednn_bfloat16"


def test_cpu_flags_are_read_from_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_is_bfloat16_only_on_a_cpu_with_native_bfloat16(monkeypatch, native, expected):
    monkeypatch.setattr(_classifier, "_native_bfloat16", lambda: native)
    assert resolve_precision("auto") == expected
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        resolve_precision("float16")


def test_another_keras_backend_computes_float32_whatever_is_asked(monkeypatch):
    import keras

    monkeypatch.setattr(_classifier, "_native_bfloat16", lambda: True)
    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    assert resolve_precision("auto") == resolve_precision("bfloat16") == "float32"


def test_native_bfloat16_needs_the_cpu_flag_and_no_gpu(monkeypatch):
    import tensorflow as tf

    check = _classifier._native_bfloat16.__wrapped__  # the uncached check
    monkeypatch.setattr(_classifier, "cpu_flags", lambda: frozenset({"fpu", "amx_bf16"}))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert check()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert not check()  # the GPU runs the classifier; the rewrite is for oneDNN's CPU kernels
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(_classifier, "cpu_flags", lambda: frozenset({"fpu", "avx2"}))
    assert not check()


def _rewrite_option() -> bool:
    import tensorflow as tf

    return bool(tf.config.optimizer.get_experimental_options().get(REWRITE, False))


def test_bfloat16_gives_float32_verdicts_within_rounding_and_leaves_the_process_in_float32(models_dir):
    import tensorflow as tf

    faces = np.random.default_rng(1).integers(0, 256, size=(300, 48, 48), dtype=np.uint8)
    exact = KerasClassifier.from_registry(models_dir).predict(faces)
    rounded_classifier = KerasClassifier.from_registry(models_dir, precision="bfloat16")
    rounded = rounded_classifier.predict(faces)

    assert rounded_classifier.precision == "bfloat16" and rounded.dtype == np.float32
    np.testing.assert_allclose(rounded.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(rounded - exact).max() < 0.05
    assert not np.array_equal(rounded, exact)  # the rewrite did run: bfloat16 rounds
    # Training and evaluation in the same process keep float32: the option is off again after each call.
    assert not _rewrite_option()
    np.testing.assert_array_equal(KerasClassifier.from_registry(models_dir).predict(faces), exact)

    tf.config.optimizer.set_experimental_options({REWRITE: True})  # a setting made elsewhere is kept
    try:
        rounded_classifier.predict(faces[:3])
        assert _rewrite_option()
    finally:
        tf.config.optimizer.set_experimental_options({REWRITE: False})


def test_overlapping_bfloat16_calls_share_one_switch_and_leave_it_as_they_found_it():
    # Calls in two threads of one process (a multi-threaded Dask worker) may end in either order.
    first, second = _classifier._bfloat16_rewrite(), _classifier._bfloat16_rewrite()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert _rewrite_option()  # the second call is still running: still on
    second.__exit__(None, None, None)
    assert not _rewrite_option()


def test_the_score_settings_precision_reaches_the_classifier_and_is_resolved_where_it_runs(models_dir, monkeypatch):
    monkeypatch.setattr(_classifier, "_native_bfloat16", lambda: False)
    _components._classifier.cache_clear()  # one classifier per process: another test may have built this one
    components = Components.for_run(ScoreSettings(precision="auto"), models_dir=models_dir)
    assert components.precision == "auto"  # a Dask worker resolves "auto" for its own CPU
    assert components.classifier().precision == "float32"
    forced = Components.for_run(ScoreSettings(precision="bfloat16"), models_dir=models_dir)
    assert forced.classifier().precision == "bfloat16"
    _components._classifier.cache_clear()  # not to hand the float32 "auto" one to a later test
    with pytest.raises(ValueError, match="precision"):
        ScoreSettings(precision="half")
