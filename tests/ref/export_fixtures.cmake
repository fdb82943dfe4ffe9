# test_export trains a tiny run on the train_data fixture's corpus and exports it.
set_tests_properties(test_export PROPERTIES FIXTURES_REQUIRED train_data TIMEOUT 900)
