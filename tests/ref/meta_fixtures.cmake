# Meta-format checkpoints written by PyTorch (torch.save, two model-parallel shards), the same weights
# as Hugging Face directories, Meta's own forward's logits, a pickle that calls os.system, and broken
# copies: tests/tmp/meta_ref (read by test_meta).
add_test(NAME ref_meta_gen
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/ref/meta_ckpt.py ${LLAMAC_TEST_TMP}/meta_ref)
set_tests_properties(ref_meta_gen PROPERTIES FIXTURES_SETUP ref_meta)
set_tests_properties(test_meta PROPERTIES FIXTURES_REQUIRED ref_meta)
