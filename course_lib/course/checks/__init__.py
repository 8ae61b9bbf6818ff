"""Self-checks for the exercises, one module per exercise set: each says what is wrong, not just that something is.

A solution notebook imports its set's module as ``checks`` (``from course_lib.course.checks import
episodes_and_ci as checks``); a self-check cell calls one checker with the learner's function. The checker
calls it on known cases under a time limit and raises ``AssertionError`` with a message that points back to
the specification (``base.PartialCredit`` when part of it is right), or prints what passed.

In the learner's notebook a checker runs in the learner's kernel, as feedback. The instructor's grader
(``python -m course_lib grade``) runs the same checker in *its own* process instead, on stand-ins for the
learner's functions (``course_lib.course.remote``): each call sends the checker's arguments to the kernel and
reads back plain data, so no object of the learner's reaches the checker and the verdict is decided where
the learner's code cannot reach. What crosses the channel, per set, and how what needs the learner's own
objects is protected:

    01  tensors, a ClassDataset and a torch.Generator go in (the generator's state comes back, so "draw
        all randomness from the generator" is checked); an Episode, tuples of floats, tensors come out.
    02  tensors go in; changes the probe makes to them in place are copied back ("the features passed in
        were changed"); the grader's global RNG state travels with each call, so seeded probes agree.
    03  the MLP and its parameter dict go in; the adapted dict and the meta-loss come out with their
        gradients left in the learner's kernel: when the checker back-propagates, the grader asks the kernel
        for the vector-Jacobian product of the learner's own graph (``channel.serve``), so a detached or
        first-order update shows as such, and a result that *is* an argument comes back as that argument
        ("returned the same dict").
    04  dicts of tensors; in-place changes come back.
    05, 08  tensors; whether a result still requires grad comes back with it.
    07  mean pooling on tensors; the LoRA step gets the network (changes to its own weights come back)
        and ``is_fast_weight`` (a library function).
    09  a tiny GPT-2 goes in, the grad mode (``torch.no_grad``) travels, one number comes out.

The per-call time limit is the grader's ``--timeout`` (``time_limit`` only acts in a kernel's main thread).
A learner can pass a check only by returning the right values for the grader's inputs, which is what the
exercise asks.

    episodes_and_ci           01  the episode sampler, the 95% confidence interval, the pixel 1-NN baseline
    linear_probe              02  the linear probe on frozen features
    maml_inner_and_outer      03  MAML's functional inner update and its meta-loss
    reptile_step              04  Reptile's outer step
    prototypes_and_distances  05  prototypes, squared Euclidean distances, ProtoNet's logits
    pooling_and_lora_step     07  mean pooling, one LoRA inner step
    in_context_sequence       08  the in-context sequences
    label_scoring             09  label scoring by log-likelihood
"""
