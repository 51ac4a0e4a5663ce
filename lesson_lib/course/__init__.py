"""Course tooling, kept out of the way of the maths: the exercise checks, figures, widgets,
the environment check, student versions, the notebook runner, the comparison of notebook
outputs (``outputs``) and the command line."""
