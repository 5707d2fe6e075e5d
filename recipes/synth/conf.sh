# Settings for the embedded espeak-ng corpus (sourced by run.sh).
train_set=train
dev_set=dev
test_set=test
feat_conf=features/fbank.conf
vad_conf=features/vad.conf
cmvn_conf=features/cmvn.conf
