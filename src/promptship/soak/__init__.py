"""The time-based gates: shadow soaks in staging, break-glass soaks in production, the
nightly drift watch, and the scheduler that runs each due tick once across replicas."""
