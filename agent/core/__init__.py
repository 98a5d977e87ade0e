"""The core: the vocabulary, the pure verdict, the one writer of its snapshots, and the loop that runs the checks."""
