"""The training stage's parts: settings (:mod:`.config`), processes (:mod:`.distributed`),
checkpoints (:mod:`.checkpoint`), on-the-fly augmentation (:mod:`.spec_augment`), optimizer
and schedule (:mod:`.optim`), epochs and their outputs (:mod:`.loop`) and the run from data
dirs to an experiment dir (:mod:`.stage`). :mod:`lre.train` is the stage's entry point.
"""
