"""The pod readiness gate (optional): the verdict pushed into a pod condition, and transition Events."""
