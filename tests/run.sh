#!/usr/bin/env bash
# Run the test suite twice: in Keras 3 mode and in Keras 2 mode (tf_keras,
# TF_USE_LEGACY_KERAS=1, the mode TensorFlow Recommenders needs). Then run the layer and
# model-builder tests and the docstring examples once more on each other Keras 3 backend,
# JAX and PyTorch, with the plugin tests/scale/keras_backend_plugin.py, which skips the
# tests that check with TensorFlow-only tools. Extra arguments go to every pytest run, for example
# `bash tests/run.sh -k expert_bank`.
#
# A backend that is not installed is skipped with a message, unless
# MTL_LAYERS_REQUIRE_BACKENDS=1 (as in CI) makes it a failure. MTL_LAYERS_BACKENDS
# chooses the extra backends (default "jax torch"; empty for none).
set -uo pipefail
cd "$(dirname "$0")/.."

# The backend runs cover only these paths: the full suite on three backends would not fit
# CI's time limit, and most other tests need TensorFlow (tf.data, SavedModel, TFRS).
BACKEND_TEST_PATHS=(tests/layers tests/models/builders_test.py tests/docstring_examples_test.py)

status=0
for mode in keras3 keras2; do
  echo "=== pytest in ${mode} mode ==="
  if [[ "$mode" == keras2 ]]; then
    TF_USE_LEGACY_KERAS=1 python -m pytest tests -p no:cacheprovider "$@"
  else
    env -u TF_USE_LEGACY_KERAS python -m pytest tests -p no:cacheprovider "$@"
  fi
  code=$?
  if [[ $code -eq 5 ]]; then
    echo "pytest collected no tests in ${mode} mode; this counts as a failure." >&2
  fi
  if [[ $code -ne 0 ]]; then
    status=1
  fi
done

for backend in ${MTL_LAYERS_BACKENDS-jax torch}; do
  echo "=== pytest of the layers and builders on the ${backend} backend ==="
  if ! python -c "import ${backend}" >/dev/null 2>&1; then
    message="${backend} is not installed; install it with: pip install -e '.[backends]'"
    if [[ "${MTL_LAYERS_REQUIRE_BACKENDS:-0}" == 1 ]]; then
      echo "${message} (MTL_LAYERS_REQUIRE_BACKENDS=1 makes this a failure)" >&2
      status=1
    else
      echo "Skipping the ${backend} run: ${message}" >&2
    fi
    continue
  fi
  env -u TF_USE_LEGACY_KERAS KERAS_BACKEND="$backend" PYTHONPATH="tests/scale${PYTHONPATH:+:$PYTHONPATH}" \
    python -m pytest "${BACKEND_TEST_PATHS[@]}" -p no:cacheprovider -p keras_backend_plugin "$@"
  code=$?
  if [[ $code -eq 5 && $# -gt 0 ]]; then
    # A filter such as `-k census` may match no layer or builder test; that is fine here.
    echo "No layer or builder test matched the arguments on the ${backend} backend."
    code=0
  elif [[ $code -eq 5 ]]; then
    echo "pytest collected no tests on the ${backend} backend; this counts as a failure." >&2
  fi
  if [[ $code -ne 0 ]]; then
    status=1
  fi
done
exit $status
