# MPI tests: plain C programs under mpirun (exit non-zero on failure), each under a minute on 2 cores.
# Included by tests/CMakeLists.txt. Ranks run with OMP_NUM_THREADS=1 so that 4 ranks do not oversubscribe.
set(LLAMAC_MPIRUN ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe)
set(LLAMAC_MPI_DIR ${CMAKE_CURRENT_SOURCE_DIR}/mpi)

foreach(name mpi_comm_test mpi_dp_sync mpi_tp_equiv mpi_grid mpi_stop ckpt_compare)
  add_executable(${name} ${LLAMAC_MPI_DIR}/${name}.c)
  target_link_libraries(${name} PRIVATE llamac_lib)
  target_include_directories(${name} PRIVATE ${LLAMAC_MPI_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
endforeach()

# scripts/test.sh runs ctest two tests at a time: the MPI tests hold the lock mpi_ranks, so that two sets
# of ranks never share the 2 cores (one other test may run beside them).
function(llamac_mpi_test name)
  add_test(NAME ${name} COMMAND ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 120 RESOURCE_LOCK mpi_ranks ENVIRONMENT
    "OMP_NUM_THREADS=1;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
endfunction()

llamac_mpi_test(mpi_comm_test ${LLAMAC_MPIRUN} -np 4 $<TARGET_FILE:mpi_comm_test>)
llamac_mpi_test(mpi_dp_sync ${LLAMAC_MPIRUN} -np 4 $<TARGET_FILE:mpi_dp_sync>)
llamac_mpi_test(mpi_tp_equiv ${LLAMAC_MPIRUN} -np 4 $<TARGET_FILE:mpi_tp_equiv>)
llamac_mpi_test(mpi_grid_tp2 ${LLAMAC_MPIRUN} -np 4 $<TARGET_FILE:mpi_grid> 2)
llamac_mpi_test(mpi_grid_tp4 ${LLAMAC_MPIRUN} -np 4 $<TARGET_FILE:mpi_grid> 4)
llamac_mpi_test(mpi_grid_singleton $<TARGET_FILE:mpi_grid> 1)
llamac_mpi_test(mpi_grid_bad_layout sh ${LLAMAC_MPI_DIR}/expect_fail.sh
  "^llamac: parallel.tp = 2 does not divide the 3 ranks started" 1 ${LLAMAC_MPIRUN} -np 3 $<TARGET_FILE:mpi_grid> 2)
llamac_mpi_test(mpi_grid_bad_tp sh ${LLAMAC_MPI_DIR}/expect_fail.sh
  "^llamac: parallel.tp = 0: the tensor-parallel size must be at least 1" 1 $<TARGET_FILE:mpi_grid> 0)
llamac_mpi_test(mpi_check_reports sh ${LLAMAC_MPI_DIR}/expect_fail.sh
  "internal error at .*launch/mpi_comm.c:[0-9]*: MPI_Bcast(.*) failed: MPI_ERR_ROOT" 1+ ${LLAMAC_MPIRUN} -np 2 $<TARGET_FILE:mpi_grid> 1 bad-root)
# The batch scripts end to end: a signal to the script reaches every rank through mpirun, all ranks
# stop at the same step, and the job requeues (Slurm) or resubmits (PBS) itself; a finished run does not.
llamac_mpi_test(slurm_script sh ${LLAMAC_MPI_DIR}/test_scripts.sh slurm $<TARGET_FILE:mpi_stop> ${CMAKE_SOURCE_DIR})
llamac_mpi_test(pbs_script sh ${LLAMAC_MPI_DIR}/test_scripts.sh pbs $<TARGET_FILE:mpi_stop> ${CMAKE_SOURCE_DIR})

# `llamac train` under mpirun end to end (tests/mpi/parallel_train.sh): layout equivalence, ZeRO-1,
# resharding a checkpoint, SIGTERM to mpirun. The par_data fixture re-tokenizes the train_data corpus
# with 515 pieces, a vocabulary tp = 2 does not divide (the loader refuses a model vocabulary that
# differs from the tokenizer's, so the padding needs a tokenizer of that size).
set(LLAMAC_PAR_DATA ${LLAMAC_TEST_TMP}/par_data)
add_test(NAME par_data_prep COMMAND sh -c "\
rm -rf ${LLAMAC_PAR_DATA} && $<TARGET_FILE:llamac> prep --out ${LLAMAC_PAR_DATA} --train-tokenizer --vocab-size 515 \
  --quiet --val-fraction 0.05 --input en:${LLAMAC_TRAIN_DATA}/corpus/en.txt --input de:${LLAMAC_TRAIN_DATA}/corpus/de.txt \
  --input ru:${LLAMAC_TRAIN_DATA}/corpus/ru.txt")
set_tests_properties(par_data_prep PROPERTIES FIXTURES_SETUP par_data FIXTURES_REQUIRED train_data)
foreach(mode equiv zero1 reshard sigterm eval sft)
  llamac_mpi_test(par_${mode} bash ${LLAMAC_MPI_DIR}/parallel_train.sh ${mode} $<TARGET_FILE:llamac>
    $<TARGET_FILE:ckpt_compare> ${CMAKE_SOURCE_DIR} ${LLAMAC_PAR_DATA} ${LLAMAC_TEST_TMP})
  set_tests_properties(par_${mode} PROPERTIES FIXTURES_REQUIRED par_data)
endforeach()
# par_sigterm waits out the 20 s window the batch scripts give a SIGTERM stop, under a CPU hog: alone
set_tests_properties(par_sigterm PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
