"""``promptship demo``: the whole path offline, narrated (see ``promptship.demo.run``)."""
