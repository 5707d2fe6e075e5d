# Settings for this corpus (sourced by run.sh). Pass the corpus location with --corpus.
train_set=train
dev_set=dev
test_set=test
feat_conf=features/fbank.conf
vad_conf=features/vad.conf
cmvn_conf=features/cmvn.conf
