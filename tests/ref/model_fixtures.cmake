# PyTorch reference for the whole model: gen_model_ref.py writes Hugging Face directories, tokens, and
# PyTorch's loss and gradients; test_model_ref compares llamac against them.
add_test(NAME ref_model_gen
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ref/gen_model_ref.py ${LLAMAC_TEST_TMP}/model_ref)
set_tests_properties(ref_model_gen PROPERTIES FIXTURES_SETUP ref_model)
set_tests_properties(test_model_ref PROPERTIES FIXTURES_REQUIRED ref_model)
set_tests_properties(test_lora PROPERTIES FIXTURES_REQUIRED ref_model)
