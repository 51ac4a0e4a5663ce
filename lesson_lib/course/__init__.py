"""Course tooling, kept out of the way of the maths: the exercise checks, figures, widgets,
the environment check, student versions, the notebook runner and the command line."""
