# Settings that differ from run.sh's defaults (sourced by run.sh).
# Training on a machine without GPU: two data-parallel processes (torchrun, gloo) of one
# thread each use both cores of a 2-core machine, 1.7x the speed of one process.
cpu_train_nproc=2
