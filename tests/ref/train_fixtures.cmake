# A small multilingual data directory for the trainer tests: the first 400 KB of the English, German and
# Russian demo corpora (Debian's fortunes), a 512-piece tokenizer, shards with a validation split; and the
# same text under another (500-piece) tokenizer.
set(LLAMAC_TRAIN_DATA ${LLAMAC_TEST_TMP}/train_data)
add_test(NAME train_data_prep COMMAND sh -c "\
rm -rf ${LLAMAC_TRAIN_DATA} && mkdir -p ${LLAMAC_TRAIN_DATA}/corpus && \
$<TARGET_FILE:llamac> prep --demo-corpus ${LLAMAC_TRAIN_DATA}/demo --no-install --quiet && \
for l in en de ru; do head -c 400000 ${LLAMAC_TRAIN_DATA}/demo/$l.txt > ${LLAMAC_TRAIN_DATA}/corpus/$l.txt; done && \
$<TARGET_FILE:llamac> prep --out ${LLAMAC_TRAIN_DATA}/data --train-tokenizer --vocab-size 512 --quiet \
  --val-fraction 0.05 --input en:${LLAMAC_TRAIN_DATA}/corpus/en.txt --input de:${LLAMAC_TRAIN_DATA}/corpus/de.txt \
  --input ru:${LLAMAC_TRAIN_DATA}/corpus/ru.txt && \
$<TARGET_FILE:llamac> prep --out ${LLAMAC_TRAIN_DATA}/data_other_tokenizer --train-tokenizer --vocab-size 500 --quiet \
  --input en:${LLAMAC_TRAIN_DATA}/corpus/en.txt --input de:${LLAMAC_TRAIN_DATA}/corpus/de.txt \
  --input ru:${LLAMAC_TRAIN_DATA}/corpus/ru.txt")
set_tests_properties(train_data_prep PROPERTIES FIXTURES_SETUP train_data)
set_tests_properties(test_train PROPERTIES FIXTURES_REQUIRED train_data)
set_tests_properties(test_harden PROPERTIES FIXTURES_REQUIRED train_data)
# Checkpoints on a full disk (a tmpfs in a private mount namespace, many fill levels) and under ulimit -f.
add_test(NAME harden_disk_full COMMAND bash ${CMAKE_SOURCE_DIR}/tests/harden/disk_full.sh $<TARGET_FILE:llamac>
  ${CMAKE_SOURCE_DIR}/tests/configs/tiny_run.ini ${LLAMAC_TRAIN_DATA}/data ${LLAMAC_TEST_TMP})
set_tests_properties(harden_disk_full PROPERTIES FIXTURES_REQUIRED train_data SKIP_RETURN_CODE 77 TIMEOUT 600
  ENVIRONMENT "OMP_NUM_THREADS=2")
# Write and sync failures a full tmpfs cannot make (EIO, EDQUOT), injected by an LD_PRELOAD library built
# for this test only (tests/harden/failio.c): checkpoints at many points and every fsync of a run, prep
# over an existing output.
add_library(failio MODULE ${CMAKE_SOURCE_DIR}/tests/harden/failio.c)
target_link_libraries(failio PRIVATE ${CMAKE_DL_LIBS})
set_target_properties(failio PROPERTIES PREFIX "")
add_test(NAME harden_io_errors COMMAND bash ${CMAKE_SOURCE_DIR}/tests/harden/io_errors.sh $<TARGET_FILE:llamac>
  $<TARGET_FILE:failio> ${CMAKE_SOURCE_DIR}/tests/configs/tiny_run.ini ${LLAMAC_TRAIN_DATA}/data ${LLAMAC_TEST_TMP})
set_tests_properties(harden_io_errors PROPERTIES FIXTURES_REQUIRED train_data TIMEOUT 300)
# Seeded mutations of every untrusted input through the real binary (tests/harden/mutate.py): 300 of each
# of the 9 kinds, small inputs, cores + 1 runs at a time (80-95 s on 2 cores shared with other work).
add_test(NAME harden_mutate COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/harden/mutate.py $<TARGET_FILE:llamac>
  ${LLAMAC_TRAIN_DATA}/data ${LLAMAC_TEST_TMP} 300)
set_tests_properties(harden_mutate PROPERTIES FIXTURES_REQUIRED train_data TIMEOUT 900)
# launch/slurm.sbatch under a real single-node Slurm (slurm-wlm + munge started by the test): time limit,
# --signal=B:USR1@30, checkpoint, requeue, bit-exact finish (about 2 minutes, mostly waiting for Slurm)
add_test(NAME harden_slurm_real COMMAND bash ${CMAKE_SOURCE_DIR}/tests/harden/slurm_real.sh $<TARGET_FILE:llamac>
  ${CMAKE_SOURCE_DIR} ${LLAMAC_TRAIN_DATA}/data ${LLAMAC_TEST_TMP})
set_tests_properties(harden_slurm_real PROPERTIES FIXTURES_REQUIRED train_data SKIP_RETURN_CODE 77 TIMEOUT 900)
