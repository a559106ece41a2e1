"""collabfeat vision."""
