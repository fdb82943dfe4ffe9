# Reference values from PyTorch, written into the build tree by scripts run as ctest fixtures (Debian's
# python3-torch under /usr/bin/python3). A test that reads them requires its fixture, so ctest runs the
# script first (and skips the test when the script fails).

# optim: torch.optim.AdamW + clip_grad_norm_ + LR schedules -> tests/tmp/optim_ref.txt (read by test_optim)
add_test(NAME ref_optim COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ref/optim_ref.py ${LLAMAC_TEST_TMP}/optim_ref.txt)
set_tests_properties(ref_optim PROPERTIES FIXTURES_SETUP ref_optim)
set_tests_properties(test_optim PROPERTIES FIXTURES_REQUIRED ref_optim)
