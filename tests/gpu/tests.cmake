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
endif()
