"""The domain: lifecycle states, transitions and gates, prompt files. Pure, no I/O."""
