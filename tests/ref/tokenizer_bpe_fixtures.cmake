# Llama 3 tokenizer oracles under Debian's nodejs: the npm package llama3-tokenizer-js writes a genuine
# tiktoken tokenizer.model, a tokenizer.json and the ids of 11,000+ documents, and the npm package tiktoken
# (OpenAI's Rust tiktoken as WASM) the ids of the same documents from that tokenizer.model, into
# tests/tmp/llama3_tok (read by test_tokenizer_bpe). Needs nodejs, npm and the npm registry.
add_test(NAME ref_llama3_tok
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/ref/llama3_tok.sh ${LLAMAC_TEST_TMP}/llama3_tok $<TARGET_FILE:llamac>)
set_tests_properties(ref_llama3_tok PROPERTIES FIXTURES_SETUP ref_llama3_tok TIMEOUT 600)
set_tests_properties(test_tokenizer_bpe PROPERTIES FIXTURES_REQUIRED ref_llama3_tok TIMEOUT 900)
