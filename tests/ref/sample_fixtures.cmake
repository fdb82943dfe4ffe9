# test_sample trains a tiny run on the train_data fixture's corpus and checks the Llama 3 chat template
# on the genuine tokenizer the ref_llama3_tok fixture writes.
set_tests_properties(test_sample PROPERTIES FIXTURES_REQUIRED "train_data;ref_llama3_tok" TIMEOUT 900)
