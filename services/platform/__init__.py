"""``tether up``: the whole platform embedded on one machine, supervised in the foreground."""
