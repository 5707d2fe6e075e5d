# Settings that differ from run.sh's defaults (sourced by run.sh).
# Training on a machine without GPU: two data-parallel processes (torchrun, gloo) of one
# thread each use both cores of a 2-core machine, 1.7x the speed of one process.
cpu_train_nproc=2
# The test conditions prepare.sh builds beside test (a set whose dir is missing is skipped).
test_sets="test test_noisy test_reverb test_tel test_human"
