"""course_lib: the tested training core of the open meta-learning course.

Modules, each one idea (the notebook that introduces it in brackets):
    runtime   device, seeds, profiles, mixed precision       (00_orientation)
    data      datasets, episodes, sinusoid tasks, stand-ins  (01_few_shot_problem)
    models    the 4-block conv net and the sinusoid MLP      (01, 03)
    train     the one meta-training loop                     (01)
    evaluate  mean and 95% CI over fixed held-out episodes    (01)
    plots     task grids, learning curves, CI bands          (01)
    report    headline numbers for the course report         (01)
"""
__version__ = "0.1.0"
