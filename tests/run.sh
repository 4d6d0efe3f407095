#!/usr/bin/env bash
# Run the test suite twice: in Keras 3 mode and in Keras 2 mode (tf_keras,
# TF_USE_LEGACY_KERAS=1, the mode TensorFlow Recommenders needs). Extra arguments go to
# both pytest runs, for example `bash tests/run.sh -k expert_bank`.
set -uo pipefail
cd "$(dirname "$0")/.."

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
exit $status
