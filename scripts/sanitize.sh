#!/usr/bin/env bash
# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer: a separate build in build-asan/,
# any report fails the test that triggers it (UBSan does not recover; ASan aborts on the first error).
# Leak checking is off: Open MPI and HDF5 keep allocations alive until exit by design.
#
#   bash scripts/sanitize.sh [CTEST_REGEX]     default: the Criterion unit tests (no MPI; PyTorch only to
#                                              write reference fixtures, outside the instrumented binaries)
#
# Not part of .ci/run: the extra build and the instrumented runs take about 20 minutes on 2 cores
# (README.md, Tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# needs what scripts/setup.sh installs (run it first on a fresh machine)
start=$(date +%s)
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S . -B build-asan -DLLAMAC_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$flags" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
regex=${1:-"^(train_data_prep|test_ops|test_optim|test_safetensors|test_hf|test_meta|test_tokenizer|test_tokenizer_bpe|test_shard|test_loader|test_prep|test_plot|test_inspect|test_signals|test_harden|test_lora|test_sft|test_export|test_sample)$"}
cmake --build build-asan -j"$(nproc)" >/dev/null
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest -R "$regex" --output-on-failure)
echo "sanitize: done in $(( $(date +%s) - start )) s"
