#!/usr/bin/env bash
# Installs what llamac needs on Debian 12 (when missing) and builds it in build/.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (does only what is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LLAMAC_PACKAGES="build-essential cmake pkg-config git libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools \
libopenblas-dev libcriterion-dev libsentencepiece-dev sentencepiece libcjson-dev zlib1g-dev libpcre2-dev \
python3-torch python3-numpy slurm-wlm munge \
fortunes fortunes-de fortunes-ru fortunes-bg fortunes-es fortunes-it fortunes-pl fortunes-cs fortunes-br"

missing=()
for p in $LLAMAC_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs and npm run the Llama 3 tokenizer oracle in the tests. Checked by command, not by package: a
# Node.js from elsewhere (NodeSource's, which bundles npm) conflicts with Debian's npm package.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "llamac setup: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "llamac setup: these Debian packages are missing and I am not root: ${missing[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Open MPI refuses to run as root unless told; containers and CI machines often are root.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1

jobs=$(nproc)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${LLAMAC_CMAKE_ARGS:-} >build-configure.log 2>&1 \
    || { cat build-configure.log >&2; exit 1; }
  grep "llamac:" build-configure.log || true
fi
cmake --build build -j"$jobs" >build.log 2>&1 || { tail -50 build.log >&2; exit 1; }
echo "llamac setup: built $(build/llamac --version) in build/"
