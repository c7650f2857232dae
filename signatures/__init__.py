"""Domain signature families: each module ships a typed dspy.Signature, a deterministic
train/dev/test split loader, and a metric returning a score in [0,1] with textual feedback."""
