"""Self-checks for the exercises, one module per exercise set: each says what is wrong, not just that something is.

A solution notebook imports its set's module as ``checks`` (``from course_lib.course.checks import
episodes_and_ci as checks``); a self-check cell calls one checker with the learner's function. The checker
calls it on known cases under a time limit and raises ``AssertionError`` with a message that points back to
the specification, or prints what passed. The instructor's grader (``python -m course_lib grade``) counts
the cells.

    episodes_and_ci           01  the episode sampler, the 95% confidence interval, the pixel 1-NN baseline
    linear_probe              02  the linear probe on frozen features
    maml_inner_and_outer      03  MAML's functional inner update and its meta-loss
    reptile_step              04  Reptile's outer step
    prototypes_and_distances  05  prototypes, squared Euclidean distances, ProtoNet's logits
    pooling_and_lora_step     07  mean pooling, one LoRA inner step
    in_context_sequence       08  the in-context sequences
    label_scoring             09  label scoring by log-likelihood
"""
