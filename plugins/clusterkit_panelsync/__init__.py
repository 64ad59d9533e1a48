"""Panel sync: placeholder until step 5."""
