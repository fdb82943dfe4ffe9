# GPU tests: built when the CUDA backend is; each runs behind gpu_probe, which exits 77 without a device
# so that ctest reports "Skipped" (never "Passed") on machines without a GPU, such as CI. In the EMU
# build (cudaemu/README.md) the probe finds the emulated device and every GPU test also runs, labelled
# cudaemu, once per scheduling order (CUDAEMU_ORDER), so that a race between threads shows as a failure.
if(LLAMAC_WITH_CUDA)
  add_executable(gpu_probe ${CMAKE_CURRENT_SOURCE_DIR}/gpu/gpu_probe.cu)
  if(LLAMAC_CUDA_EMU)
    llamac_cu_as_cxx(${CMAKE_CURRENT_SOURCE_DIR}/gpu/gpu_probe.cu)
    target_link_libraries(gpu_probe PRIVATE cudaemu)
  else()
    target_link_libraries(gpu_probe PRIVATE CUDA::cudart)
  endif()
  file(GLOB LLAMAC_GPU_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_gpu_*.c)
  foreach(src ${LLAMAC_GPU_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE llamac_lib ${CRITERION_LINK_LIBRARIES})
    target_include_directories(${name} PRIVATE ${CRITERION_INCLUDE_DIRS} ${CMAKE_CURRENT_SOURCE_DIR})
    set(cmd sh -c "$<TARGET_FILE:gpu_probe> && exec $<TARGET_FILE:${name}> --jobs 1")
    if(LLAMAC_CUDA_EMU)
      foreach(order forward reverse shuffle)
        add_test(NAME ${name}_${order} COMMAND ${cmd})
        set_tests_properties(${name}_${order} PROPERTIES SKIP_RETURN_CODE 77 LABELS "gpu;cudaemu"
          ENVIRONMENT "CUDAEMU_ORDER=${order};OMP_NUM_THREADS=2")
      endforeach()
    else()
      add_test(NAME ${name} COMMAND ${cmd})
      set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu)
    endif()
  endforeach()
endif()

# `llamac train` with backend = cuda against the CPU backend, and checkpoints across backends
# (tests/gpu/train_cuda.sh), on the train_data fixture's corpus.
if(LLAMAC_WITH_CUDA)
  foreach(mode losses resume)
    set(cmd bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/train_cuda.sh ${mode} $<TARGET_FILE:llamac>
      $<TARGET_FILE:ckpt_compare> ${CMAKE_SOURCE_DIR} ${LLAMAC_TRAIN_DATA}/data ${LLAMAC_TEST_TMP})
    add_test(NAME train_cuda_${mode} COMMAND sh -c "$<TARGET_FILE:gpu_probe> >/dev/null && exec \"$0\" \"$@\"" ${cmd})
    set(labels gpu)
    if(LLAMAC_CUDA_EMU)
      set(labels "gpu;cudaemu")
    endif()
    set_tests_properties(train_cuda_${mode} PROPERTIES SKIP_RETURN_CODE 77 FIXTURES_REQUIRED train_data TIMEOUT 900
      LABELS "${labels}")
  endforeach()
endif()

# Static checks of the tensor-core attention kernels in real-CUDA builds (no device needed; label
# "static"): their PTX holds mma.sync m16n8k16 bf16 and ldmatrix, and ptxas reports no spills
# (tests/gpu/ptx_check.sh; bench/ptxas.sh writes the full report bench/ptxas.txt).
if(LLAMAC_WITH_CUDA AND NOT LLAMAC_CUDA_EMU)
  list(GET CMAKE_CUDA_ARCHITECTURES -1 llamac_ptx_arch)
  string(REGEX REPLACE "[^0-9].*" "" llamac_ptx_arch "${llamac_ptx_arch}")
  add_test(NAME attention_ptx_mma COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/ptx_check.sh ${CMAKE_CUDA_COMPILER}
    ${CMAKE_SOURCE_DIR} ${llamac_ptx_arch} ${CMAKE_CURRENT_BINARY_DIR}/ptx_check)
  set_tests_properties(attention_ptx_mma PROPERTIES LABELS static TIMEOUT 600)
  # libcublasLt is loaded at the first cuBLASLt call, not at start-up (model/ops/cuda/cublaslt_lazy.c)
  add_executable(cublaslt_lazy_check ${CMAKE_CURRENT_SOURCE_DIR}/gpu/cublaslt_lazy_check.c)
  target_link_libraries(cublaslt_lazy_check PRIVATE llamac_lib)
  add_test(NAME cublaslt_lazy_check COMMAND cublaslt_lazy_check)
  set_tests_properties(cublaslt_lazy_check PROPERTIES LABELS static)
endif()

# GPU ranks under mpirun (tests/mpi/parallel_train.sh with LLAMAC_PAR_BACKEND=cuda): every rank on the one
# GPU (or the emulated one), so the GPU communicators are the host-staged ones. Against the CPU single
# rank: (2,1), (1,2), (2,2) in fp32; ZeRO-1 against plain DP; checkpoints between CUDA (2,2) and CPU (1,1)
# both ways; SIGTERM to mpirun.
if(LLAMAC_WITH_CUDA)
  set(labels gpu)
  if(LLAMAC_CUDA_EMU)
    set(labels "gpu;cudaemu")
  endif()
  foreach(mode equiv zero1 xbackend sigterm)
    add_test(NAME par_cuda_${mode} COMMAND sh -c "$<TARGET_FILE:gpu_probe> >/dev/null && exec \"$0\" \"$@\""
      bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/parallel_train.sh ${mode} $<TARGET_FILE:llamac> $<TARGET_FILE:ckpt_compare>
      ${CMAKE_SOURCE_DIR} ${LLAMAC_PAR_DATA} ${LLAMAC_TEST_TMP})
    set_tests_properties(par_cuda_${mode} PROPERTIES RUN_SERIAL TRUE SKIP_RETURN_CODE 77 FIXTURES_REQUIRED par_data TIMEOUT 1800
      LABELS "${labels}" ENVIRONMENT
      "LLAMAC_PAR_BACKEND=cuda;OMP_NUM_THREADS=1;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  endforeach()
endif()

# The device communicators against the MPI ones they stage through (tests/gpu/mpi_dev_comm.c), 4 ranks on
# one GPU.
if(LLAMAC_WITH_CUDA)
  add_executable(mpi_dev_comm ${CMAKE_CURRENT_SOURCE_DIR}/gpu/mpi_dev_comm.c)
  target_link_libraries(mpi_dev_comm PRIVATE llamac_lib)
  # twice: with the 64 MiB staging buffer, and with 256 bytes so that every staged operation goes in pieces
  foreach(stage 0 256)
    add_test(NAME mpi_dev_comm_stage${stage} COMMAND sh -c "$<TARGET_FILE:gpu_probe> >/dev/null && exec \"$0\" \"$@\""
      ${LLAMAC_MPIRUN} -np 4 $<TARGET_FILE:mpi_dev_comm>)
    set_tests_properties(mpi_dev_comm_stage${stage} PROPERTIES RUN_SERIAL TRUE SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "${labels}"
      ENVIRONMENT "LLAMAC_GPU_STAGE_BYTES=${stage};OMP_NUM_THREADS=1;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  endforeach()
endif()

# GPU memory in use against `llamac inspect --backend cuda`'s plan, and the refusal of a layout that does
# not fit (tests/gpu/gpu_memory.sh).
if(LLAMAC_WITH_CUDA)
  add_test(NAME gpu_memory COMMAND sh -c "$<TARGET_FILE:gpu_probe> >/dev/null && exec \"$0\" \"$@\""
    bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/gpu_memory.sh $<TARGET_FILE:llamac> ${CMAKE_SOURCE_DIR} ${LLAMAC_PAR_DATA}
    ${LLAMAC_TEST_TMP})
  set_tests_properties(gpu_memory PROPERTIES RUN_SERIAL TRUE SKIP_RETURN_CODE 77 FIXTURES_REQUIRED par_data TIMEOUT 900
    LABELS "${labels}")
endif()
