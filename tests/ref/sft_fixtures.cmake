# test_sft's Llama 3 case reads the tokenizer the ref_llama3_tok fixture writes when it runs (it needs
# nodejs, npm and the registry); ordered after it, not requiring it: without it the case reports skipped.
set_tests_properties(test_sft PROPERTIES DEPENDS ref_llama3_tok)
