"""Training here, from scratch or from a user's weights file: nothing can be downloaded.

`nets` builds Keras application networks, `loop` trains them with checkpoints, early
stopping and per-epoch progress, `teacher` computes (and the build caches) a teacher's
outputs for distillation.
"""
