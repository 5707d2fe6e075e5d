# Settings for the embedded espeak-ng corpus (sourced by run.sh).
train_set=train
dev_set=dev
test_set=test
feat_conf=features/fbank.conf
vad_conf=features/vad.conf
cmvn_conf=features/cmvn.conf
# Training on a machine without GPU: two data-parallel processes (torchrun, gloo) of one
# thread each use both cores of a 2-core machine, 1.7x the speed of one process.
cpu_train_nproc=2
