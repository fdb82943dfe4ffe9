#!/usr/bin/env bash
# gpu-check.sh: check llamac on a lent GPU machine in one prepared call of under 8 minutes.
#
#   bash scripts/gpu-check.sh --bundle [DIR]           here (Debian 12, all dependencies, nvcc 13):
#                                                      build for sm_90 and pack DIR (default gpu-bundle/)
#   bash scripts/gpu-check.sh --run OUT [--cpu-only | --bench] [--bundle DIR]
#                                                      on the GPU machine (through the device tool, with
#                                                      gpu-bundle carried): every check, logs and
#                                                      OUT/summary.txt
#
# Why a bundle (build here, run there). The GPU machine (one H200, CUDA 13, driver 580, python3 + torch,
# cmake, ninja) has none of llamac's libraries: no Open MPI, HDF5, OpenBLAS, Criterion, inih, cJSON or
# SentencePiece, no apt and no internet, so llamac cannot be configured or built there. This machine has
# all of them and nvcc 13, so --bundle compiles here for sm_90 only (build-sm90/, Release, host code for
# x86-64-v3 instead of -march=native: the GPU machine's CPU is not this one) and packs what the binaries
# need to run anywhere with a glibc:
#   bin/    llamac, gpu_probe, every tests/gpu/test_gpu_* binary, ckpt_compare (tests/mpi) and bench_gpu
#           (bench/gpu.sh's benchmark: `--run OUT --bench` runs bench/gpu.sh instead of the checks, as
#           its own call of under 8 minutes), stripped
#   lib/    every shared library they load (ldd) except glibc's own (libc, libm, libdl, libpthread,
#           librt, ld-linux...), the driver's libcuda and cuBLAS/cuBLASLt (about 570 MB, which the GPU
#           machine has: --run finds libcublasLt.so.13 under /usr/local/cuda*/ or in the torch venv's
#           nvidia/*/lib and puts that folder on LD_LIBRARY_PATH). libcudart.so.13 (under 1 MB) is carried.
#           OpenBLAS is Debian's pthread build (the .so; its static archive would be copied into every
#           binary). libstdc++ and libgcc_s go to lib/fallback/, used only when the machine's own are
#           missing or too old (an older copy first on the path could break the machine's newer tools).
#   ompi/   Open MPI 4.1's plugin components (lib/openmpi3, without the InfiniBand/UCX/OFI/PSM transports
#           and OpenSHMEM, which need libraries a singleton never uses) and its help texts
#           (share/openmpi): even one process without mpirun (a singleton) loads components at
#           MPI_Init. --run points Open MPI at them (OPAL_PREFIX, OPAL_PKGDATADIR,
#           OMPI_MCA_mca_base_component_path, a bundle mca-params.conf) and runs the singleton isolated
#           (OMPI_MCA_ess_singleton_isolated: no orted to fork, no mpirun needed).
#           glibc: everything needs at most 2.34 except Debian's libevent_core (Open MPI's event loop),
#           which uses arc4random from glibc 2.36 while Ubuntu 22.04 has 2.35: --bundle marks that
#           version requirement weak (scripts/elf-weak-version.py) and builds lib/compat/libarc4random.so
#           (getrandom), which --run preloads when the machine's glibc is older than 2.36.
#   share/  configs/ (LLAMAC_HOME: model presets), tests/configs/tiny_run.ini, tests/gpu/train_cuda.sh
#   data/   two prepared datasets from the demo corpus (Debian's fortune packages, which the GPU machine
#           lacks): tiny/ (512 pieces, en/de/ru, as the tests' train_data fixture) for train_cuda.sh and
#           demo/ (4096 pieces, 9 languages, about 4 MB of text) for the 200-step small-15m runs
# The staged tree is packed as DIR/llamac-gpu.tar.xz (OpenBLAS alone is 36 MB unpacked, 4 MB packed;
# the device tool carries 64 MiB at most) with DIR/MANIFEST.txt; --run unpacks it into a temporary folder
# (tar -xJ, or python3's tarfile when xz is missing).
#
# --run OUT prints the GPU's name and driver (nvidia-smi), then, each phase bounded by `timeout` against
# one deadline (GPUCHECK_BUDGET, 450 s, so the whole call stays under 8 minutes):
#   1. every test_gpu_* binary (--jobs 1), Criterion's counts per binary        -> OUT/gpu-tests.log
#   2. tests/gpu/train_cuda.sh losses (20 steps of tiny_run.ini: CPU, CUDA fp32, CUDA bf16)
#                                                                               -> OUT/train-cuda.log
#   3. small-15m (vocab_size = the carried tokenizer's 4096), batch 16 x 256, 200 steps on CUDA bf16,
#      CUDA fp32, then on the CPU (OMP_NUM_THREADS=16, budgeted by run.wall_time: when it cannot finish,
#      the steps it did are compared); a table of losses at steps 1, 50, 100, 150, 200, the relative
#      difference to the CPU and the tokens/s of each                         -> OUT/train-15m.log
#   4. compute-sanitizer memcheck and racecheck over test_gpu_ops and test_gpu_attention, when it is on
#      PATH or under /usr/local/cuda*/bin, with the time that is left           -> OUT/sanitizer.log
# OUT/env.log holds the environment, the bundle's manifest and ldd; OUT/summary.txt one line per check
# and the table, also printed at the end. Exit status: 0 when everything ran and passed, 1 when a check
# failed, 3 when there is no GPU (one line says so: nothing is claimed), 2 on a usage or bundle error.
# --cpu-only runs the same script without a GPU (to check it here): the GPU phases are skipped and a
# second CPU run stands in for the GPU columns of the table; it never reports the GPU as checked.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog="gpu-check"

usage() {
    echo "usage: bash scripts/gpu-check.sh --bundle [DIR]" >&2
    echo "       bash scripts/gpu-check.sh --run OUT [--cpu-only | --bench] [--bundle DIR]" >&2
    exit 2
}

# ===================================================================================================
# --bundle: build for sm_90 here and pack the bundle
# ===================================================================================================
glibc_re='^(libc|libm|libdl|libpthread|librt|libutil|libresolv|libanl|libnsl|libmvec|libBrokenLocale|ld-linux-x86-64|linux-vdso)\.so'
# Provided by the GPU machine: the driver, cuBLAS and NCCL (huge; the torch venv's nvidia/*/lib have them),
# and its own libnvidia-*.
machine_re='^(libcuda|libcublas|libcublasLt|libnccl|libnvidia-[a-z-]*)\.so'
fallback_re='^(libstdc\+\+|libgcc_s)\.so'
# Open MPI components a singleton never needs and that pull in libraries of their own (InfiniBand, UCX,
# libfabric, PSM) or belong to OpenSHMEM; ompi_monitoring/java are not components.
ompi_skip_re='(openib|_ofi|ucx|psm|usnic|_uct|verbs|portals|_cuda|^mca_(atomic|memheap|scoll|spml|sshmem)_)'

do_bundle() {
    local dest=${1:-$root/gpu-bundle}
    local build=${GPUCHECK_BUILD:-$root/build-sm90} jobs=${GPUCHECK_JOBS:-2}
    local nvcc=/usr/local/cuda/bin/nvcc
    [ -x "$nvcc" ] || { echo "$prog: $nvcc not found: --bundle needs the CUDA toolkit here" >&2; exit 2; }
    command -v xz >/dev/null || { echo "$prog: xz not found (apt-get install xz-utils)" >&2; exit 2; }
    local t0=$SECONDS
    # GPUCHECK_EMU=1 (tests of this script only): the CPU emulation of CUDA (cudaemu/) in place of nvcc,
    # so that --run's GPU phases can be exercised on a machine without a GPU.
    local cuda_args=(-DLLAMAC_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90)
    [ -n "${GPUCHECK_EMU:-}" ] && cuda_args=(-DLLAMAC_CUDA=EMU)
    if [ ! -f "$build/CMakeCache.txt" ]; then
        echo "$prog: configuring $build (${cuda_args[*]}, Release, x86-64-v3)"
        nice -n 19 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" -DLLAMAC_NATIVE=OFF \
            -DCMAKE_C_FLAGS=-march=x86-64-v3 -DCMAKE_CXX_FLAGS=-march=x86-64-v3 \
            >"$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
        mv "$build.configure.log" "$build/gpucheck-configure.log"
    fi
    local tests=()
    local src
    for src in "$root"/tests/gpu/test_gpu_*.c; do tests+=("$(basename "$src" .c)"); done
    echo "$prog: building llamac gpu_probe ckpt_compare bench_gpu ${tests[*]} in $build (-j$jobs)"
    nice -n 19 cmake --build "$build" -j"$jobs" --target llamac gpu_probe ckpt_compare bench_gpu "${tests[@]}" \
        >"$build/gpucheck-build.log" 2>&1 || { tail -40 "$build/gpucheck-build.log" >&2; echo "$prog: build failed (log: $build/gpucheck-build.log)" >&2; exit 1; }

    local stage
    stage=$(mktemp -d "${TMPDIR:-/tmp}/llamac-gpu-stage.XXXXXX")/llamac-gpu
    mkdir -p "$stage"/{bin,lib/fallback,lib/hwloc,ompi/lib/openmpi3,ompi/share/openmpi,share/tests/configs,share/tests/gpu,share/bench,data}
    local b
    for b in llamac gpu_probe ckpt_compare bench_gpu "${tests[@]}"; do
        local f=$build/$b
        [ -x "$f" ] || f=$build/tests/$b
        [ -x "$f" ] || f=$build/bench/$b
        [ -x "$f" ] || { echo "$prog: $b was not built in $build" >&2; exit 1; }
        cp "$f" "$stage/bin/" && strip --strip-unneeded "$stage/bin/$b"
    done

    # Open MPI's components and help texts (Debian: libopenmpi3 and openmpi-common).
    local ompi=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 c name
    [ -d "$ompi" ] || { echo "$prog: $ompi not found (apt-get install libopenmpi3)" >&2; exit 1; }
    for c in "$ompi"/*.so; do
        name=$(basename "$c")
        [[ $name =~ $ompi_skip_re ]] && continue
        cp "$c" "$stage/ompi/lib/openmpi3/"
    done
    cp -r /usr/share/openmpi/. "$stage/ompi/share/openmpi/"
    rm -f "$stage/ompi/share/openmpi/mpi"*-wrapper-data.txt
    : > "$stage/ompi/mca-params.conf"

    # Every shared library the binaries and components load, minus glibc and what the machine provides.
    local lib path seen=" "
    while read -r lib path; do
        case "$seen" in *" $lib "*) continue ;; esac
        seen+="$lib "
        [[ $lib =~ $glibc_re || $lib =~ $machine_re ]] && continue
        if [[ $lib =~ $fallback_re ]]; then cp -L "$path" "$stage/lib/fallback/$lib"; else cp -L "$path" "$stage/lib/$lib"; fi
    done < <(for f in "$stage"/bin/* "$stage"/ompi/lib/openmpi3/*.so; do
                 LD_LIBRARY_PATH=/usr/local/cuda/lib64 ldd "$f" 2>/dev/null
             done | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u)
    local missing
    missing=$(for f in "$stage"/bin/* "$stage"/ompi/lib/openmpi3/*.so; do ldd "$f" 2>/dev/null; done | grep "not found" | grep -Ev "$machine_re" | sort -u)
    [ -z "$missing" ] || { echo "$prog: unresolved libraries here:"$'\n'"$missing" >&2; exit 1; }

    # Debian 12's glibc is 2.36; Ubuntu 22.04's is 2.35. The one carried library that needs a 2.36
    # symbol is libevent_core (Open MPI's event loop): arc4random and arc4random_buf, used only by
    # libevent's DNS code and secure RNG, which Open MPI does not call. Its reference to GLIBC_2.36 is
    # marked weak (VER_FLG_WEAK: the loader then accepts a glibc without that version) and
    # lib/compat/libarc4random.so (getrandom) is preloaded by --run when the machine's glibc is older.
    mkdir -p "$stage/lib/compat"
    printf '%s\n' '#include <stdint.h>' '#include <stddef.h>' '#include <sys/random.h>' \
        'void arc4random_buf(void *b, size_t n) { unsigned char *p = b; while (n) { ssize_t r = getrandom(p, n, 0); if (r > 0) { p += r; n -= (size_t)r; } } }' \
        'uint32_t arc4random(void) { uint32_t v; arc4random_buf(&v, sizeof v); return v; }' \
        'uint32_t arc4random_uniform(uint32_t u) { if (u < 2) return 0; uint32_t m = -u % u, r; do r = arc4random(); while (r < m); return r % u; }' \
        >"$stage/lib/compat/arc4random.c"
    gcc -O2 -shared -fPIC -o "$stage/lib/compat/libarc4random.so" "$stage/lib/compat/arc4random.c" || exit 1
    rm "$stage/lib/compat/arc4random.c"
    for f in "$stage"/lib/*.so*; do
        # (not `| grep -q`: under pipefail, readelf's SIGPIPE when grep quits early reads as no match)
        [[ $(readelf -V "$f" 2>/dev/null) == *"Name: GLIBC_2.36  Flags: none"* ]] || continue
        python3 "$root/scripts/elf-weak-version.py" "$f" GLIBC_2.36 || exit 1
    done

    # Configs, the train_cuda.sh harness and the datasets.
    cp -r "$root/configs" "$stage/share/configs"
    cp "$root/tests/configs/tiny_run.ini" "$stage/share/tests/configs/"
    cp "$root/tests/gpu/train_cuda.sh" "$stage/share/tests/gpu/"
    cp "$root/bench/gpu.sh" "$root/bench/torch_gpu_bench.py" "$root/bench/ptxas.txt" "$stage/share/bench/"
    local data=$build/gpucheck-data
    if [ ! -f "$data/tiny/manifest.json" ] || [ ! -f "$data/demo/manifest.json" ]; then
        echo "$prog: preparing the datasets in $data"
        rm -rf "$data" && mkdir -p "$data/corpus" "$data/tiny-corpus"
        "$build/llamac" prep --demo-corpus "$data/demo-corpus" --no-install --quiet >/dev/null || exit 1
        local l inputs=() tiny=()
        for l in en de ru bg es it pl cs pt; do
            head -c 450000 "$data/demo-corpus/$l.txt" >"$data/corpus/$l.txt"
            inputs+=(--input "$l:$data/corpus/$l.txt")
        done
        for l in en de ru; do
            head -c 400000 "$data/demo-corpus/$l.txt" >"$data/tiny-corpus/$l.txt"
            tiny+=(--input "$l:$data/tiny-corpus/$l.txt")
        done
        "$build/llamac" prep --out "$data/tiny" --train-tokenizer --vocab-size 512 --quiet --val-fraction 0.05 "${tiny[@]}" || exit 1
        "$build/llamac" prep --out "$data/demo" --train-tokenizer --vocab-size 4096 --quiet --val-fraction 0.02 "${inputs[@]}" || exit 1
    fi
    cp -r "$data/tiny" "$data/demo" "$stage/data/"

    # Manifest: what was built from what, and the newest glibc symbol version anything needs.
    local glibc_max glibc_fallback
    glibc_max=$(for f in "$stage"/bin/* "$stage"/lib/*.so* "$stage"/ompi/lib/openmpi3/*.so; do
                    readelf -V "$f" 2>/dev/null
                done | grep -o 'Name: GLIBC_2\.[0-9]*  Flags: none' | awk '{ print $2 }' | sort -t. -k2 -n -u | tail -1)
    glibc_fallback=$(for f in "$stage"/lib/fallback/*; do readelf -V "$f"; done | grep -o 'Name: GLIBC_2\.[0-9]*' \
                    | awk '{ print $2 }' | sort -t. -k2 -n -u | tail -1)
    {
        echo "llamac GPU bundle (scripts/gpu-check.sh --bundle)"
        echo "built:       $(date -u '+%Y-%m-%d %H:%M UTC') on $(. /etc/os-release; echo "$PRETTY_NAME")"
        echo "source:      $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)') $(git -C "$root" rev-parse --abbrev-ref HEAD 2>/dev/null)"
        echo "version:     $("$build/llamac" --version 2>&1 | head -1)"
        echo "cuda:        $("$nvcc" --version | tail -1), sm_90"
        echo "glibc:       needs $glibc_max (lib/fallback: $glibc_fallback; libevent_core's GLIBC_2.36 is weak, lib/compat shims it)"
        echo "tokenizers:  data/tiny 512 pieces (en de ru), data/demo 4096 pieces (9 languages)"
        echo "files (bytes unpacked):"
        (cd "$stage" && find . -type f -printf '%s\t%P\n' | sort -k2)
    } >"$stage/MANIFEST.txt"

    if [ "${glibc_max#GLIBC_2.}" -gt 35 ]; then
        echo "$prog: the bundle needs $glibc_max (newer than Ubuntu 22.04's 2.35): see the weak-version step" >&2
        exit 1
    fi
    mkdir -p "$dest"
    rm -f "$dest/llamac-gpu.tar.xz" "$dest/MANIFEST.txt"
    echo "$prog: packing $(du -sb "$stage" | cut -f1) bytes"
    tar -C "$(dirname "$stage")" -cf - llamac-gpu | nice -n 19 xz -T2 -6 >"$dest/llamac-gpu.tar.xz" || exit 1
    cp "$stage/MANIFEST.txt" "$dest/"
    rm -rf "$(dirname "$stage")"
    local size unpacked
    size=$(du -sb "$dest" | cut -f1)
    unpacked=$(awk -F'\t' 'NF == 2 { s += $1 } END { print s }' "$dest/MANIFEST.txt")
    echo "$prog: $dest: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f MiB", s / 1048576 }'), $(awk -v s="$unpacked" 'BEGIN { printf "%.1f MiB", s / 1048576 }') unpacked), glibc >= ${glibc_max#GLIBC_}, in $((SECONDS - t0)) s"
    echo "$prog: on the GPU machine: bash scripts/gpu-check.sh --run \$OUT   (carry: gpu-bundle)"
}

# ===================================================================================================
# --run: every check on the GPU machine
# ===================================================================================================
do_run() {
    local out=$1 cpu_only=$2 bundle=$3
    local t0=$SECONDS budget=${GPUCHECK_BUDGET:-450}
    local steps=${GPUCHECK_STEPS:-200} batch=${GPUCHECK_BATCH:-16} seq=${GPUCHECK_SEQ:-256}
    local threads=${GPUCHECK_THREADS:-16} cpu_cap=${GPUCHECK_CPU_BUDGET:-150}
    mkdir -p "$out" || exit 2
    out=$(cd "$out" && pwd)
    local summary=$out/summary.txt envlog=$out/env.log
    : >"$summary"
    : >"$envlog"
    say() { echo "$*" | tee -a "$summary"; }
    left() { echo $((t0 + budget - SECONDS)); }
    # cap N RESERVE: seconds for the next phase: at most N, leaving RESERVE for what comes after
    cap() { local l=$(($(left) - $2)); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
    local failed=0

    if [ ! -f "$bundle/llamac-gpu.tar.xz" ]; then
        say "$prog: no bundle at $bundle/llamac-gpu.tar.xz (run bash scripts/gpu-check.sh --bundle here, then carry gpu-bundle)"
        exit 2
    fi
    local work
    work=$(mktemp -d "${GPUCHECK_WORK:-${TMPDIR:-/tmp}}/llamac-gpucheck.XXXXXX") || exit 2
    [ -n "${GPUCHECK_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
    if command -v xz >/dev/null; then
        tar -C "$work" -xJf "$bundle/llamac-gpu.tar.xz"
    else
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle/llamac-gpu.tar.xz" "$work"
    fi || { say "$prog: could not unpack $bundle/llamac-gpu.tar.xz"; exit 2; }
    local B=$work/llamac-gpu
    {
        echo "== gpu-check --run $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n), $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}"), $(nproc) cores, glibc $(ldd --version 2>/dev/null | head -1 | awk '{ print $NF }')"
        echo "bundle: $bundle/llamac-gpu.tar.xz, unpacked in $B ($(du -sh "$B" | cut -f1))"
        head -7 "$B/MANIFEST.txt"
    } >>"$envlog"

    # ---- the environment: bundle libraries, the machine's cuBLAS, Open MPI relocated ----------------
    local cublas_dir="" d
    for d in ${LLAMAC_CUBLAS_DIR:-} /usr/local/cuda/lib64 /usr/local/cuda*/lib64 /usr/local/cuda*/lib \
             /usr/local/cuda*/targets/x86_64-linux/lib /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib \
             /usr/lib/x86_64-linux-gnu; do
        if [ -e "$d/libcublasLt.so.13" ] && [ -e "$d/libcublas.so.13" ]; then cublas_dir=$d; break; fi
    done
    local nccl_dir=""  # NCCL likewise (linked by real-CUDA builds that found it)
    for d in ${LLAMAC_NCCL_DIR:-} /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib \
             /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib /usr/lib/x86_64-linux-gnu; do
        if [ -e "$d/libnccl.so.2" ]; then nccl_dir=$d; break; fi
    done
    export LD_LIBRARY_PATH="$B/lib${cublas_dir:+:$cublas_dir}${nccl_dir:+:$nccl_dir}"
    export LLAMAC_HOME=$B/share
    export OPAL_PREFIX=$B/ompi OPAL_PKGDATADIR=$B/ompi/share/openmpi OPAL_PKGLIBDIR=$B/ompi/lib/openmpi3
    export OMPI_MCA_mca_base_component_path=$B/ompi/lib/openmpi3
    export OMPI_MCA_mca_base_param_files=$B/ompi/mca-params.conf
    export OMPI_MCA_ess_singleton_isolated=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export HWLOC_PLUGINS_PATH=$B/lib/hwloc
    # glibc older than 2.36 (Ubuntu 22.04): libevent_core's arc4random comes from the bundle's shim.
    local glibc
    glibc=${GPUCHECK_GLIBC:-$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')}  # override: tests
    if [ -n "$glibc" ] && [ "${glibc#2.}" -lt 36 ] 2>/dev/null; then
        export LD_PRELOAD=$B/lib/compat/libarc4random.so${LD_PRELOAD:+:$LD_PRELOAD}
        echo "(glibc $glibc < 2.36: lib/compat/libarc4random.so preloaded for libevent_core)" >>"$envlog"
    fi
    local lddout
    lddout=$(ldd "$B"/bin/* 2>&1)
    if grep -q "not found" <<<"$lddout"; then  # the machine's libstdc++ / libgcc_s missing or too old
        export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$B/lib/fallback
        lddout=$(ldd "$B"/bin/* 2>&1)
        echo "(the machine's libstdc++/libgcc_s did not do: lib/fallback added)" >>"$envlog"
    fi
    {
        echo "cuBLAS: ${cublas_dir:-not found}; NCCL: ${nccl_dir:-not found}"
        env | grep -E '^(LD_LIBRARY_PATH|LD_PRELOAD|LLAMAC_|OPAL_|OMPI_|HWLOC_)' | sort
        echo "== ldd"
        echo "$lddout"
    } >>"$envlog"
    local missing
    missing=$(grep "not found" <<<"$lddout" | sort -u)
    if [ -n "$missing" ]; then
        say "$prog: FAIL: libraries not found on this machine: $(echo "$missing" | awk '{ print $1 }' | sort -u | tr '\n' ' ')(see env.log)"
        exit 2
    fi
    local version
    version=$("$B/bin/llamac" --version 2>&1 | head -1)

    # ---- is there a GPU? ----------------------------------------------------------------------------
    local smi gpu_line probe rc
    smi=$(command -v nvidia-smi || true)
    if [ -n "$smi" ]; then
        gpu_line=$(timeout 20 "$smi" --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -1)
    else
        gpu_line="nvidia-smi not found"
    fi
    probe=$(timeout 30 "$B/bin/gpu_probe" 2>&1)
    rc=$?
    echo "nvidia-smi: $gpu_line" >>"$envlog"
    echo "gpu_probe (rc $rc): $probe" >>"$envlog"
    local gpu=1
    if [ $rc -ne 0 ] && [ -z "${GPUCHECK_FORCE_GPU:-}" ]; then
        gpu=0
        if [ "$cpu_only" != 1 ]; then
            say "$prog: no GPU: gpu_probe: ${probe:-exit $rc} (nvidia-smi: $gpu_line); nothing was checked on a GPU"
            exit 3
        fi
    fi
    [ -n "${GPUCHECK_FORCE_GPU:-}" ] && gpu=1  # tests of this script only: run the GPU phases regardless
    [ "$cpu_only" = 1 ] && gpu=0
    say "$prog: $version; GPU: $gpu_line"
    [ $gpu = 1 ] && say "$prog: $probe"
    [ "$cpu_only" = 1 ] && say "$prog: --cpu-only: GPU phases skipped, a second CPU run stands in for the GPU columns; the GPU is NOT checked"

    # ---- --bench: the speed benchmark (bench/gpu.sh, its own budget) instead of the checks ------------
    if [ "$bench" = 1 ]; then
        [ $gpu = 1 ] || { say "$prog: --bench needs a GPU"; exit 3; }
        say "$prog: bench/gpu.sh with the bundle's bench_gpu -> $out/bench"
        bash "$B/share/bench/gpu.sh" "$B/bin/bench_gpu" "$out/bench" 2>&1 | tee -a "$summary"
        exit "${PIPESTATUS[0]}"
    fi

    # ---- 1. the GPU test binaries ---------------------------------------------------------------------
    local t log=$out/gpu-tests.log synth
    : >"$log"
    if [ $gpu = 1 ]; then
        for t in "$B"/bin/test_gpu_*; do
            local name s
            name=$(basename "$t")
            s=$(cap 120 200)
            echo "===== $name --jobs 1 (timeout ${s}s)" >>"$log"
            local ts=$SECONDS
            if [ "$s" -lt 10 ]; then say "FAIL  $name: not run, out of time"; failed=1; continue; fi
            OMP_NUM_THREADS=$threads timeout -k 5 "$s" "$t" --jobs 1 >"$work/t.log" 2>&1
            rc=$?
            { head -c 4000000 "$work/t.log"; echo; } >>"$log"
            synth=$(grep -a "Synthesis:" "$work/t.log" | tail -1 | sed 's/.*Synthesis: *//')
            [ -n "$synth" ] || synth="no Criterion summary"
            if [ $rc -eq 0 ]; then say "ok    $name: $synth ($((SECONDS - ts)) s)"
            elif [ $rc -ge 124 ]; then say "FAIL  $name: timed out after ${s} s ($synth)"; failed=1
            else say "FAIL  $name: exit $rc: $synth ($((SECONDS - ts)) s)"; failed=1; fi
        done
    else
        echo "(no GPU: the GPU tests were not run)" >>"$log"
    fi

    # ---- 2. train_cuda.sh losses ----------------------------------------------------------------------
    log=$out/train-cuda.log
    : >"$log"
    if [ $gpu = 1 ]; then
        local s ts=$SECONDS
        s=$(cap 120 170)
        echo "===== train_cuda.sh losses (timeout ${s}s)" >>"$log"
        if [ "$s" -lt 10 ]; then say "FAIL  train_cuda.sh losses: not run, out of time"; failed=1
        else
            timeout -k 5 "$s" bash "$B/share/tests/gpu/train_cuda.sh" losses "$B/bin/llamac" "$B/bin/ckpt_compare" \
                "$B/share" "$B/data/tiny" "$work" >>"$log" 2>&1
            rc=$?
            if [ $rc -ge 124 ]; then  # train_cuda.sh prints its runs' logs only when they end
                for f in "$work"/train_cuda_losses/*.log; do [ -f "$f" ] && { echo "== $f (cut at $s s)"; tail -5 "$f"; }; done >>"$log"
            fi
            sed -n 's/^\(ok\|FAIL\)  /  &/p' "$log" >>"$summary"
            if [ $rc -eq 0 ]; then say "ok    train_cuda.sh losses ($((SECONDS - ts)) s)"
            elif [ $rc -ge 124 ]; then say "FAIL  train_cuda.sh losses: timed out after $s s"; failed=1
            else say "FAIL  train_cuda.sh losses: exit $rc (train-cuda.log)"; failed=1; fi
        fi
    else
        echo "(no GPU: train_cuda.sh was not run)" >>"$log"
    fi

    # ---- 3. small-15m, 200 steps: GPU bf16, GPU fp32, CPU ---------------------------------------------
    log=$out/train-15m.log
    : >"$log"
    local vocab
    vocab=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m.get("vocab_size") or m["tokenizer"]["vocab_size"])' "$B/data/demo/manifest.json" 2>/dev/null)
    [ -n "$vocab" ] || vocab=4096
    cat >"$work/small15m.ini" <<EOF
; gpu-check.sh: small-15m on the carried 4096-piece demo dataset
[run]
seed = 1234
log_every = 10
[model]
preset = small-15m
vocab_size = $vocab
[data]
dir = $B/data/demo
[train]
batch_size = $batch
seq_len = $seq
steps = $steps
eval_every = 0
ckpt_every = 0
[optim]
lr = 1e-3
warmup = 20
EOF
    # run15 NAME BACKEND PRECISION SECONDS THREADS [--set ...]: one 200-step run, its metrics in $work/NAME
    run15() {
        local name=$1 backend=$2 precision=$3 secs=$4 thr=$5 ts=$SECONDS
        shift 5
        echo "===== $name: backend $backend, precision $precision, OMP_NUM_THREADS=$thr, ${secs} s at most" >>"$log"
        if [ "$secs" -lt 10 ]; then say "FAIL  small-15m $name: not run, out of time"; failed=1; return; fi
        OMP_NUM_THREADS=$thr timeout -k 10 $((secs + 30)) "$B/bin/llamac" train "$work/small15m.ini" \
            --set run.run_dir="$work/$name" --set run.backend="$backend" --set run.precision="$precision" \
            --set run.wall_time="$secs" "$@" >>"$log" 2>&1
        local rc=$? done
        done=$(grep -c '"tokens_per_s"' "$work/$name/metrics.jsonl" 2>/dev/null || echo 0)
        if [ $rc -ne 0 ]; then say "FAIL  small-15m $name: exit $rc after $done steps (train-15m.log)"; failed=1
        elif [ "$done" -lt "$steps" ]; then say "part  small-15m $name: $done/$steps steps in the ${secs} s budget"
        else say "ok    small-15m $name: $steps steps ($((SECONDS - ts)) s)"; fi
    }
    local cols=()
    if [ $gpu = 1 ]; then
        run15 gpu_bf16 cuda bf16 "$(cap 90 150)" "$threads"
        run15 gpu_fp32 cuda fp32 "$(cap 90 130)" "$threads"
        cols=(gpu_bf16 gpu_fp32)
    fi
    local cpu_secs
    cpu_secs=$(cap "$cpu_cap" $([ $gpu = 1 ] && echo 100 || echo 20))
    [ $gpu = 0 ] && cpu_secs=$(( cpu_secs / 2 ))
    run15 cpu cpu fp32 "$cpu_secs" "$threads"
    if [ $gpu = 0 ]; then  # --cpu-only: a second CPU run in the GPU column, to exercise the table
        run15 standin cpu fp32 "$cpu_secs" "$threads"
        cols=(standin)
    fi
    python3 - "$work" "$steps" "cpu" "${cols[@]}" >>"$summary" 2>>"$log" <<'EOF' || { echo "(table failed: train-15m.log)" >>"$summary"; failed=1; }
import json, os, statistics, sys
work, steps, ref, cols = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def load(name):
    rows = {}
    try:
        for line in open(os.path.join(work, name, "metrics.jsonl")):
            j = json.loads(line)
            if "loss" in j and "tokens_per_s" in j:
                rows[j["step"]] = j
    except OSError:
        pass
    return rows
runs = {n: load(n) for n in [ref] + cols}
label = {"cpu": "CPU fp32", "gpu_bf16": "GPU bf16", "gpu_fp32": "GPU fp32", "standin": "CPU (stand-in)"}
head = "%6s %10s" % ("step", label[ref]) + "".join(" %14s %9s" % (label[c], "rel diff") for c in cols)
print("\nsmall-15m, %d steps: losses (rel diff = |loss - CPU| / CPU)" % steps)
print(head)
worst = {c: 0.0 for c in cols}
for s in sorted(set([1, 50, 100, 150, 200, steps])):
    if s > steps: continue
    r = runs[ref].get(s)
    line = "%6d %10s" % (s, "%.4f" % r["loss"] if r else "-")
    for c in cols:
        g = runs[c].get(s)
        if g and r:
            d = abs(g["loss"] - r["loss"]) / abs(r["loss"])
            worst[c] = max(worst[c], d)
            line += " %14.4f %9.2e" % (g["loss"], d)
        else:
            line += " %14s %9s" % ("%.4f" % g["loss"] if g else "-", "-")
    print(line)
def tps(rows):  # median tokens/s after the first 5 steps (start-up, allocations)
    v = [rows[s]["tokens_per_s"] for s in sorted(rows) if s > 5] or [rows[s]["tokens_per_s"] for s in rows]
    return statistics.median(v) if v else 0.0
line = "%6s %10s" % ("tok/s", "%.0f" % tps(runs[ref]))
for c in cols:
    t = tps(runs[c])
    line += " %14s %9s" % ("%.0f" % t, "x%.1f" % (t / tps(runs[ref])) if tps(runs[ref]) else "")
print(line)
print("%6s %10s" % ("steps", len(runs[ref])) + "".join(" %14s %9s" % (len(runs[c]), "") for c in cols))
for c in cols:
    common = sorted(set(runs[c]) & set(runs[ref]))
    if common:
        w = max(abs(runs[c][s]["loss"] - runs[ref][s]["loss"]) / abs(runs[ref][s]["loss"]) for s in common)
        bound = 0.05 if c == "gpu_bf16" else 1e-3
        print("%s vs %s over %d common steps: worst rel diff %.2e (%s, expected below %g)"
              % (label[c], label[ref], len(common), w, "ok" if w <= bound else "CHECK", bound))
EOF

    # ---- 4. compute-sanitizer ------------------------------------------------------------------------
    log=$out/sanitizer.log
    : >"$log"
    if [ $gpu = 1 ]; then
        local cs
        cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
        if [ -z "$cs" ]; then
            say "skip  compute-sanitizer: not on PATH nor under /usr/local/cuda*/bin"
        else
            local tool
            for tool in memcheck racecheck; do
                for t in test_gpu_ops test_gpu_attention; do
                    local s ts=$SECONDS errs
                    s=$(cap 60 15)
                    if [ "$s" -lt 15 ]; then say "skip  compute-sanitizer $tool $t: out of time"; continue; fi
                    echo "===== compute-sanitizer --tool $tool $t --jobs 1 (timeout ${s}s)" >>"$log"
                    # --jobs 1 --no-early-exit? Criterion forks a process per test: follow the children.
                    OMP_NUM_THREADS=$threads timeout -k 5 "$s" "$cs" --tool "$tool" --target-processes all \
                        --error-exitcode 99 "$B/bin/$t" --jobs 1 >"$work/cs.log" 2>&1
                    rc=$?
                    # racecheck can report a hazard per thread: the first 3000 lines and the last 100
                    { head -3000 "$work/cs.log"; [ "$(wc -l <"$work/cs.log")" -gt 3100 ] && echo "[... cut ...]" && tail -100 "$work/cs.log"; } >>"$log"
                    errs=$(grep -a "ERROR SUMMARY" "$work/cs.log" | awk '{ s += $4 } END { print s + 0 }')
                    local hazards
                    hazards=$(grep -ac "Race reported\|hazard" "$work/cs.log")
                    if [ $rc -ge 124 ] && [ $rc -ne 99 ]; then
                        say "part  compute-sanitizer $tool $t: timed out after $s s, $errs errors in what ran"
                        [ "$errs" -gt 0 ] && failed=1
                    elif [ "$errs" -gt 0 ] || [ $rc -eq 99 ]; then
                        say "FAIL  compute-sanitizer $tool $t: $errs errors, $hazards hazard lines (sanitizer.log)"; failed=1
                    elif [ $rc -ne 0 ]; then
                        say "FAIL  compute-sanitizer $tool $t: exit $rc (sanitizer.log)"; failed=1
                    else
                        say "ok    compute-sanitizer $tool $t: 0 errors ($((SECONDS - ts)) s)"
                    fi
                done
            done
        fi
    else
        echo "(no GPU: compute-sanitizer was not run)" >>"$log"
    fi

    # ---- the verdict ---------------------------------------------------------------------------------
    echo >>"$summary"
    if [ "$cpu_only" = 1 ]; then
        say "$prog: --cpu-only finished in $((SECONDS - t0)) s: CPU parts $([ $failed = 0 ] && echo ok || echo FAILED); the GPU was NOT checked"
    elif [ $failed = 0 ]; then
        say "$prog: all checks passed on $gpu_line in $((SECONDS - t0)) s"
    else
        say "$prog: FAILED (see the FAIL lines; logs in $out) after $((SECONDS - t0)) s"
    fi
    echo
    echo "===== $summary"
    cat "$summary"
    [ $failed = 0 ] || exit 1
    exit 0
}

# ===================================================================================================
mode=${1:-}
shift || true
case $mode in
--bundle)
    [ $# -le 1 ] || usage
    do_bundle "${1:-}"
    ;;
--run)
    [ $# -ge 1 ] || usage
    out=$1
    shift
    cpu_only=0 bench=0 bundle=$root/gpu-bundle
    while [ $# -gt 0 ]; do
        case $1 in
        --cpu-only) cpu_only=1 ;;
        --bench) bench=1 ;;
        --bundle) [ $# -ge 2 ] || usage; bundle=$2; shift ;;
        *) usage ;;
        esac
        shift
    done
    do_run "$out" "$cpu_only" "$bundle"
    ;;
*) usage ;;
esac
