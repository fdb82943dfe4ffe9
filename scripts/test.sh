#!/usr/bin/env bash
# The test command: set up (packages, build), run every test with ctest, then build the CUDA kernels
# for the CPU emulation of CUDA (build-emu/, -DLLAMAC_CUDA=EMU: no GPU needed, cudaemu/README.md) and run
# the tests labelled cudaemu there: every kernel against its CPU op, the whole model and `llamac train`
# with backend = cuda. Extra arguments go to both ctest runs (e.g. scripts/test.sh -R ops).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

# build-emu/ is compiled while the first tests run, at the lowest priority: it takes the CPU time they
# leave (the real Slurm test and the SIGTERM windows mostly wait) and slows them little.
if [ ! -f build-emu/CMakeCache.txt ]; then
  cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DLLAMAC_CUDA=EMU >build-emu-configure.log 2>&1 \
    || { cat build-emu-configure.log >&2; exit 1; }
fi
nice -n 19 cmake --build build-emu -j"$(nproc)" >build-emu.log 2>&1 &
emu_build=$!

# Two at a time: the MPI tests take the lock mpi_ranks and the SIGTERM test runs alone
# (tests/mpi/tests.cmake), the longest start first (tests/CMakeLists.txt). With two tests on two cores,
# an idle OpenMP thread sleeps at once instead of spinning on a core the other test needs (libgomp's
# default spin cost test_train three times its CPU time on a busy machine).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
status=0
(cd build && ctest --output-on-failure --timeout 900 -j2 "$@") || status=$?
wait $emu_build || { tail -50 build-emu.log >&2; exit 1; }
[ $status -eq 0 ] || exit $status

echo "llamac test: the CUDA kernels under the CPU emulation (build-emu/)"
# Two at a time: the emulator runs each test on one core; the multi-rank ones are RUN_SERIAL
# (tests/gpu/tests.cmake), so nothing else runs beside their ranks.
(cd build-emu && ctest --output-on-failure --timeout 900 -j2 -L cudaemu "$@")
