"""The learner's side: the exercise files, loading a learner's function, the graders, the
references cache."""
