# The CPU emulation's own tests (cudaemu/README.md), in the EMU build only: tests/cudaemu/test_*.cu are
# Criterion binaries compiled as C++, labelled cudaemu and run once per scheduling order (the tests that
# compare orders set them themselves); bench_cudaemu prints the README's figures.
if(LLAMAC_CUDA_EMU)
  file(GLOB LLAMAC_CUDAEMU_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cudaemu/test_*.cu)
  foreach(src ${LLAMAC_CUDAEMU_TESTS})
    get_filename_component(name ${src} NAME_WE)
    llamac_cu_as_cxx(${src})
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE llamac_lib ${CRITERION_LINK_LIBRARIES})
    target_include_directories(${name} PRIVATE ${CRITERION_INCLUDE_DIRS} ${CMAKE_SOURCE_DIR})
    foreach(order forward reverse shuffle)
      add_test(NAME ${name}_${order} COMMAND ${name} --jobs 1)
      set_tests_properties(${name}_${order} PROPERTIES LABELS cudaemu
        ENVIRONMENT "CUDAEMU_ORDER=${order};OMP_NUM_THREADS=2")
    endforeach()
  endforeach()
  llamac_cu_as_cxx(${CMAKE_CURRENT_SOURCE_DIR}/cudaemu/bench_cudaemu.cu)
  add_executable(bench_cudaemu ${CMAKE_CURRENT_SOURCE_DIR}/cudaemu/bench_cudaemu.cu)
  target_link_libraries(bench_cudaemu PRIVATE llamac_lib)
endif()
